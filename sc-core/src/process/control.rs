//! The control channel between a cluster's children and its master (a Unix socket in the run
//! directory, one JSON line per message): every child heartbeats (workers with their counters)
//! so the master can tell a hung one, and a worker asks for the whole cluster's Prometheus text
//! for `/metrics`. Only the master's own user may connect, and every connection starts with the
//! run's secret; anything else is closed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::role::{Role, RunDir};
use crate::broker::server::{same_secret, same_user};
use crate::metrics::{render, Snapshot};

/// What the master knows of its children: their counters, for `/metrics`, and when each process
/// (by pid) last showed a sign of life.
#[derive(Default)]
pub(super) struct Control {
    pub(super) processes: BTreeMap<(String, usize), Snapshot>,
    pub(super) restarts: BTreeMap<String, u64>,
    pub(super) heartbeats: HashMap<u32, Instant>,
}

/// The longest control line: a report is a few hundred bytes; a peer sending more is dropped
/// instead of growing the master's memory.
const MAX_LINE: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ControlMessage {
    /// The first message of every connection: the run's secret (`SC_RUN_SECRET`).
    Hello { secret: String },
    /// A worker's counters, which are also its heartbeat.
    Report {
        role: String,
        id: usize,
        #[serde(default)]
        pid: u32,
        snapshot: Snapshot,
    },
    /// A broker's or balancer's sign of life.
    Heartbeat { pid: u32 },
    /// A worker asks for the cluster's Prometheus text (the answer is the rest of the stream).
    Metrics,
}

/// Accepts control connections until the master ends. An accept error (out of file
/// descriptors, say) is logged and retried after a pause: ending the loop would leave every
/// child unable to report and so, with heartbeats on, killed as hung.
pub(super) async fn serve_control(
    listener: tokio::net::UnixListener,
    control: Arc<std::sync::Mutex<Control>>,
    secret: Arc<str>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !same_user(&stream) {
            continue;
        }
        tokio::spawn(connection(stream, control.clone(), secret.clone()));
    }
}

/// How long a new control connection has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

async fn connection(
    stream: tokio::net::UnixStream,
    control: Arc<std::sync::Mutex<Control>>,
    secret: Arc<str>,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut first = true;
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut read).take(MAX_LINE);
        let read_line = limited.read_until(b'\n', &mut line);
        // The hello has a deadline: a peer that connects and says nothing holds no task.
        let read_line = if first {
            match tokio::time::timeout(HELLO_TIMEOUT, read_line).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("a control connection sent no hello in time; dropping it");
                    return;
                }
            }
        } else {
            read_line.await
        };
        match read_line {
            Ok(0) | Err(_) => return,
            Ok(_) if line.last() != Some(&b'\n') => {
                tracing::warn!("control line too long or cut; dropping the connection");
                return;
            }
            Ok(_) => {}
        }
        let message = serde_json::from_slice::<ControlMessage>(&line);
        if first {
            first = false;
            match message {
                Ok(ControlMessage::Hello { secret: theirs })
                    if same_secret(theirs.as_bytes(), secret.as_bytes()) => {}
                _ => {
                    tracing::warn!("a control connection lacks this run's secret; dropping it");
                    return;
                }
            }
            continue;
        }
        match message {
            Ok(ControlMessage::Report {
                role,
                id,
                pid,
                snapshot,
            }) => {
                if let Ok(mut c) = control.lock() {
                    c.processes.insert((role, id), snapshot);
                    c.heartbeats.insert(pid, Instant::now());
                }
            }
            Ok(ControlMessage::Heartbeat { pid }) => {
                if let Ok(mut c) = control.lock() {
                    c.heartbeats.insert(pid, Instant::now());
                }
            }
            Ok(ControlMessage::Metrics) => {
                let text = match control.lock() {
                    Ok(c) => render(&c.processes, &c.restarts),
                    Err(_) => String::new(),
                };
                let _ = write.write_all(text.as_bytes()).await;
                let _ = write.shutdown().await;
                return;
            }
            Ok(ControlMessage::Hello { .. }) => {}
            Err(e) => {
                tracing::debug!(error = %e, "bad control message");
                return;
            }
        }
    }
}

/// How often a child heartbeats: four times per `heartbeat_timeout`, at most every second (the
/// counters' resolution), at least every 100 ms.
pub(super) fn heartbeat_every(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        return Duration::from_secs(1);
    }
    (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn line(msg: &ControlMessage) -> Option<Vec<u8>> {
    let mut line = serde_json::to_vec(msg).ok()?;
    line.push(b'\n');
    Some(line)
}

async fn connect(dir: &RunDir, secret: &str) -> Option<tokio::net::UnixStream> {
    let mut stream = tokio::net::UnixStream::connect(dir.control_socket())
        .await
        .ok()?;
    let hello = line(&ControlMessage::Hello {
        secret: secret.to_owned(),
    })?;
    stream.write_all(&hello).await.ok()?;
    Some(stream)
}

/// In a child: heartbeats to the master every `every` (a worker's heartbeat carries its
/// counters, `snapshot`), reconnecting if the connection drops (the master keeps the last
/// report of each process).
pub(crate) async fn report_to_master(
    role: Role,
    dir: RunDir,
    secret: Arc<str>,
    every: Duration,
    snapshot: impl Fn() -> Option<Snapshot>,
) {
    let pid = std::process::id();
    loop {
        if let Some(mut stream) = connect(&dir, &secret).await {
            loop {
                let msg = match snapshot() {
                    Some(snapshot) => ControlMessage::Report {
                        role: role.name().to_string(),
                        id: role.id(),
                        pid,
                        snapshot,
                    },
                    None => ControlMessage::Heartbeat { pid },
                };
                let Some(line) = line(&msg) else {
                    return;
                };
                if stream.write_all(&line).await.is_err() {
                    break;
                }
                tokio::time::sleep(every).await;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// In a worker: the cluster-wide Prometheus text from the master, if this is a cluster child.
pub(crate) async fn cluster_metrics(dir: RunDir, secret: Arc<str>) -> Option<String> {
    let mut stream = connect(&dir, &secret).await?;
    stream
        .write_all(&line(&ControlMessage::Metrics)?)
        .await
        .ok()?;
    let mut text = String::new();
    let read = tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text);
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()?
        .ok()?;
    Some(text)
}
