//! `sc dev`: runs the app in the current directory, rebuilds it when its sources change, and swaps
//! the running process for the new build without refusing a connection.
//!
//! `sc dev` binds the app's port itself and hands the socket to each build as fd 3 (`LISTEN_FDS`,
//! which sc-core takes over), so the port never closes: the new build starts accepting before the
//! old one is asked to leave (SIGTERM: it closes its WebSockets with 1001 and clients reconnect).
//! A build that fails is reported and the previous build keeps serving.
//!
//! Every build gets the same auth key ([`auth_key`]: `SC_AUTH_KEY` when set, otherwise a key made
//! once per app in `.sc/auth-key`), so a swap keeps users logged in. Editors' temporary files
//! ([`is_editor_temp`]) do not trigger a rebuild. After every successful build the app's
//! TypeScript contract is written again (`--types-out`, as `sc types`), before the swap.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Args;
use command_fds::{CommandFdExt, FdMapping};
use notify::{RecursiveMode, Watcher};
use serde_json::Value;

/// Arguments of `sc dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// The app's directory (its Cargo.toml).
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// The binary to run, when the package has several.
    #[arg(long)]
    bin: Option<String>,
    /// Port to serve on (kept across rebuilds).
    #[arg(long, env = "SC_PORT", default_value_t = 8000)]
    port: u16,
    /// Interface.
    #[arg(long, env = "SC_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Build in release mode.
    #[arg(long)]
    release: bool,
    /// Where every successful build writes the app's TypeScript contract (as `sc types --out`),
    /// relative to the app's directory.
    #[arg(long, default_value = crate::types::DEFAULT_OUT)]
    types_out: PathBuf,
}

fn say(message: std::fmt::Arguments<'_>) {
    eprintln!("[sc dev] {message}");
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), String> {
    let (dir, manifest) = manifest(&args.path)?;
    let types_out = dir.join(&args.types_out);
    let generated = crate::types::outputs(&types_out);
    let addr = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    say(format_args!(
        "serving http://{addr}/ (the port stays open across rebuilds)"
    ));
    let key = auth_key(&dir)?;

    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.kind.is_modify() || event.kind.is_create() || event.kind.is_remove() {
                // The generated types are written after a build: not a change to rebuild for.
                for path in event
                    .paths
                    .into_iter()
                    .filter(|p| !is_editor_temp(p) && !generated.contains(p))
                {
                    let _ = tx.send(path);
                }
            }
        }
    })
    .map_err(|e| format!("cannot watch the sources: {e}"))?;
    for watched in ["src", "public", "templates", "Cargo.toml", "build.rs"] {
        let path = dir.join(watched);
        if path.exists() {
            watcher
                .watch(&path, RecursiveMode::Recursive)
                .map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
        }
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut app: Option<Child> = None;
    loop {
        let build = {
            let (dir, bin, release) = (dir.clone(), args.bin.clone(), args.release);
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || build(&dir, &manifest, bin.as_deref(), release))
                .await
                .map_err(|e| e.to_string())?
        };
        if let Ok(exe) = &build {
            match crate::types::emit(exe, &dir, &types_out) {
                Ok(()) => say(format_args!(
                    "types: {}",
                    types_out.strip_prefix(&dir).unwrap_or(&types_out).display()
                )),
                Err(e) => say(format_args!("types not written: {e}")),
            }
        }
        match build {
            Ok(exe) => match start(&exe, &listener, &dir, &key) {
                Ok(child) => {
                    say(format_args!(
                        "started {} (pid {})",
                        exe.display(),
                        child.id()
                    ));
                    if let Some(old) = app.replace(child) {
                        retire(old);
                    }
                }
                Err(e) => say(format_args!("could not start {}: {e}", exe.display())),
            },
            Err(e) => say(format_args!(
                "{e}; {}",
                if app.is_some() {
                    "the previous build keeps serving"
                } else {
                    "waiting for a change"
                }
            )),
        }
        // Wait for a change, then let a burst of writes settle.
        tokio::select! {
            changed = changes.recv() => {
                let Some(first) = changed else { break };
                tokio::time::sleep(Duration::from_millis(300)).await;
                while changes.try_recv().is_ok() {}
                say(format_args!("{} changed: rebuilding", first.strip_prefix(&dir).unwrap_or(&first).display()));
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    if let Some(old) = app.take() {
        retire(old);
    }
    // Give the retiring app its graceful shutdown before `sc dev` (and so the port) goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// The app's directory and its canonical `Cargo.toml` path, from `--path`.
pub(crate) fn manifest(path: &Path) -> Result<(PathBuf, PathBuf), String> {
    let manifest = std::fs::canonicalize(path.join("Cargo.toml"))
        .map_err(|e| format!("no Cargo.toml in {} ({e})", path.display()))?;
    let dir = manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| path.to_path_buf());
    Ok((dir, manifest))
}

/// `cargo build`, with cargo's progress on the terminal and compiler messages rendered; the
/// path of the app's binary on success.
pub(crate) fn build(
    dir: &Path,
    manifest: &Path,
    bin: Option<&str>,
    release: bool,
) -> Result<PathBuf, String> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--message-format=json-render-diagnostics"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if release {
        cmd.arg("--release");
    }
    if let Some(bin) = bin {
        cmd.args(["--bin", bin]);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    let mut exe = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match msg["reason"].as_str() {
            Some("compiler-message") => {
                if let Some(text) = msg["message"]["rendered"].as_str() {
                    eprint!("{text}");
                }
            }
            Some("compiler-artifact") => {
                let is_bin = msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"));
                let ours = msg["manifest_path"].as_str().map(Path::new) == Some(manifest);
                let named = bin.is_none_or(|b| msg["target"]["name"] == b);
                if let (true, true, true, Some(path)) =
                    (is_bin, ours, named, msg["executable"].as_str())
                {
                    exe = Some(PathBuf::from(path));
                }
            }
            _ => {}
        }
    }
    if !out.status.success() {
        return Err("the build failed".into());
    }
    exe.ok_or_else(|| "the build produced no binary for this package (use --bin)".into())
}

