//! The control channel between a cluster's children and its master (a Unix socket in the run
//! directory, one JSON line per message): children report their counters every second, and a
//! worker asks for the whole cluster's Prometheus text for `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::role::{Role, RunDir};
use crate::metrics::{render, Snapshot};

/// What the master knows of its children's counters, for `/metrics`.
#[derive(Default)]
pub(super) struct Control {
    pub(super) processes: BTreeMap<(String, usize), Snapshot>,
    pub(super) restarts: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ControlMessage {
    /// A child's counters (sent every second on a kept-open connection).
    Report {
        role: String,
        id: usize,
        snapshot: Snapshot,
    },
    /// A worker asks for the cluster's Prometheus text (the answer is the rest of the stream).
    Metrics,
}

pub(super) async fn serve_control(
    listener: tokio::net::UnixListener,
    control: Arc<std::sync::Mutex<Control>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let control = control.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ControlMessage>(&line) {
                    Ok(ControlMessage::Report { role, id, snapshot }) => {
                        if let Ok(mut c) = control.lock() {
                            c.processes.insert((role, id), snapshot);
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
                    Err(e) => {
                        tracing::debug!(error = %e, "bad control message");
                        return;
                    }
                }
            }
        });
    }
}

/// In a child: reports this process's counters to the master every second, reconnecting if the
/// connection drops (the master keeps the last report of each process).
pub(crate) async fn report_to_master(role: Role, dir: RunDir, snapshot: impl Fn() -> Snapshot) {
    loop {
        if let Ok(mut stream) = tokio::net::UnixStream::connect(dir.control_socket()).await {
            loop {
                let msg = ControlMessage::Report {
                    role: role.name().to_string(),
                    id: role.id(),
                    snapshot: snapshot(),
                };
                let Ok(mut line) = serde_json::to_string(&msg) else {
                    return;
                };
                line.push('\n');
                if stream.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// In a worker: the cluster-wide Prometheus text from the master, if this is a cluster child.
pub(crate) async fn cluster_metrics(dir: RunDir) -> Option<String> {
    let mut stream = tokio::net::UnixStream::connect(dir.control_socket())
        .await
        .ok()?;
    let mut line = serde_json::to_string(&ControlMessage::Metrics).ok()?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await.ok()?;
    let mut text = String::new();
    let read = tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text);
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()?
        .ok()?;
    Some(text)
}
