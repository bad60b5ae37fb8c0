//! A node's publications to one Redis instance, in the order they were published, pipelined.
//!
//! [`Publisher::send`] queues a command at once (when called, not when its answer is awaited);
//! one task per instance takes everything queued and sends it as one pipeline, then the next
//! batch when that one is answered. So a socket's publishes reach Redis in the socket's order
//! without waiting for each other's answers (the engine's
//! [`publish_queued_on_first_poll`](crate::broker::BrokerEngine::publish_queued_on_first_poll)),
//! and a busy node sends many publications per round trip. When a pipeline fails (the connection
//! broke, or Redis did not answer within [`Redis::timeout`](super::Redis::timeout)), everything
//! queued behind it fails with it.
//!
//! Why not the connection manager's own pipelining: a command may wait there before it is queued
//! (for a reconnection, for the script loading that `EVALSHA`'s `NOSCRIPT` answer starts), and
//! tasks woken together need not run in the order they were woken, so a socket's publishes could
//! overtake each other.
//!
//! Positioned publications run the history script by `EVALSHA`. Its body is loaded (`SCRIPT LOAD`,
//! at the head of the same pipeline) before the first one and after any failure of the
//! connection (a restarted Redis has forgotten it). Those answered `NOSCRIPT` anyway (the scripts
//! were flushed) are sent once more, in order, behind a new load; unless a positioned publication
//! behind them in the same pipeline got through (someone loaded the script meanwhile): sent
//! again they would take their offsets after it, so they fail instead (`Unavailable`).

use std::collections::VecDeque;
use std::future::Future;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use crate::broker::BrokerError;

/// Most commands, and about the most bytes, one pipeline carries.
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 1 << 20;

type Answer = Result<redis::Value, BrokerError>;

/// The queue to one Redis instance's publish task (see the module header).
#[derive(Clone)]
pub(super) struct Publisher {
    queue: mpsc::UnboundedSender<Pending>,
}

struct Pending {
    cmd: redis::Cmd,
    /// Runs the history script (loaded first when needed).
    positioned: bool,
    /// Already sent once and answered `NOSCRIPT`.
    retried: bool,
    answer: oneshot::Sender<Answer>,
}

/// What the publish task needs to know about its Redis instance.
pub(super) struct Target {
    pub conn: ConnectionManager,
    /// The URL without its password, for errors.
    pub name: String,
    /// `SCRIPT LOAD` of the history script whose `EVALSHA` positioned publications send.
    pub load_script: redis::Cmd,
}

impl Publisher {
    /// The queue and the task that sends it (to be spawned; it ends when every `Publisher` is
    /// dropped).
    pub(super) fn new(target: Target) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, rx) = mpsc::unbounded_channel();
        (Self { queue }, run(rx, target))
    }

    /// Queues `cmd` now; the future is its answer. `positioned` commands are `EVALSHA`s of the
    /// history script.
    pub(super) fn send(
        &self,
        cmd: redis::Cmd,
        positioned: bool,
    ) -> impl Future<Output = Answer> + Send + 'static {
        let (answer, rx) = oneshot::channel();
        let queued = self.queue.send(Pending {
            cmd,
            positioned,
            retried: false,
            answer,
        });
        async move {
            let stopped = || BrokerError::Unavailable("the Redis engine was shut down".into());
            queued.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Pending>, target: Target) {
    let Target {
        mut conn,
        name,
        load_script,
    } = target;
    let mut script_loaded = false;
    // Publications to send again (answered NOSCRIPT), ahead of anything newer.
    let mut again: VecDeque<Pending> = VecDeque::new();
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        if again.is_empty() {
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
        }
        batch.extend(again.drain(..));
        let mut bytes: usize = batch.iter().map(|p| packed_len(&p.cmd)).sum();
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            bytes += packed_len(&next.cmd);
            batch.push(next);
        }

        let load = !script_loaded && batch.iter().any(|p| p.positioned);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if load {
            pipe.add_command(load_script.clone());
        }
        for pending in &mut batch {
            pipe.add_command(std::mem::replace(&mut pending.cmd, redis::Cmd::new()));
        }
        let answers: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
            pipe.query_async(&mut conn).await;
        let mut answers = match answers {
            Ok(answers) if answers.len() == pipe.len() => answers.into_iter(),
            Ok(answers) => {
                script_loaded = false;
                let e = BrokerError::Refused(format!(
                    "Redis at {name}: {} answers to a pipeline of {}",
                    answers.len(),
                    pipe.len()
                ));
                for pending in batch.drain(..) {
                    let _ = pending.answer.send(Err(e.clone()));
                }
                continue;
            }
            Err(e) => {
                // The connection failed or Redis did not answer within the timeout. What queued
                // meanwhile fails with it rather than wait a timeout per pipeline behind it (new
                // publishes fail at once while the watchdog finds Redis away). A reconnected Redis
                // may have lost the script.
                script_loaded = false;
                let e = super::command_error(&name, e);
                let queued = std::iter::from_fn(|| rx.try_recv().ok());
                for pending in batch.drain(..).chain(queued) {
                    let _ = pending.answer.send(Err(e.clone()));
                }
                continue;
            }
        };
        let mut sent = pipe.cmd_iter();
        if load {
            sent.next();
            script_loaded = matches!(answers.next(), Some(Ok(_)));
        }
        let answers: Vec<_> = answers.collect();
        // Sending the refused ones again keeps their order only if nothing positioned after
        // them got through (someone loaded the script mid-pipeline).
        let first_refused = answers
            .iter()
            .position(|answer| answer.as_ref().is_err_and(is_noscript));
        let again_in_order = first_refused.is_some_and(|first| {
            batch[first..]
                .iter()
                .zip(&answers[first..])
                .all(|(pending, answer)| !pending.positioned || answer.is_err())
        });
        for ((mut pending, answer), cmd) in batch.drain(..).zip(answers).zip(sent) {
            match answer {
                Err(e) if is_noscript(&e) => {
                    script_loaded = false;
                    if again_in_order && !pending.retried {
                        pending.cmd = cmd.clone();
                        pending.retried = true;
                        again.push_back(pending);
                    } else {
                        let _ = pending.answer.send(Err(BrokerError::Unavailable(format!(
                            "Redis at {name} lost the history script; publish again"
                        ))));
                    }
                }
                Err(e) => {
                    let _ = pending.answer.send(Err(super::command_error(&name, e)));
                }
                Ok(value) => {
                    let _ = pending.answer.send(Ok(value));
                }
            }
        }
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// About the bytes `cmd` takes on the wire (its arguments; the framing is not counted).
fn packed_len(cmd: &redis::Cmd) -> usize {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.len(),
            _ => 0,
        })
        .sum()
}
