//! The process model: a master that supervises broker, worker and balancer processes, all of them
//! the user's own binary started again with a role in the environment (Node's `cluster.fork`, the
//! Unix way).
//!
//! - The master owns every listening socket (the public TCP port, the brokers' and, behind
//!   balancers, the workers' Unix sockets) and hands each child its socket as fd 3 (the systemd
//!   `LISTEN_FDS` protocol), so a restarting child never makes the kernel refuse a connection.
//! - A child that exits is respawned with backoff (workers only if `reboot_worker_on_crash`); a
//!   crash loop is reported loudly. Every line a child prints reaches the master's output tagged
//!   with its role and id, panics included.
//! - SIGTERM/SIGINT: children get SIGTERM (they close sockets with 1001), stragglers SIGKILL after
//!   `shutdown_timeout`. SIGUSR2: workers are replaced one at a time (rolling restart).
//! - A child whose master dies sees its stdin close and shuts down: no orphans.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::config::Config;
use crate::metrics::{render, Snapshot};
use crate::server::Error;

/// What this process is, from `SC_ROLE` / `SC_CHILD_ID` (set by the master for its children).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Started by the user: a single-process server, or the master of a cluster.
    Master,
    /// A worker: WebSocket sessions and handlers.
    Worker(usize),
    /// A broker: pub/sub and the key-value store shared by the workers.
    Broker(usize),
    /// A balancer: accepts connections (and terminates TLS) in front of the workers.
    Balancer(usize),
}

impl Role {
    /// The role of this process.
    pub fn current() -> Self {
        let id = std::env::var("SC_CHILD_ID")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match std::env::var("SC_ROLE").as_deref() {
            Ok("worker") => Self::Worker(id),
            Ok("broker") => Self::Broker(id),
            Ok("balancer") => Self::Balancer(id),
            _ => Self::Master,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Worker(_) => "worker",
            Self::Broker(_) => "broker",
            Self::Balancer(_) => "balancer",
        }
    }

    fn id(self) -> usize {
        match self {
            Self::Master => 0,
            Self::Worker(i) | Self::Broker(i) | Self::Balancer(i) => i,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Master => f.write_str("master"),
            _ => write!(f, "{}#{}", self.name(), self.id()),
        }
    }
}

/// Where a cluster's Unix sockets live (`SC_RUN_DIR`, a fresh directory per master).
#[derive(Clone, Debug)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// The run directory of this process's cluster, if it is a child.
    pub fn from_env() -> Option<Self> {
        std::env::var_os("SC_RUN_DIR").map(|p| Self(PathBuf::from(p)))
    }

    fn create() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "sc-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The Unix socket of broker `id`.
    pub fn broker_socket(&self, id: usize) -> PathBuf {
        self.0.join(format!("broker-{id}.sock"))
    }

    /// The Unix socket of worker `id` (used behind balancers).
    pub fn worker_socket(&self, id: usize) -> PathBuf {
        self.0.join(format!("worker-{id}.sock"))
    }

    /// The master's control socket (metrics reports and queries).
    pub fn control_socket(&self) -> PathBuf {
        self.0.join("master.sock")
    }

    /// Every broker socket of a cluster with `n` brokers, in id order.
    pub fn broker_sockets(&self, n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| self.broker_socket(i)).collect()
    }
}

