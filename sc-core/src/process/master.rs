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
//! - Every child heartbeats on the control channel; one silent for `heartbeat_timeout` (stopped,
//!   or its runtime stuck) is SIGKILLed, said so in the log, and respawned like a crash.
//! - SIGTERM/SIGINT: workers and balancers (sockets closed with 1001, through the balancers
//!   too), then brokers get SIGTERM and exit on their own within `shutdown_timeout`; one still
//!   there a second later is
//!   SIGKILLed, loudly (a bug, not the plan). SIGUSR2: workers, then balancers, are replaced one
//!   at a time (rolling restart), each new one serving before the old one is asked to leave.
//! - A child whose master dies sees its stdin close and shuts down: no orphans.
//! - The run directory and its sockets are this user's only (0700/0600), and every broker and
//!   control connection must come from this user with the run's secret (`SC_RUN_SECRET`).
//!
//! The children's side of it is in the module above ([`super::child_shutdown_signal`], the
//! control channel's reports).

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::control::{heartbeat_every, serve_control, Control};
use super::output::{flush, pump, say};
use super::role::{Role, RunDir, CLUSTER_SECRET, RUN_SECRET};
use crate::config::Config;
use crate::server::StartupError as Error;

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
    /// When the current process started: its heartbeat deadline counts from here until its
    /// first heartbeat arrives.
    started: std::time::Instant,
    /// The pid already killed for missing heartbeats (not killed and logged twice).
    killed_hung: Option<u32>,
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

