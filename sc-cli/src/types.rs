//! `sc types`: builds the app in the current directory and has it write its TypeScript contract
//! (`App::typescript`): the app's binary runs with `SC_EMIT_TYPES=<path>`, which sc-core's
//! `Builder::run` honours by writing the declarations and exiting instead of serving. Written:
//! `<out>` (default `public/sc-types.d.ts`), its companion module next to it (`sc-types.js`: the
//! contract's hash, for `create({ contract })`) and the browser client's declarations
//! (`socketcluster.d.ts`). `sc dev` does the same after every successful build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

/// Where the declarations go by default, relative to the app's directory: next to the page.
pub const DEFAULT_OUT: &str = "public/sc-types.d.ts";

/// How long the app may take to write its types (it builds its `App` and returns).
const EMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `sc types`.
#[derive(Args, Debug)]
pub struct TypesArgs {
    /// The app's directory (its Cargo.toml).
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// The binary to run, when the package has several.
    #[arg(long)]
    bin: Option<String>,
    /// The declaration file to write, relative to the app's directory; `sc-types.js` and
    /// `socketcluster.d.ts` go next to it.
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Build in release mode.
    #[arg(long)]
    release: bool,
    /// Run this already-built binary of the app instead of building it (CI, scripts).
    #[arg(long)]
    exe: Option<PathBuf>,
}

/// Builds the app and writes its types; the declaration file's path.
pub fn run(args: TypesArgs) -> Result<PathBuf, String> {
    let (dir, manifest) = crate::dev::manifest(&args.path)?;
    let exe = match args.exe {
        Some(exe) => std::path::absolute(&exe).map_err(|e| format!("{}: {e}", exe.display()))?,
        None => crate::dev::build(&dir, &manifest, args.bin.as_deref(), args.release)?,
    };
    let out = dir.join(&args.out);
    emit(&exe, &dir, &out)?;
    Ok(out)
}

/// Runs the app's binary `exe` with `SC_EMIT_TYPES=out` in `dir` and waits for it to write.
pub fn emit(exe: &Path, dir: &Path, out: &Path) -> Result<(), String> {
    let mut child = Command::new(exe)
        .current_dir(dir)
        .env("SC_EMIT_TYPES", out)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > EMIT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not write its types within {} s: its main must end in `SocketCluster::builder()...run()`, which honours SC_EMIT_TYPES",
                    exe.display(),
                    EMIT_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for {}: {e}", exe.display())),
        }
    };
    if !status.success() {
        return Err(format!(
            "{} could not write its types ({status})",
            exe.display()
        ));
    }
    if !out.exists() {
        return Err(format!(
            "{} exited without writing {}: its main must end in `SocketCluster::builder()...run()`, which honours SC_EMIT_TYPES",
            exe.display(),
            out.display()
        ));
    }
    Ok(())
}

/// The files `emit` writes for `out`: a watcher ignores changes to them.
pub fn outputs(out: &Path) -> Vec<PathBuf> {
    sc_core::app::typescript::files_for(out).map_or_else(Vec::new, Vec::from)
}
