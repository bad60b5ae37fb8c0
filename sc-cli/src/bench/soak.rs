//! `sc bench soak`: clients churn for the duration (connect, subscribe, publish and read back,
//! invoke, unsubscribe, disconnect) through the full Rust client; every answer is checked, and
//! afterwards the server must hold no sockets and, with `--pid`, its memory must be back near
//! its start and must not have grown while the load was steady.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sc_core::client::{Client, Subscription};
use serde_json::{json, Value};

use super::wire::Wire;
use super::{options, padding, rss_kib, BoxError, CpuMeter, Ctx};

/// Counters of the soak, shared by every churning client.
#[derive(Default)]
struct SoakStats {
    cycles: AtomicU64,
    publishes: AtomicU64,
    invokes: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl SoakStats {
    fn fail(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(error);
    }
}

/// A small deterministic generator (xorshift): the soak's choices, no crate needed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Makes each call of a cycle once over a raw connection: any error answer is the server's
/// [`Refused`](super::wire::Refused).
async fn probe(url: &str) -> Result<(), BoxError> {
    let mut wire = Wire::connect(url).await?;
    wire.subscribe("soak/0").await?;
    wire.call("#publish", json!({"channel": "soak/probe", "data": {}}))
        .await?;
    wire.call("echo", json!({})).await?;
    wire.close().await;
    Ok(())
}

pub(super) async fn soak(
    ctx: &Ctx,
    clients: usize,
    channels: usize,
    (slack, growth): (u64, u64),
) -> Result<Value, BoxError> {
    // A server that refuses the cycle's calls stops the soak at once with its reason, rather
    // than failing every cycle for the whole duration.
    for url in &ctx.urls {
        probe(url).await?;
    }
    let rss_start = ctx.pid.and_then(rss_kib);
    let warm_at = Instant::now() + ctx.duration / 4;
    let warm = Arc::new(AtomicU64::new(0));
    // The last sample while the load still runs: compared with `warm`, both under load, so the
    // allocator's keeping or returning memory after the load cannot hide or fake a leak.
    let late = Arc::new(AtomicU64::new(0));
    let meter = CpuMeter::start(ctx.server_pids());
    let deadline = Instant::now() + ctx.duration;
    let stats = Arc::new(SoakStats::default());
    let pad: Arc<str> = padding(ctx.size);
    let peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
    let sampling = ctx.pid.map(|pid| {
        let peak = peak.clone();
        let warm = warm.clone();
        let late = late.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                    let now = Instant::now();
                    if now >= warm_at && warm.load(Ordering::Relaxed) == 0 {
                        warm.store(kib, Ordering::Relaxed);
                    }
                    if now < deadline {
                        late.store(kib, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let url = ctx.url(i).to_owned();
        let stats = stats.clone();
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let tag = format!("{i}-{n}");
                match soak_cycle(&url, &mut rng, channels, &tag, &pad, &stats).await {
                    Ok(()) => {
                        stats.cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => stats.fail(format!("client {i} cycle {n}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            stats.fail(format!("a client task failed: {e}"));
        }
    }
    let (own_cpu_pct, server_cpu) = meter.stop();
    // Every socket the soak opened is closed: every server must get back to none.
    let mut gauges = all_gauges(&ctx.urls).await;
    let settle = Instant::now() + Duration::from_secs(10);
    while gauges.as_ref().map_or(true, |(c, s)| c + s > 0) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gauges = all_gauges(&ctx.urls).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_end = ctx.pid.and_then(rss_kib);
    if let Some(s) = sampling {
        s.abort();
    }

    let errors = stats.errors.load(Ordering::Relaxed);
    let first_error = stats
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut failures = Vec::new();
    if errors > 0 {
        failures.push(format!(
            "{errors} errors, the first: {}",
            first_error.clone().unwrap_or_default()
        ));
    }
    match &gauges {
        Ok((c, s)) if c + s > 0 => failures.push(format!(
            "{c} connections and {s} subscriptions left after the soak"
        )),
        Ok(_) => {}
        Err(e) => failures.push(e.clone()),
    }
    let gauges = gauges.ok();
    let rss_warm = Some(warm.load(Ordering::Relaxed)).filter(|w| *w > 0);
    let rss_late = Some(late.load(Ordering::Relaxed)).filter(|w| *w > 0);
    if let (Some(start), Some(end)) = (rss_start, rss_end) {
        if end > start + slack {
            failures.push(format!(
                "server memory {end} KiB after the soak, {start} KiB before (slack {slack} KiB)"
            ));
        }
    }
    if let (Some(w), Some(l)) = (rss_warm, rss_late) {
        if l > w + growth {
            failures.push(format!(
                "server memory grew under steady load from {w} KiB (a quarter in) to {l} KiB (at the end; allowed {growth} KiB)"
            ));
        }
    }
    let cycles = stats.cycles.load(Ordering::Relaxed);
    eprintln!(
        "soak: {clients} clients, {cycles} cycles, {} publishes read back, {} invokes, {errors} errors; server RSS start {:?} KiB, a quarter in {:?} KiB, last under load {:?} KiB, peak {} KiB, after {:?} KiB; sc bench CPU {own_cpu_pct:.0}%{}",
        stats.publishes.load(Ordering::Relaxed),
        stats.invokes.load(Ordering::Relaxed),
        rss_start,
        rss_warm,
        rss_late,
        peak.load(Ordering::Relaxed),
        rss_end,
        super::server_cpu_per(server_cpu, cycles, "cycle"),
    );
    Ok(json!({
        "scenario": "soak",
        "clients": clients,
        "channels": channels,
        "seconds": ctx.duration.as_secs_f64(),
        "cycles": cycles,
        "publishes": stats.publishes.load(Ordering::Relaxed),
        "invokes": stats.invokes.load(Ordering::Relaxed),
        "errors": errors,
        "first_error": first_error,
        "connections_after": gauges.map(|g| g.0),
        "subscriptions_after": gauges.map(|g| g.1),
        "rss_start_kib": rss_start,
        "rss_warm_kib": rss_warm,
        "rss_late_kib": rss_late,
        "rss_peak_kib": ctx.pid.map(|_| peak.load(Ordering::Relaxed)),
        "rss_end_kib": rss_end,
        "server_cpu_s": server_cpu,
        "own_cpu_pct": own_cpu_pct,
        "ok": failures.is_empty(),
        "failure": failures.join("; "),
    }))
}

/// One client's life: connect, subscribe to 1 to 3 channels, publish to each and read its own
/// message back (others publish there too), invoke `echo` and check the answer, unsubscribe from
/// one channel while still connected, disconnect.
async fn soak_cycle(
    url: &str,
    rng: &mut Rng,
    channels: usize,
    tag: &str,
    pad: &str,
    stats: &SoakStats,
) -> Result<(), String> {
    let client = Client::connect_with(options(url))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut subs: Vec<(String, Subscription)> = Vec::new();
    for _ in 0..=rng.below(3) {
        let channel = format!("soak/{}", rng.below(channels as u64));
        if subs.iter().any(|(c, _)| *c == channel) {
            continue;
        }
        let sub = client
            .subscribe(&channel)
            .await
            .map_err(|e| format!("subscribe {channel}: {e}"))?;
        subs.push((channel, sub));
    }
    for round in 0..3 {
        for (channel, sub) in subs.iter_mut() {
            let from = format!("{tag}/{round}");
            client
                .publish(channel, &json!({"from": from, "p": pad}))
                .await
                .map_err(|e| format!("publish {channel}: {e}"))?;
            let wait = async {
                while let Some(msg) = sub.recv().await {
                    if msg["from"] == json!(from) {
                        return true;
                    }
                }
                false
            };
            match tokio::time::timeout(Duration::from_secs(10), wait).await {
                Ok(true) => stats.publishes.fetch_add(1, Ordering::Relaxed),
                Ok(false) => return Err(format!("subscription to {channel} ended")),
                Err(_) => return Err(format!("own publication on {channel} not received in 10 s")),
            };
        }
        let sent = json!([tag, round]);
        let echoed: Value = client
            .invoke("echo", &sent)
            .await
            .map_err(|e| format!("invoke echo: {e}"))?;
        if echoed != sent {
            return Err(format!("echo answered {echoed} to {sent}"));
        }
        stats.invokes.fetch_add(1, Ordering::Relaxed);
    }
    if let Some((channel, _)) = subs.first() {
        client.unsubscribe(channel);
    }
    drop(subs);
    client.disconnect().await;
    Ok(())
}

/// `sc_connections` and `sc_subscriptions` summed over every server, or why they could not be read.
async fn all_gauges(urls: &[String]) -> Result<(u64, u64), String> {
    let mut total = (0, 0);
    for url in urls {
        let (c, s) = server_gauges(url).await.ok_or_else(|| {
            format!("could not read sc_connections and sc_subscriptions from /metrics of {url} (the soak checks sc servers over ws://)")
        })?;
        total = (total.0 + c, total.1 + s);
    }
    Ok(total)
}

/// `sc_connections` and `sc_subscriptions` from the server's `/metrics` (sc servers only; `None`
/// for other servers and for TLS URLs).
async fn server_gauges(url: &str) -> Option<(u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url.strip_prefix("ws://")?.split('/').next()?;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .ok()?
    .ok()?;
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    let sum = |name: &str| -> Option<u64> {
        let prefix = format!("{name}{{");
        let values: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    Some((sum("sc_connections")?, sum("sc_subscriptions")?))
}