/// Starts the app with the kept socket as fd 3 and the app's auth key in `SC_AUTH_KEY`.
fn start(exe: &Path, listener: &TcpListener, dir: &Path, key: &str) -> std::io::Result<Child> {
    let fd = OwnedFd::from(listener.try_clone()?);
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir)
        .env("SC_AUTH_KEY", key)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null());
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: fd,
        child_fd: 3,
    }])
    .map_err(std::io::Error::other)?;
    cmd.spawn()
}

/// SIGTERM now (the app closes its sockets with 1001), SIGKILL if it is still there after 10 s.
fn retire(mut old: Child) {
    let pid = nix::unistd::Pid::from_raw(old.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    std::thread::spawn(move || {
        for _ in 0..200 {
            if let Ok(Some(_)) = old.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = old.kill();
        let _ = old.wait();
    });
}

/// Where `sc dev` keeps an app's auth key, relative to the app's directory.
const KEY_FILE: &str = ".sc/auth-key";

/// The auth key every build of the app in `dir` gets: `SC_AUTH_KEY` when set; otherwise the one
/// in `.sc/auth-key`, made on first use (32 random bytes as hex, mode 0600). Without one key for
/// all builds each start would sign with a new random key and a swap would log every user out.
/// `.sc/` carries its own `.gitignore` (`*`), so the key stays out of version control even in an
/// app whose `.gitignore` predates it.
fn auth_key(dir: &Path) -> Result<String, String> {
    if let Some(key) = std::env::var("SC_AUTH_KEY").ok().filter(|k| !k.is_empty()) {
        say(format_args!("auth key: SC_AUTH_KEY"));
        return Ok(key);
    }
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => {
            say(format_args!(
                "auth key: {KEY_FILE} (logins survive rebuilds)"
            ));
            return Ok(key.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let key = new_key().map_err(|e| format!("cannot make an auth key: {e}"))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let sc = dir.join(".sc");
        std::fs::create_dir_all(&sc)?;
        std::fs::write(
            sc.join(".gitignore"),
            "# sc dev's files (the auth key): never commit them\n*\n",
        )?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(file, "{key}")
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    say(format_args!(
        "auth key: made {KEY_FILE} (kept for this app; logins survive rebuilds)"
    ));
    Ok(key)
}

/// 32 bytes from the OS generator, as 64 hex characters.
fn new_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Files editors write next to the one being edited (vim's `.x.swp`/`.x.swx` and its `4913`
/// probe, backups `x~`, emacs's lock `.#x` and autosave `#x#`, `.tmp` saves): changes to them are
/// not changes to the app.
fn is_editor_temp(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name == "4913"
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || [".swp", ".swx", ".swo", ".tmp"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_temporary_files_are_not_changes() {
        for temp in [
            "src/.lib.rs.swp",
            "src/.lib.rs.swx",
            "src/4913",
            "src/lib.rs~",
            "src/.#lib.rs",
            "src/#lib.rs#",
            "public/index.html.tmp",
        ] {
            assert!(is_editor_temp(Path::new(temp)), "{temp}");
        }
        for real in [
            "src/lib.rs",
            "public/index.html",
            "Cargo.toml",
            "src/swp.rs",
        ] {
            assert!(!is_editor_temp(Path::new(real)), "{real}");
        }
    }
}
