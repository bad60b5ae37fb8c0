//! The master's output: its own lines and every line its children print, tagged with their role
//! (`[worker#1] ...`), go through a bounded queue to a thread of their own. A reader of the
//! master's stdout or stderr that stalls (a full pipe) then blocks that thread, not the
//! supervisor loop (heartbeats, restarts, signals); lines that do not fit are dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

use super::role::Role;

/// Lines waiting for the output thread.
const QUEUE: usize = 4096;

enum Line {
    Out(String),
    Err(String),
    Flush(std::sync::mpsc::Sender<()>),
}

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The output thread's queue; `None` if the thread could not start (then lines are written
/// directly).
fn queue() -> Option<&'static SyncSender<Line>> {
    static QUEUE_TX: OnceLock<Option<SyncSender<Line>>> = OnceLock::new();
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = sync_channel(QUEUE);
            let thread = std::thread::Builder::new()
                .name("sc-output".into())
                .spawn(move || {
                    for line in rx {
                        let dropped = DROPPED.swap(0, Ordering::Relaxed);
                        if dropped > 0 {
                            eprintln!(
                                "[sc master] {dropped} line(s) of output dropped: stdout or stderr is not read fast enough"
                            );
                        }
                        match line {
                            Line::Out(l) => println!("{l}"),
                            Line::Err(l) => eprintln!("{l}"),
                            Line::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            thread.ok().map(|_| tx)
        })
        .as_ref()
}

fn emit(line: Line) {
    match queue() {
        Some(tx) => {
            if tx.try_send(line).is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        None => match line {
            Line::Out(l) => println!("{l}"),
            Line::Err(l) => eprintln!("{l}"),
            Line::Flush(_) => {}
        },
    }
}

/// A line of the master's own, on stderr.
pub(super) fn say(message: std::fmt::Arguments<'_>) {
    emit(Line::Err(format!("[sc master] {message}")));
}

/// Waits (at most a second) until every queued line is written: the master calls it before it
/// exits, as the output thread dies with the process.
pub(super) fn flush() {
    let Some(tx) = queue() else { return };
    let (done, wait) = std::sync::mpsc::channel();
    if tx.send(Line::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(Duration::from_secs(1));
    }
}

/// Copies a child's output line by line to the master's, tagged `[worker#1]`.
pub(super) async fn pump(stream: impl AsyncRead + Unpin, role: Role, stderr: bool, max: usize) {
    copy_lines(BufReader::new(stream), max, |line| {
        let line = format!("[{role}] {line}");
        emit(if stderr {
            Line::Err(line)
        } else {
            Line::Out(line)
        });
    })
    .await;
}

/// Hands `emit` each line of `reader` (without its newline) until the end of the stream. Bytes
/// that are not UTF-8 are replaced (U+FFFD), not a reason to stop; a line longer than `max`
/// bytes is cut there and says how much was dropped, so a child cannot grow the master's memory
/// with one endless line.
async fn copy_lines(mut reader: impl AsyncBufRead + Unpin, max: usize, mut emit: impl FnMut(&str)) {
    let mut line: Vec<u8> = Vec::new();
    let mut cut = 0usize;
    let mut flush = |line: &mut Vec<u8>, cut: &mut usize| {
        let text = String::from_utf8_lossy(line);
        if *cut > 0 {
            emit(&format!("{text}... [{cut} more bytes cut]"));
        } else {
            emit(&text);
        }
        line.clear();
        *cut = 0;
    };
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (chunk, used, ends) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let take = chunk.len().min(max.saturating_sub(line.len()));
        line.extend_from_slice(&chunk[..take]);
        cut += chunk.len() - take;
        reader.consume(used);
        if ends {
            flush(&mut line, &mut cut);
        }
    }
    if !line.is_empty() || cut > 0 {
        flush(&mut line, &mut cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8], max: usize) -> Vec<String> {
        let mut out = Vec::new();
        // A tiny buffer, so lines span many reads.
        let reader = BufReader::with_capacity(3, input);
        copy_lines(reader, max, |l| out.push(l.to_owned())).await;
        out
    }

    #[tokio::test]
    async fn output_after_invalid_utf8_is_kept() {
        let got = lines_of(b"one\nbad \xff\xfe here\nthree\nno newline", 100).await;
        assert_eq!(
            got,
            vec!["one", "bad \u{fffd}\u{fffd} here", "three", "no newline"]
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_counted() {
        let mut input = vec![b'x'; 250];
        input.extend_from_slice(b"\nnext\n");
        let got = lines_of(&input, 100).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            format!("{}... [150 more bytes cut]", "x".repeat(100))
        );
        assert_eq!(got[1], "next");
    }
}