struct Master {
    /// The auth secret every worker uses unless the app configures a key (`SC_CLUSTER_SECRET`).
    secret: String,
    /// What children show on the broker and control sockets (`SC_RUN_SECRET`).
    run_secret: Arc<str>,
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
    /// The last heartbeat check, and since when heartbeats count: after a gap in the checks
    /// (the master was stopped, say with Ctrl-Z, or its machine suspended) every child gets a
    /// fresh deadline, as their silence was the master's own.
    last_check: std::time::Instant,
    heartbeats_since: std::time::Instant,
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

/// Runs the master until SIGTERM/SIGINT. `public` is the listening socket (bound by the caller
/// or inherited).
pub(crate) fn run(config: Config, public: std::net::TcpListener) -> Result<(), Error> {
    let exe = original_exe()?;
    let secret: [u8; 32] = rand::random();
    let secret = hex_encode(&secret);
    let run_secret: Arc<str> = hex_encode(&rand::random::<[u8; 32]>()).into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let run_dir = RunDir::create()?;
        let (tx, mut events) = mpsc::unbounded_channel();
        let brokers = config.effective_brokers();
        let mut sockets = HashMap::new();
        for id in 0..brokers {
            let l = RunDir::bind(&run_dir.broker_socket(id), config.listen_backlog)?;
            sockets.insert(Role::Broker(id), Arc::new(Owned::Unix(l)));
        }
        if config.balancers > 0 {
            for id in 0..config.workers {
                let l = RunDir::bind(&run_dir.worker_socket(id), config.listen_backlog)?;
                sockets.insert(Role::Worker(id), Arc::new(Owned::Unix(l)));
            }
        }
        let addr = public.local_addr()?;
        let control = Arc::new(std::sync::Mutex::new(Control::default()));
        let control_listener = RunDir::bind(&run_dir.control_socket(), config.listen_backlog)?;
        control_listener.set_nonblocking(true)?;
        let control_listener = tokio::net::UnixListener::from_std(control_listener)?;
        tokio::spawn(serve_control(
            control_listener,
            control.clone(),
            run_secret.clone(),
        ));
        let mut master = Master {
            secret,
            run_secret,
            control,
            exe,
            args: std::env::args_os().skip(1).collect(),
            run_dir,
            public: Arc::new(Owned::Tcp(public)),
            sockets,
            slots: HashMap::new(),
            events: tx,
            shutting_down: false,
            last_check: std::time::Instant::now(),
            heartbeats_since: std::time::Instant::now(),
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
        let mut check = tokio::time::interval(heartbeat_every(master.config.heartbeat_timeout));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr2.recv() => master.rolling_restart(&mut events).await,
                Some(event) = events.recv() => master.handle(event),
                _ = check.tick() => master.kill_hung(),
            }
        }
        master.shutdown(&mut events).await;
        let _ = std::fs::remove_dir_all(&master.run_dir.0);
        flush();
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
            .env(RUN_SECRET, &*self.run_secret)
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
        let max = self.config.log_line_max;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, role, false, max));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, role, true, max));
        }
        let slot = self.slots.entry(role).or_insert_with(|| Slot {
            pid: None,
            generation: 0,
            crashes: VecDeque::new(),
            started: std::time::Instant::now(),
            killed_hung: None,
        });
        slot.generation += 1;
        slot.pid = pid;
        slot.started = std::time::Instant::now();
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

    /// Replaces each worker, then each balancer, in turn: the new one starts serving (same
    /// sockets) before the old one is asked to leave, so capacity never drops to zero.
    async fn rolling_restart(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        say(format_args!(
            "SIGUSR2: rolling restart of the workers and balancers"
        ));
        let roles = (0..self.config.workers)
            .map(Role::Worker)
            .chain((0..self.config.balancers).map(Role::Balancer));
        for role in roles {
            let old = self.slots.get(&role).and_then(|s| s.pid);
            if let Err(e) = self.spawn(role) {
                say(format_args!("could not start a new {role}: {e}"));
                continue;
            }
            if let Some(pid) = old {
                self.stop(&[pid], events).await;
            }
        }
        say(format_args!("rolling restart done"));
    }

    /// SIGTERMs `pids` and waits for them to exit (handling events meanwhile); children exit
    /// within `shutdown_timeout`, so one still alive a second after that is SIGKILLed, loudly.
    async fn stop(&mut self, pids: &[u32], events: &mut mpsc::UnboundedReceiver<Event>) {
        for pid in pids {
            terminate(*pid);
        }
        let deadline = Instant::now() + self.config.shutdown_timeout + Duration::from_secs(1);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            tokio::select! {
                Some(event) = events.recv() => self.handle(event),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        for pid in pids.iter().filter(|p| alive(**p)) {
            say(format_args!("pid {pid} did not exit in time: SIGKILL"));
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }

    /// SIGKILLs every child whose last heartbeat (or start) is older than `heartbeat_timeout`;
    /// its exit then goes through [`Self::on_exit`] like any crash (respawn, restart count).
    fn kill_hung(&mut self) {
        let timeout = self.config.heartbeat_timeout;
        if timeout.is_zero() || self.shutting_down {
            return;
        }
        let Ok(mut control) = self.control.lock() else {
            return;
        };
        // Forget processes that are no longer current (exited, or replaced by a restart).
        let current: Vec<u32> = self.slots.values().filter_map(|s| s.pid).collect();
        control.heartbeats.retain(|pid, _| current.contains(pid));
        let now = std::time::Instant::now();
        if now.duration_since(self.last_check)
            > 2 * heartbeat_every(timeout) + Duration::from_secs(1)
        {
            self.heartbeats_since = now;
        }
        self.last_check = now;
        for (role, slot) in &mut self.slots {
            let Some(pid) = slot.pid else { continue };
            if slot.killed_hung == Some(pid) {
                continue;
            }
            let last = control
                .heartbeats
                .get(&pid)
                .map_or(slot.started, |t| (*t).max(slot.started))
                .max(self.heartbeats_since);
            let silent = now.duration_since(last);
            if silent < timeout {
                continue;
            }
            let then = if matches!(role, Role::Worker(_)) && !self.config.reboot_worker_on_crash {
                ""
            } else {
                " and restarting"
            };
            say(format_args!(
                "{role} (pid {pid}) sent no heartbeat for {:.1} s: killing it (SIGKILL){then}",
                silent.as_secs_f64()
            ));
            slot.killed_hung = Some(pid);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
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
        // Workers and balancers together: the workers close their sockets with 1001, which
        // reaches clients behind balancers too, as a stopping balancer stops accepting (no new
        // connection is routed to a stopping worker) but relays what it has until it ends.
        // Brokers last, so in-flight publishes still have somewhere to go.
        let front: &[Stage] = &[Stage::Workers, Stage::Balancers];
        for stages in [front, &[Stage::Brokers]] {
            let pids: Vec<u32> = self
                .slots
                .iter()
                .filter(|(r, _)| stages.iter().any(|stage| stage.includes(**r)))
                .filter_map(|(_, s)| s.pid)
                .collect();
            self.stop(&pids, events).await;
            if stages == front {
                // The workers' Unix sockets go with them: a connection a balancer relays to
                // one meanwhile is refused at once instead of waiting in a backlog nobody reads.
                self.sockets
                    .retain(|role, _| !matches!(role, Role::Worker(_)));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
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
