//! The `sc` command: `sc new` scaffolds an app, `sc dev` runs it with rebuild-and-swap on change,
//! `sc bench` load-tests any SocketCluster-protocol server, `sc types` writes an app's TypeScript
//! contract.

mod bench;
mod dev;
mod new;
mod types;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sc: scaffold, run and load-test sc apps.
#[derive(Parser, Debug)]
#[command(name = "sc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load-test a SocketCluster-protocol server (ours or the Node reference).
    Bench(bench::BenchArgs),
    /// Create a new app: a chat with login, a typed channel and a page, ready for `cargo run`.
    New(new::NewArgs),
    /// Run the app in this directory; rebuild and swap it on change, never refusing a connection.
    Dev(dev::DevArgs),
    /// Write the app's TypeScript contract (events, channels, their types) for the browser client.
    Types(types::TypesArgs),
}

/// Exit codes: 0 success, 1 the run failed (server unreachable, loss, the server refused the
/// scenario, an existing directory, a file could not be written), 2 usage (bad arguments, bad
/// name, command not built yet).
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => block_on("bench", bench::run(args)),
        Command::Dev(args) => block_on("dev", dev::run(args)),
        Command::Types(args) => match types::run(args) {
            Ok(out) => {
                println!("wrote {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sc types: {e}");
                ExitCode::from(1)
            }
        },
        Command::New(args) => match new::run(args) {
            Ok(dir) => {
                println!(
                    "Created {d}. Next:\n  cd {d}\n  cargo run        # then open http://127.0.0.1:8000/\n  sc dev           # the same, rebuilt on every change\n  cargo test",
                    d = dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sc new: {e}");
                ExitCode::from(e.exit_code())
            }
        },
    }
}

/// Runs an async command; its error is one line and exit code 1.
fn block_on<E: std::fmt::Display>(
    name: &str,
    command: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sc {name}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sc {name}: {e}");
            ExitCode::from(1)
        }
    }
}