/// A socket the master keeps open and lends to children.
enum Owned {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Owned {
    fn dup(&self) -> std::io::Result<OwnedFd> {
        Ok(match self {
            Self::Tcp(l) => OwnedFd::from(l.try_clone()?),
            Self::Unix(l) => OwnedFd::from(l.try_clone()?),
        })
    }
}

struct Slot {
    pid: Option<u32>,
    generation: u64,
    crashes: VecDeque<Instant>,
}

/// What the supervisor loop reacts to besides signals.
enum Event {
    /// A child process exited.
    Exited {
        role: Role,
        generation: u64,
        status: std::io::Result<ExitStatus>,
    },
    /// A crashed child's backoff delay is over.
    Respawn { role: Role, generation: u64 },
}

/// What the master knows of its children's counters, for `/metrics`.
#[derive(Default)]
struct Control {
    processes: BTreeMap<(String, usize), Snapshot>,
    restarts: BTreeMap<String, u64>,
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

struct Master {
    /// The auth secret every worker uses unless the app configures a key (`SC_CLUSTER_SECRET`).
    secret: String,
    control: Arc<std::sync::Mutex<Control>>,
    config: Config,
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    run_dir: RunDir,
    public: Arc<Owned>,
    sockets: HashMap<Role, Arc<Owned>>,
    slots: HashMap<Role, Slot>,
    events: mpsc::UnboundedSender<Event>,
    shutting_down: bool,
}

const CLUSTER_SECRET: &str = "SC_CLUSTER_SECRET";

/// In a cluster child: the auth secret the master chose for all workers.
pub(crate) fn cluster_secret() -> Option<crate::auth::AuthKey> {
    if Role::current() == Role::Master {
        return None;
    }
    std::env::var(CLUSTER_SECRET)
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| crate::auth::AuthKey::Secret(s.into_bytes()))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path the user started the binary by (argv[0], made absolute), not `/proc/self/exe`:
/// after a rebuild replaces the file, respawned children run the new build, as `sc dev` wants.
fn original_exe() -> std::io::Result<PathBuf> {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    match argv0 {
        Some(p) if p.components().count() > 1 => {
            if p.is_absolute() {
                Ok(p)
            } else {
                Ok(std::env::current_dir()?.join(p))
            }
        }
        // Started through $PATH (or argv[0] is unusable): the resolved executable.
        _ => std::env::current_exe(),
    }
}

/// Window and count after which repeated crashes are reported as a crash loop.
const CRASH_WINDOW: Duration = Duration::from_secs(30);
const CRASH_LOOP: usize = 5;

fn say(message: std::fmt::Arguments<'_>) {
    eprintln!("[sc master] {message}");
}

/// Runs the master until SIGTERM/SIGINT. `public` is the listening socket (bound by the caller
/// or inherited).
pub(crate) fn run(config: Config, public: std::net::TcpListener) -> Result<(), Error> {
    let exe = original_exe()?;
    let secret: [u8; 32] = rand::random();
    let secret = hex_encode(&secret);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let run_dir = RunDir::create()?;
        let (tx, mut events) = mpsc::unbounded_channel();
        let brokers = config.effective_brokers();
        let mut sockets = HashMap::new();
        for id in 0..brokers {
            let l = std::os::unix::net::UnixListener::bind(run_dir.broker_socket(id))?;
            sockets.insert(Role::Broker(id), Arc::new(Owned::Unix(l)));
        }
        if config.balancers > 0 {
            for id in 0..config.workers {
                let l = std::os::unix::net::UnixListener::bind(run_dir.worker_socket(id))?;
                sockets.insert(Role::Worker(id), Arc::new(Owned::Unix(l)));
            }
        }
        let addr = public.local_addr()?;
        let control = Arc::new(std::sync::Mutex::new(Control::default()));
        let control_listener = tokio::net::UnixListener::bind(run_dir.control_socket())?;
        tokio::spawn(serve_control(control_listener, control.clone()));
        let mut master = Master {
            secret,
            control,
            exe,
            args: std::env::args_os().skip(1).collect(),
            run_dir,
            public: Arc::new(Owned::Tcp(public)),
            sockets,
            slots: HashMap::new(),
            events: tx,
            shutting_down: false,
            config,
        };
        say(format_args!(
            "listening on {addr}: {} worker(s), {} broker(s), {} balancer(s)",
            master.config.workers, brokers, master.config.balancers
        ));
        let mut roles: Vec<Role> = (0..brokers).map(Role::Broker).collect();
        roles.extend((0..master.config.workers).map(Role::Worker));
        roles.extend((0..master.config.balancers).map(Role::Balancer));
        for role in roles {
            master.spawn(role)?;
        }

        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr2.recv() => master.rolling_restart(&mut events).await,
                Some(event) = events.recv() => master.handle(event),
            }
        }
        master.shutdown(&mut events).await;
        let _ = std::fs::remove_dir_all(&master.run_dir.0);
        Ok(())
    })
}

