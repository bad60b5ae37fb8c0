//! The backlog of a listening socket as the kernel reports it: `ss` shows it as the Send-Q of a
//! listener (TCP and Unix alike). Shared by sc-core's tests and the process tests (`#[path]`).

use std::process::Command;

/// The backlog of the one listening socket `ss -l <args>` selects, e.g.
/// `["-tnH", "sport = :8000"]` or `["-xH", "src", "/run/x.sock"]`.
///
/// # Panics
/// When `ss` is missing or selects no single listener: the test cannot check anything then.
pub fn listen_backlog(args: &[&str]) -> u32 {
    let out = Command::new("ss")
        .arg("-l")
        .args(args)
        .output()
        .expect("`ss` (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("LISTEN")).collect();
    assert_eq!(lines.len(), 1, "one listener for {args:?}, ss said: {text}");
    // `[netid] LISTEN <recv-q> <send-q> <local> ..`: Send-Q is the second field after LISTEN.
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    let at = fields.iter().position(|f| *f == "LISTEN").unwrap_or(0);
    fields
        .get(at + 2)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {:?}", lines[0]))
}

/// [`listen_backlog`] of the TCP listener on `port`.
pub fn tcp_listen_backlog(port: u16) -> u32 {
    listen_backlog(&["-tnH", &format!("sport = :{port}")])
}

/// The system's cap on every backlog (`net.core.somaxconn`).
pub fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number")
}
