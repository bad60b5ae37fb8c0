//! The `connect` and `storm` scenarios: sockets opened (at a rate, 64 at a time, or all at once,
//! as when every client reconnects after a restart) and held; handshake latency and rate, the
//! server's CPU per handshake and memory per socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::wire::Wire;
use super::{histogram, latency_ms, rss_kib, server_cpu_per, BoxError, CpuMeter, Ctx};

/// Attempts at a time in `connect` without a rate.
pub(super) const CONNECT_AT_ONCE: usize = 64;

/// The `storm` scenario: `n` sockets all at once (after raising this process's open-file limit
/// as far as it may go), reported as `"scenario":"storm"`.
pub(super) async fn storm(ctx: &Ctx, n: usize, hold: Duration) -> Result<Value, BoxError> {
    let allowed = raise_open_files();
    // A few descriptors beyond the sockets: the runtime's, stdio, /proc reads.
    if let Some(allowed) = allowed.filter(|a| *a < n as u64 + 64) {
        return Err(format!(
            "a storm of {n} sockets needs more open files than the {allowed} this process may \
             have: raise `ulimit -n`"
        )
        .into());
    }
    connect(ctx, "storm", n, 0.0, n, hold).await
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
fn raise_open_files() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Opens `n` sockets, at `rate` per second or (rate 0) `at_once` attempts at a time, and holds
/// them for `hold` before measuring memory; reported as `scenario`.
pub(super) async fn connect(
    ctx: &Ctx,
    scenario: &str,
    n: usize,
    rate: f64,
    at_once: usize,
    hold: Duration,
) -> Result<Value, BoxError> {
    let rss_before = ctx.pid.and_then(rss_kib);
    let meter = CpuMeter::start(ctx.server_pids());
    let started = Instant::now();
    let at_once = at_once.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let gate = Arc::new(tokio::sync::Semaphore::new(at_once));
    // Each socket, once connected, keeps answering pings until the end, so that however long
    // connecting and holding take, no server drops it for a missed pong before it is measured.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut holders = Vec::with_capacity(n);
    for i in 0..n {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let url = ctx.url(i).to_owned();
        let gate = gate.clone();
        let done = done_tx.clone();
        let mut stop = stop_rx.clone();
        let dropped = dropped.clone();
        holders.push(tokio::spawn(async move {
            let permit = if rate > 0.0 {
                None
            } else {
                gate.acquire_owned().await.ok()
            };
            let t0 = Instant::now();
            let wire = Wire::connect(&url).await;
            drop(permit);
            let _ = done.send(wire.as_ref().map(|_| t0.elapsed()).map_err(|_| ()));
            // The collector stops once every sender is gone: not held while the socket is.
            drop(done);
            let Ok(mut wire) = wire else { return };
            let stopped = stop.changed();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    f = wire.next_frame("#handshake") => match f {
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                    _ = &mut stopped => return,
                }
            }
        }));
    }
    drop(done_tx);
    let mut connected = 0usize;
    let mut hist = histogram();
    let mut failed = 0u64;
    while let Some(result) = done_rx.recv().await {
        match result {
            Ok(took) => {
                let _ = hist.record(took.as_micros().max(1) as u64);
                connected += 1;
            }
            Err(()) => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (own_cpu, server_cpu) = meter.stop();
    tokio::time::sleep(hold).await;
    let rss_after = ctx.pid.and_then(rss_kib);
    let dropped = dropped.load(Ordering::Relaxed);
    let held = connected.saturating_sub(dropped as usize);
    let per_socket = match (rss_before, rss_after) {
        (Some(b), Some(a)) if held > 0 => {
            Some(((a.saturating_sub(b)) as f64 * 1024.0 / held as f64).round())
        }
        _ => None,
    };
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    let rate_achieved = connected as f64 / elapsed;
    eprintln!(
        "{scenario}: {} sockets in {:.2} s ({:.0}/s), {} failed, {dropped} dropped while held; handshake p50 {:.2} ms, p99 {:.2} ms{}{}",
        connected,
        elapsed,
        rate_achieved,
        failed,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        server_cpu_per(server_cpu, connected as u64, "handshake"),
        per_socket
            .map(|b| format!("; server RSS {:.1} KB per socket", b / 1000.0))
            .unwrap_or_default()
    );
    Ok(json!({
        "scenario": scenario,
        "sockets": connected,
        "failed": failed,
        "dropped_during_hold": dropped,
        "lost": failed + dropped,
        "handshakes_per_s": rate_achieved.round(),
        "handshake_ms": latency_ms(&hist),
        "server_rss_bytes_per_socket": per_socket,
        "bench_cpu_percent": own_cpu.round(),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_handshake": server_cpu.filter(|_| connected > 0).map(|s| (s * 1e6 / connected as f64 * 100.0).round() / 100.0),
    }))
}
