//! The listen backlog: how many connections the kernel queues for a listening socket before the
//! server accepts them (`listen_backlog`, `SC_LISTEN_BACKLOG`). Every listener sc owns or is handed
//! gets it: the public port (its own, the master's, or one a supervisor hands over), the admin
//! port, the run directory's Unix sockets (workers behind balancers, brokers, the control socket).
//!
//! A queue too short for a burst (every client reconnecting after a restart) makes the kernel
//! drop SYNs (`ListenOverflows` in `nstat`); those clients wait a full second for the
//! retransmit. Linux caps the value at `net.core.somaxconn`, so the default is that (at least
//! [`MIN_DEFAULT`]); a larger configured value only takes effect once somaxconn is raised too.

use std::os::fd::AsFd;

/// The least default backlog, whatever `somaxconn` says (kernels before 5.4 said 128).
pub(crate) const MIN_DEFAULT: u32 = 1024;

/// Where Linux publishes the cap on every listen backlog.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// The default backlog: the system's `somaxconn`, at least [`MIN_DEFAULT`].
pub(crate) fn default_backlog() -> u32 {
    std::fs::read_to_string(SOMAXCONN)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(MIN_DEFAULT, |n| n.max(MIN_DEFAULT))
}

/// Sets the backlog of a socket that is bound (and possibly listening already: on Linux a second
/// `listen` on a listening socket only changes its backlog, which is how a socket handed over by
/// a supervisor gets ours). Values above `i32::MAX` are clamped (the kernel caps them anyway).
pub(crate) fn listen(socket: &impl AsFd, backlog: u32) -> std::io::Result<()> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket2::SockRef::from(socket).listen(backlog)
}