impl Master {
    fn spawn(&mut self, role: Role) -> Result<(), Error> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(&self.args)
            .env("SC_ROLE", role.name())
            .env("SC_CHILD_ID", role.id().to_string())
            .env("SC_RUN_DIR", &self.run_dir.0)
            .env("SC_BROKERS", self.config.effective_brokers().to_string())
            .env("SC_WORKERS", self.config.workers.to_string())
            .env("SC_BALANCERS", self.config.balancers.to_string())
            .env(CLUSTER_SECRET, &self.secret)
            .env_remove("LISTEN_PID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let lent = match role {
            Role::Broker(_) => self.sockets.get(&role).cloned(),
            Role::Worker(_) if self.config.balancers > 0 => self.sockets.get(&role).cloned(),
            Role::Worker(_) | Role::Balancer(_) => Some(self.public.clone()),
            Role::Master => None,
        };
        match lent {
            Some(socket) => {
                cmd.env("LISTEN_FDS", "1");
                cmd.fd_mappings(vec![FdMapping {
                    parent_fd: socket.dup()?,
                    child_fd: 3,
                }])
                .map_err(|e| Error::Io(std::io::Error::other(e)))?;
            }
            None => {
                cmd.env_remove("LISTEN_FDS");
            }
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, role, false));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, role, true));
        }
        let slot = self.slots.entry(role).or_insert_with(|| Slot {
            pid: None,
            generation: 0,
            crashes: VecDeque::new(),
        });
        slot.generation += 1;
        slot.pid = pid;
        let generation = slot.generation;
        let events = self.events.clone();
        // The child's stdin stays open as long as this task holds it: when the master dies, the
        // pipe closes and the child shuts itself down.
        let stdin = child.stdin.take();
        tokio::spawn(async move {
            let status = child.wait().await;
            drop(stdin);
            let _ = events.send(Event::Exited {
                role,
                generation,
                status,
            });
        });
        say(format_args!("started {role} (pid {})", pid.unwrap_or(0)));
        Ok(())
    }

    fn on_exit(&mut self, role: Role, generation: u64, status: std::io::Result<ExitStatus>) {
        let Some(slot) = self.slots.get_mut(&role) else {
            return;
        };
        if generation != slot.generation {
            // A process replaced by a rolling restart: expected.
            return;
        }
        slot.pid = None;
        let how = match &status {
            Ok(s) => describe(s),
            Err(e) => format!("unknown status ({e})"),
        };
        if self.shutting_down {
            return;
        }
        if matches!(role, Role::Worker(_)) && !self.config.reboot_worker_on_crash {
            say(format_args!(
                "{role} exited: {how}; not restarted (reboot_worker_on_crash is off)"
            ));
            return;
        }
        let now = Instant::now();
        slot.crashes.push_back(now);
        while slot
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            slot.crashes.pop_front();
        }
        let n = slot.crashes.len();
        if let Ok(mut c) = self.control.lock() {
            *c.restarts.entry(role.name().to_string()).or_default() += 1;
        }
        let delay = Duration::from_millis(100u64 << (n.saturating_sub(1)).min(6))
            .min(Duration::from_secs(5));
        if n >= CRASH_LOOP {
            say(format_args!(
                "CRASH LOOP: {role} exited {n} times within {} s (last: {how}); restarting in {} ms",
                CRASH_WINDOW.as_secs(),
                delay.as_millis()
            ));
        } else {
            say(format_args!(
                "{role} exited: {how}; restarting in {} ms",
                delay.as_millis()
            ));
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Respawn { role, generation });
        });
    }

    /// Replaces each worker in turn: the new one starts serving (same sockets) before the old
    /// one is asked to leave, so capacity never drops to zero.
    async fn rolling_restart(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        say(format_args!("SIGUSR2: rolling restart of the workers"));
        for id in 0..self.config.workers {
            let role = Role::Worker(id);
            let old = self.slots.get(&role).and_then(|s| s.pid);
            if let Err(e) = self.spawn(role) {
                say(format_args!("could not start a new {role}: {e}"));
                continue;
            }
            if let Some(pid) = old {
                terminate(pid);
                let deadline =
                    Instant::now() + self.config.shutdown_timeout + Duration::from_secs(1);
                while alive(pid) && Instant::now() < deadline {
                    tokio::select! {
                        Some(event) = events.recv() => self.handle(event),
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
                if alive(pid) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
        say(format_args!("rolling restart done"));
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Exited {
                role,
                generation,
                status,
            } => self.on_exit(role, generation, status),
            Event::Respawn { role, generation } => {
                let current = self.slots.get(&role).map(|s| s.generation);
                if current == Some(generation) && !self.shutting_down {
                    if let Err(e) = self.spawn(role) {
                        say(format_args!("could not restart {role}: {e}"));
                    }
                }
            }
        }
    }

    async fn shutdown(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        self.shutting_down = true;
        say(format_args!("shutting down"));
        // Front doors first, brokers last, so in-flight publishes still have somewhere to go.
        for stage in [Stage::Balancers, Stage::Workers, Stage::Brokers] {
            let pids: Vec<u32> = self
                .slots
                .iter()
                .filter(|(r, _)| stage.includes(**r))
                .filter_map(|(_, s)| s.pid)
                .collect();
            for pid in &pids {
                terminate(*pid);
            }
            let deadline = Instant::now() + self.config.shutdown_timeout + Duration::from_secs(1);
            while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
                tokio::select! {
                    Some(_) = events.recv() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            for pid in pids.iter().filter(|p| alive(**p)) {
                say(format_args!("pid {pid} did not exit in time: SIGKILL"));
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Stage {
    Balancers,
    Workers,
    Brokers,
}

impl Stage {
    fn includes(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Self::Balancers, Role::Balancer(_))
                | (Self::Workers, Role::Worker(_))
                | (Self::Brokers, Role::Broker(_))
        )
    }
}

fn terminate(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; a reaped child is gone. (Zombies are reaped by the waiter task.)
    kill(Pid::from_raw(pid as i32), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "unknown status".into(),
    }
}

/// Copies a child's output line by line to the master's, tagged `[worker#1]`.
async fn pump(stream: impl AsyncRead + Unpin, role: Role, stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if stderr {
            eprintln!("[{role}] {line}");
        } else {
            println!("[{role}] {line}");
        }
    }
}

/// In a child: completes when the master is gone (stdin closed) or SIGTERM/SIGINT arrives.
pub(crate) async fn child_shutdown_signal() {
    let master_gone = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = master_gone => {}
        _ = crate::server::shutdown_signal() => {}
    }
}

/// Takes the listening socket handed over by a supervisor (`LISTEN_FDS`, fd 3), if any.
pub(crate) fn inherited_listener() -> std::io::Result<Option<Inherited>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if let Ok(Some(l)) = fds.take_tcp_listener(0) {
        return Ok(Some(Inherited::Tcp(l)));
    }
    match fds.take_unix_listener(0)? {
        Some(l) => Ok(Some(Inherited::Unix(l))),
        None => Ok(None),
    }
}

/// A listening socket from the supervisor.
pub(crate) enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

async fn serve_control(
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
pub(crate) async fn report_to_master(role: Role, snapshot: impl Fn() -> Snapshot) {
    let Some(dir) = RunDir::from_env() else {
        return;
    };
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
pub(crate) async fn cluster_metrics() -> Option<String> {
    let dir = RunDir::from_env()?;
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
