//! The listening sockets: the server's own TCP port, or one handed over by a supervisor (the
//! master of a cluster, `sc dev`, systemd) as fd 3 with `LISTEN_FDS`; and the admin address's.

/// Where a server accepts connections: its own TCP port, or a socket from a supervisor.
pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    pub(crate) fn local_addr_string(&self) -> String {
        match self {
            Self::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Self::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default(),
        }
    }
}

/// A listening socket from the supervisor, before any runtime exists.
pub(crate) enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Takes the listening socket handed over by a supervisor (`LISTEN_FDS`, fd 3), if any. Call it
/// before starting threads: it edits the environment.
pub(crate) fn take_inherited() -> std::io::Result<Option<Inherited>> {
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

/// [`take_inherited`] as a listener of the running runtime, with `backlog` (a supervisor other
/// than sc's master, `systemd` say, may have chosen a shorter one).
pub(crate) fn inherited(backlog: u32) -> std::io::Result<Option<Listener>> {
    Ok(match take_inherited()? {
        Some(Inherited::Tcp(l)) => {
            l.set_nonblocking(true)?;
            crate::backlog::listen(&l, backlog)?;
            Some(Listener::Tcp(tokio::net::TcpListener::from_std(l)?))
        }
        Some(Inherited::Unix(l)) => {
            l.set_nonblocking(true)?;
            crate::backlog::listen(&l, backlog)?;
            Some(Listener::Unix(tokio::net::UnixListener::from_std(l)?))
        }
        None => None,
    })
}

/// Binds the public port of a server on its own (as `TcpListener::bind` would: `SO_REUSEADDR`, so
/// a restart does not wait for the old connections' `TIME_WAIT`), with `backlog`.
pub(crate) fn public(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

fn tcp_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
}

/// Binds the admin address. Under a supervisor (`shared`: a cluster's worker, an app under
/// `sc dev`) with `SO_REUSEPORT`: a rolling restart or a rebuild starts the replacement while the
/// old process still holds the port (both answer until it leaves). A server on its own binds
/// exclusively, so two servers given the same admin address fail loudly.
pub(crate) fn admin(
    addr: std::net::SocketAddr,
    shared: bool,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}
