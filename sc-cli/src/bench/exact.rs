//! The `exact` scenario: a fixed amount of work, done in lockstep so that the server does the same
//! work however fast or slow it runs (under `valgrind --tool=callgrind`, bench/callgrind.sh).
//! Nothing here is timed: it exists so that a server's instruction count for N operations and for
//! 2N can be subtracted, the start-up and shutdown cost cancelling out.
//!
//! - `handshake`: N connections, one after the other: open, `#handshake`, close.
//! - `invoke`: N `echo` invokes on one socket, each answered before the next.
//! - `publish`: S subscribers on one channel; N publishes of a 64-byte message, each acknowledged
//!   and received by every subscriber before the next (N x S deliveries).

use std::time::Duration;

use serde_json::{json, Value};

use super::wire::{Frame, Wire};
use super::{now_micros, padding, BoxError, Ctx};

/// What `exact` repeats.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(super) enum Op {
    Handshake,
    Invoke,
    Publish,
}

/// How long one step may take before the run fails (a server under valgrind is ~50x slower).
const STEP: Duration = Duration::from_secs(60);

pub(super) async fn exact(
    ctx: &Ctx,
    op: Op,
    count: usize,
    subscribers: usize,
) -> Result<Value, BoxError> {
    let pad = padding(ctx.size);
    let message = json!({"t": 0, "p": &*pad});
    let (name, deliveries) = match op {
        Op::Handshake => {
            for _ in 0..count {
                let wire = step(Wire::connect(ctx.url(0))).await?;
                wire.close().await;
            }
            ("handshake", 0)
        }
        Op::Invoke => {
            let mut wire = Wire::connect(ctx.url(0)).await?;
            for _ in 0..count {
                step(wire.call("echo", message.clone())).await?;
            }
            wire.close().await;
            ("invoke", 0)
        }
        Op::Publish => {
            let channel = format!("exact/{}", now_micros());
            let mut subs = Vec::with_capacity(subscribers);
            for _ in 0..subscribers {
                let mut wire = Wire::connect(ctx.url(0)).await?;
                wire.subscribe(&channel).await?;
                subs.push(wire);
            }
            let mut publisher = Wire::connect(ctx.url(0)).await?;
            let data = json!({"channel": &channel, "data": message});
            for _ in 0..count {
                step(publisher.call("#publish", data.clone())).await?;
                for sub in &mut subs {
                    step(next_publication(sub)).await?;
                }
            }
            publisher.close().await;
            for sub in subs {
                sub.close().await;
            }
            ("publish", count * subscribers)
        }
    };
    eprintln!("exact: {count} x {name} done ({deliveries} deliveries)");
    Ok(json!({
        "scenario": "exact",
        "op": name,
        "count": count,
        "subscribers": if matches!(op, Op::Publish) { subscribers } else { 0 },
        "deliveries": deliveries,
    }))
}

async fn next_publication(wire: &mut Wire) -> Result<(), BoxError> {
    loop {
        match wire.next_frame("#subscribe").await {
            Some(Ok(Frame::Publish(_))) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err("a subscriber's connection closed".into()),
        }
    }
}

async fn step<T>(f: impl std::future::Future<Output = Result<T, BoxError>>) -> Result<T, BoxError> {
    tokio::time::timeout(STEP, f)
        .await
        .map_err(|_| "a step took over 60 s")?
}
