//! What this process is ([`Role`], read from the environment once, at startup), where its
//! cluster's Unix sockets live ([`RunDir`]: a directory only its user can enter, sockets only
//! its user can open) and the per-run secret a child proves itself with ([`RUN_SECRET`]).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

    /// A fresh directory in `$TMPDIR`, mode 0700 whatever the umask. One that already exists
    /// (someone guessed the name) is used only if it is a real directory of this user; it is
    /// then set to 0700 too.
    pub(super) fn create() -> std::io::Result<Self> {
        Self::create_in(&std::env::temp_dir())
    }

    pub(super) fn create_in(parent: &Path) -> std::io::Result<Self> {
        Self::claim(parent.join(format!(
            "sc-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        )))
    }

    fn claim(dir: PathBuf) -> std::io::Result<Self> {
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&dir)?;
                let own = nix::unistd::getuid().as_raw();
                if !meta.is_dir() || meta.uid() != own {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "run directory {} already exists and is not a directory of this user (uid {own}); refusing to use it",
                            dir.display()
                        ),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
        // The umask may have taken bits away, never added any; this makes it exactly 0700.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self(dir))
    }

    /// Binds a Unix socket in the run directory, readable and writable by this user only
    /// (0600, whatever the umask: the directory's mode already keeps others out, this too), with
    /// `backlog` (a worker behind balancers takes a burst of relayed connections on it).
    pub(super) fn bind(
        path: &Path,
        backlog: u32,
    ) -> std::io::Result<std::os::unix::net::UnixListener> {
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        crate::backlog::listen(&listener, backlog)?;
        Ok(listener)
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

/// The per-run secret a child sends first on the broker and control sockets (not the auth
/// secret: a worker's app may configure its own key, and a broker needs no auth key).
pub(crate) const RUN_SECRET: &str = "SC_RUN_SECRET";

/// In a cluster child: this run's secret (empty outside a cluster).
pub(crate) fn run_secret() -> String {
    std::env::var(RUN_SECRET).unwrap_or_default()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_dir_is_0700_and_its_sockets_0600() {
        let parent = std::env::temp_dir();
        let dir = RunDir::create_in(&parent).expect("run dir");
        let mode = std::fs::metadata(&dir.0)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        let path = dir.broker_socket(0);
        let _listener = RunDir::bind(&path, 64).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        std::fs::remove_dir_all(&dir.0).expect("clean up");
    }

    #[test]
    fn a_run_dir_squatted_by_something_else_is_refused() {
        let parent = RunDir::create_in(&std::env::temp_dir()).expect("parent");
        let file = parent.0.join("a-file");
        std::fs::write(&file, b"not a directory").expect("squat");
        let err = RunDir::claim(file).expect_err("a file is refused");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        let link = parent.0.join("a-link");
        std::os::unix::fs::symlink(&parent.0, &link).expect("symlink");
        assert!(RunDir::claim(link).is_err(), "a symlink is refused");
        // Another user's directory (only root can make one here; others skip this part).
        let theirs = parent.0.join("theirs");
        std::fs::create_dir(&theirs).expect("dir");
        if std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_ok() {
            let err = RunDir::claim(theirs).expect_err("another user's directory is refused");
            assert!(
                err.to_string().contains("not a directory of this user"),
                "{err}"
            );
        }
        // A directory of this user, left with a loose mode, is taken back to 0700.
        let own = parent.0.join("own");
        std::fs::create_dir(&own).expect("dir");
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let dir = RunDir::claim(own).expect("own directory");
        let mode = std::fs::metadata(&dir.0)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        std::fs::remove_dir_all(&parent.0).expect("clean up");
    }
}
