//! What this process is ([`Role`], read from the environment once, at startup) and where its
//! cluster's Unix sockets live ([`RunDir`]).

use std::path::PathBuf;

/// What this process is, from `SC_ROLE` / `SC_CHILD_ID` (set by the master for its children).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Role {
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
    /// The role of this process, from the environment the master set. Read once by
    /// [`run`](super::run); everything after gets the value.
    pub(crate) fn from_env() -> Self {
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

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Worker(_) => "worker",
            Self::Broker(_) => "broker",
            Self::Balancer(_) => "balancer",
        }
    }

    pub(crate) fn id(self) -> usize {
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
pub(crate) struct RunDir(pub(super) PathBuf);

impl RunDir {
    /// The run directory of this process's cluster, if it is a child.
    pub fn from_env() -> Option<Self> {
        std::env::var_os("SC_RUN_DIR").map(|p| Self(PathBuf::from(p)))
    }

    pub(super) fn create() -> std::io::Result<Self> {
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

pub(crate) const CLUSTER_SECRET: &str = "SC_CLUSTER_SECRET";

/// In a cluster child: the auth secret the master chose for all workers.
pub(crate) fn cluster_secret(role: Role) -> Option<crate::auth::AuthKey> {
    if role == Role::Master {
        return None;
    }
    std::env::var(CLUSTER_SECRET)
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| crate::auth::AuthKey::Secret(s.into_bytes()))
}
