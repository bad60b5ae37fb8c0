//! `sc bench`: load scenarios against any SocketCluster-protocol URL. The load runs over raw
//! protocol frames ([`wire`]: no JSON trees per message, so the instrument stays cheaper than the
//! servers it measures); `soak` uses the full Rust client, whose behaviour it checks. Each prints a human summary and one JSON line (`{"scenario":..}`) for scripts.
//!
//! - `connect`: N sockets opened at a rate, held; handshake latency; server RSS per socket.
//! - `storm`: N sockets (10,000) opened all at once, as clients reconnect after a restart.
//! - `exact`: a fixed count of handshakes, invokes or publishes in lockstep, for instruction
//!   counts under callgrind (`bench/callgrind.sh`).
//! - `fanout`: N subscribers on one channel, a publisher at max rate (W publishes in flight) or
//!   at a fixed rate; deliveries/s, end-to-end latency, loss.
//! - `channels`: many channels with subscribers, many publishers.
//! - `rpc`: S sockets x W invokes in flight of `echo`; acks/s and latency.
//! - `soak`: clients churn (connect, subscribe, publish and read back, invoke, unsubscribe,
//!   disconnect) for the duration; fails on any error, on sockets left behind, and with `--pid`
//!   when the server's memory does not come back near its start.
//!
//! The scenarios need a server that answers `echo` and lets clients subscribe and publish on any
//! channel (the echo example). The server's first error answer (`UnhandledEventError`,
//! `InvalidChannelError`, ..) ends the run with that reason ([`wire::Refused`]; `soak` makes
//! each of its calls once before it starts): those answers are not lost messages, and nothing
//! measured on such a server would mean anything.
//!
//! Messages carry their send time (`{"t":µs since the epoch,"p":padding}`), so latency is measured
//! by the receiver on the same clock. The instrument reports its own CPU use; with `--pid` it also
//! reports the server's CPU time per message and memory per socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use sc_core::client::ClientOptions;
use serde_json::{json, Value};

mod connect;
mod exact;
mod soak;
mod wire;
use wire::{Frame, Refused, Wire};

/// Arguments of `sc bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server URL: a server with an `echo` handler and open channels, e.g. the echo example
    /// (`cargo run --release -p echo`).
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:8000/socketcluster/"
    )]
    url: String,
    /// Extra URLs: clients are spread over `--url` and these (e.g. several nodes sharing
    /// channels through Redis). The publisher always uses `--url`.
    #[arg(long = "also", global = true)]
    also: Vec<String>,
    /// Server process id: adds its CPU time per message and RSS per socket to the report. Its
    /// live descendants count too (a cluster's master: its workers, brokers and balancers).
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// More server processes whose CPU time (with their descendants') counts with `--pid`'s,
    /// e.g. a second node and the Redis server of a deployment. Repeatable.
    #[arg(long = "also-pid", global = true, requires = "pid")]
    also_pid: Vec<u32>,
    /// Measured seconds (after connecting and subscribing).
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Payload size in bytes (the JSON message, padded).
    #[arg(long, global = true, default_value_t = 64)]
    size: usize,
    /// A label copied into the JSON line (e.g. "sc" or "node").
    #[arg(long, global = true, default_value = "")]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Open sockets at a rate and hold them.
    Connect {
        /// Sockets to open.
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        /// Connection attempts per second (0: as fast as possible, 64 at a time).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Seconds to hold the sockets open before measuring memory.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
    },
    /// Open every socket at once (a restart's reconnect burst) and hold them: handshake
    /// latency and rate when nothing paces the clients.
    Storm {
        /// Sockets to open, all at once.
        #[arg(long, default_value_t = 10_000)]
        sockets: usize,
        /// Seconds to hold the sockets open before measuring memory.
        #[arg(long, default_value_t = 1.0)]
        hold: f64,
    },
    /// A fixed amount of work in lockstep, for instruction counts (bench/callgrind.sh): not timed.
    Exact {
        /// What to repeat: `handshake` (connect, handshake, close), `invoke` (`echo` round trips
        /// on one socket) or `publish` (to `--subscribers` sockets on one channel).
        #[arg(long, value_enum)]
        op: exact::Op,
        /// How many times.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Subscribers of `publish`.
        #[arg(long, default_value_t = 50)]
        subscribers: usize,
    },
    /// One channel, many subscribers, one publisher.
    Fanout {
        /// Subscriber sockets.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Publishes per second (0: as fast as the server acknowledges).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Publishes in flight at max rate.
        #[arg(long, default_value_t = 16)]
        inflight: usize,
    },
    /// Many channels, each with subscribers, and many publishers.
    Channels {
        /// Channels.
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// Subscribers per channel (each its own socket).
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Publisher sockets (each publishes round-robin over the channels).
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        /// Publishes in flight per publisher.
        #[arg(long, default_value_t = 4)]
        inflight: usize,
    },
    /// Churn: connect, subscribe, publish and read back, invoke `echo`, unsubscribe, disconnect,
    /// over and over; checks every answer and the server's state afterwards.
    Soak {
        /// Clients churning at once.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Channels they subscribe to (each client picks 1 to 3 per cycle).
        #[arg(long, default_value_t = 50)]
        channels: usize,
        /// Memory the server may keep after the soak beyond its memory before it, in KiB
        /// (with `--pid`; the allocator keeps some of the peak).
        #[arg(long, default_value_t = 16384)]
        rss_slack_kib: u64,
        /// Growth allowed under load, from a quarter into the soak (load steady by then) to its last
        /// sample before the deadline, in KiB (with `--pid`): more means memory leaks under churn.
        #[arg(long, default_value_t = 2048)]
        rss_growth_kib: u64,
    },
    /// Invoke `echo` round trips.
    Rpc {
        /// Sockets.
        #[arg(long, default_value_t = 100)]
        sockets: usize,
        /// Invokes in flight per socket.
        #[arg(long, default_value_t = 10)]
        inflight: usize,
    },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the chosen scenario and prints its report.
pub async fn run(args: BenchArgs) -> Result<(), BoxError> {
    let urls: Vec<String> = std::iter::once(args.url.clone())
        .chain(args.also.iter().cloned())
        .collect();
    let ctx = Ctx {
        urls,
        pid: args.pid,
        also_pid: args.also_pid,
        duration: Duration::from_secs_f64(args.duration.max(0.1)),
        size: args.size,
    };
    let mut report = match args.scenario {
        Scenario::Connect {
            sockets,
            rate,
            hold,
        } => {
            let hold = Duration::from_secs_f64(hold.max(0.0));
            connect::connect(
                &ctx,
                "connect",
                sockets,
                rate,
                connect::CONNECT_AT_ONCE,
                hold,
            )
            .await?
        }
        Scenario::Exact {
            op,
            count,
            subscribers,
        } => exact::exact(&ctx, op, count.max(1), subscribers.max(1)).await?,
        Scenario::Storm { sockets, hold } => {
            connect::storm(&ctx, sockets, Duration::from_secs_f64(hold.max(0.0))).await?
        }
        Scenario::Fanout {
            subscribers,
            rate,
            inflight,
        } => fanout(&ctx, 1, subscribers, 1, rate, inflight.max(1)).await?,
        Scenario::Channels {
            channels,
            subscribers,
            publishers,
            inflight,
        } => {
            fanout(
                &ctx,
                channels.max(1),
                subscribers,
                publishers.max(1),
                0.0,
                inflight.max(1),
            )
            .await?
        }
        Scenario::Rpc { sockets, inflight } => rpc(&ctx, sockets, inflight.max(1)).await?,
        Scenario::Soak {
            clients,
            channels,
            rss_slack_kib,
            rss_growth_kib,
        } => {
            let limits = (rss_slack_kib, rss_growth_kib);
            soak::soak(&ctx, clients.max(1), channels.max(1), limits).await?
        }
    };
    if let Value::Object(map) = &mut report {
        map.insert("label".into(), json!(args.label));
        map.insert("url".into(), json!(args.url));
    }
    println!("{report}");
    if report["ok"] == json!(false) {
        return Err(format!("soak failed: {}", report["failure"]).into());
    }
    if report["lost"].as_u64().unwrap_or(0) > 0 {
        return Err(format!("{} messages were lost", report["lost"]).into());
    }
    Ok(())
}

struct Ctx {
    urls: Vec<String>,
    pid: Option<u32>,
    also_pid: Vec<u32>,
    duration: Duration,
    size: usize,
}

impl Ctx {
    fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    /// The processes whose CPU time is the server's (`--pid` and `--also-pid`).
    fn server_pids(&self) -> Vec<u32> {
        self.pid.iter().chain(&self.also_pid).copied().collect()
    }
}

fn options(url: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url);
    o.connect_timeout = Duration::from_secs(20);
    o.ack_timeout = Duration::from_secs(20);
    o.auto_reconnect = false;
    o
}

/// Opens `n` raw connections, 64 at a time, spread over the URLs.
async fn open_wires(ctx: &Ctx, n: usize) -> Result<Vec<Wire>, BoxError> {
    let mut wires = Vec::with_capacity(n);
    let mut pending = futures_util::stream::FuturesOrdered::new();
    for i in 0..n {
        pending.push_back(Wire::connect(ctx.url(i)));
        if pending.len() >= 64 {
            if let Some(w) = futures_util::StreamExt::next(&mut pending).await {
                wires.push(w?);
            }
        }
    }
    while let Some(w) = futures_util::StreamExt::next(&mut pending).await {
        wires.push(w?);
    }
    Ok(wires)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The padding that makes `{"t":<µs>,"p":"xxx"}` about `size` bytes (computed once).
fn padding(size: usize) -> Arc<str> {
    let base = json!({"t": now_micros(), "p": ""}).to_string().len();
    "x".repeat(size.saturating_sub(base)).into()
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 100 s, 2 significant digits (1%: plenty for percentiles, and small enough to keep
    // one per receiving socket); the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 2).unwrap_or_else(|_| unreachable!())
}

fn latency_ms(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "p50": ms(0.5),
        "p90": ms(0.9),
        "p99": ms(0.99),
        "max": h.max() as f64 / 1000.0,
    })
}

/// CPU time of this process.
fn own_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// CPU time of a process from /proc, with its reaped children's and its live descendants' (a
/// cluster's processes: a master counts its workers itself only once they exit).
fn proc_cpu(pid: u32) -> Option<Duration> {
    let descendants: Duration = children(pid).into_iter().filter_map(proc_cpu).sum();
    Some(stat_cpu(pid, true)? + descendants)
}

/// A process's own CPU time from `/proc/<pid>/stat` (utime and stime), with its reaped
/// children's (cutime and cstime) when `reaped`.
fn stat_cpu(pid: u32, reaped: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(") ").next()?.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let mut ticks = field(11)? + field(12)?;
    if reaped {
        ticks += field(13)? + field(14)?;
    }
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Some(Duration::from_millis(ticks * 10))
}

/// A process's live children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .collect()
}

/// Resident memory of a process and its descendants, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    let children: u64 = children(pid).into_iter().filter_map(rss_kib).sum();
    Some(own + children)
}

/// The human summary's "; server N µs CPU per <what>" (with `--pid`; empty without it, or
/// when nothing was counted).
fn server_cpu_per(server_cpu_s: Option<f64>, count: u64, what: &str) -> String {
    match server_cpu_s {
        Some(s) if count > 0 => format!("; server {:.2} µs CPU per {what}", s * 1e6 / count as f64),
        _ => String::new(),
    }
}

/// Measures this process's and the server's CPU over a phase.
struct CpuMeter {
    wall: Instant,
    own: Duration,
    server: Option<(Vec<u32>, Duration)>,
}

impl CpuMeter {
    fn start(pids: Vec<u32>) -> Self {
        let server = (!pids.is_empty())
            .then(|| servers_cpu(&pids).map(|c| (pids, c)))
            .flatten();
        Self {
            wall: Instant::now(),
            own: own_cpu(),
            server,
        }
    }

    /// (own CPU %, server CPU seconds) since start.
    fn stop(&self) -> (f64, Option<f64>) {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let own = (own_cpu().saturating_sub(self.own)).as_secs_f64() / wall * 100.0;
        let server = self
            .server
            .as_ref()
            .and_then(|(pids, c0)| servers_cpu(pids).map(|c| c.saturating_sub(*c0).as_secs_f64()));
        (own, server)
    }
}

/// The CPU time of all `pids` (see [`proc_cpu`]); `None` when one of them is gone.
fn servers_cpu(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|&p| proc_cpu(p)).sum()
}

/// Fan-out over `channels` channels with `subscribers` sockets each and `publishers` sockets
/// publishing round-robin (the `fanout` and `channels` scenarios).
async fn fanout(
    ctx: &Ctx,
    channels: usize,
    subscribers: usize,
    publishers: usize,
    rate: f64,
    inflight: usize,
) -> Result<Value, BoxError> {
    let names: Vec<String> = (0..channels)
        .map(|i| format!("bench/{}/{i}", now_micros()))
        .collect();
    let mut wires = open_wires(ctx, channels * subscribers).await?;
    for (i, w) in wires.iter_mut().enumerate() {
        w.subscribe(&names[i % channels]).await?;
    }
    let mut pubs = Vec::with_capacity(publishers);
    for _ in 0..publishers {
        pubs.push(Wire::connect(ctx.url(0)).await?);
    }
    // Let subscriptions settle across nodes (Redis, broker processes).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let counts: Vec<Arc<AtomicU64>> = wires.iter().map(|_| Arc::default()).collect();
    let receivers: Vec<_> = wires
        .into_iter()
        .zip(&counts)
        .map(|(mut wire, count)| {
            let mut stop = stop_rx.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut n = 0u64;
                loop {
                    let frame = tokio::select! {
                        f = wire.next_frame("#subscribe") => f,
                        _ = stop.changed() => break,
                    };
                    match frame {
                        Some(Ok(Frame::Publish(t))) => {
                            n += 1;
                            count.store(n, Ordering::Relaxed);
                            if let Some(t) = t {
                                let _ = hist.record(now_micros().saturating_sub(t).max(1));
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
                wire.close().await;
                hist
            })
        })
        .collect();

    // Acknowledged publishes per channel: each receiver must get exactly its channel's count.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..channels).map(|_| AtomicU64::new(0)).collect());
    let failures = Arc::new(AtomicU64::new(0));
    // The first error the server answers a publish with: it ends the run (see `Refused`).
    let refusal = Arc::new(std::sync::OnceLock::<Box<Refused>>::new());
    let meter = CpuMeter::start(ctx.server_pids());
    let started = Instant::now();
    let deadline = started + ctx.duration;
    let mut senders = Vec::new();
    let size = ctx.size;
    let pad = padding(size);
    let in_flight = if rate > 0.0 { 1 } else { inflight };
    let names = Arc::new(names);
    for (p, mut wire) in pubs.into_iter().enumerate() {
        let names = names.clone();
        let pad = pad.clone();
        let acked = acked.clone();
        let failures = failures.clone();
        let refusal = refusal.clone();
        senders.push(tokio::spawn(async move {
            let mut i = p;
            let mut n = 0u64;
            // Channel index of each publish awaiting its ack (one socket's acks come in order).
            let mut outstanding = std::collections::VecDeque::with_capacity(in_flight);
            let give_up = |outstanding: &std::collections::VecDeque<usize>| {
                failures.fetch_add(outstanding.len() as u64, Ordering::Relaxed);
            };
            loop {
                while outstanding.len() < in_flight && Instant::now() < deadline {
                    if rate > 0.0 {
                        let due = started + Duration::from_secs_f64(n as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    let channel = &names[i % names.len()];
                    let sent = wire
                        .feed_invoke("#publish", now_micros(), &pad, Some(channel))
                        .await;
                    if sent.is_err() {
                        give_up(&outstanding);
                        return;
                    }
                    outstanding.push_back(i % names.len());
                    i += 1;
                    n += 1;
                }
                if outstanding.is_empty() {
                    break;
                }
                // A server that never acknowledges must not hang the run.
                let frame =
                    tokio::time::timeout(Duration::from_secs(10), wire.next_frame("#publish"))
                        .await;
                match frame {
                    Ok(Some(Ok(Frame::Response(_, None)))) => {
                        if let Some(channel) = outstanding.pop_front() {
                            acked[channel].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Ok(Frame::Response(_, Some(refused))))) => {
                        let _ = refusal.set(refused);
                        return;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_)) | None) | Err(_) => {
                        give_up(&outstanding);
                        return;
                    }
                }
            }
            wire.close().await;
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    if let Some(refused) = refusal.get() {
        let _ = stop_tx.send(true);
        return Err(refused.to_string().into());
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let published: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    let expected = published * subscribers as u64;
    // Drain: wait until every delivery arrived, or nothing moved for 2 s.
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut last = (total(), Instant::now());
    while last.0 < expected && last.1.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = total();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let _ = stop_tx.send(true);
    let mut hist = histogram();
    for r in receivers {
        if let Ok(h) = r.await {
            let _ = hist.add(h);
        }
    }
    let delivered = total();
    let (own_cpu, server_cpu) = meter.stop();
    // Per receiver: fewer than its channel's acknowledged publishes is loss; more (duplicates,
    // or unacknowledged publishes that still arrived) is reported apart, never netted against it.
    let (mut lost, mut unexpected) = (0u64, 0u64);
    for (r, count) in counts.iter().enumerate() {
        let want = acked[r % channels].load(Ordering::Relaxed);
        let got = count.load(Ordering::Relaxed);
        lost += want.saturating_sub(got);
        unexpected += got.saturating_sub(want);
    }
    let per_s = delivered as f64 / publish_secs;
    let scenario = if channels == 1 && publishers == 1 {
        "fanout"
    } else {
        "channels"
    };
    eprintln!(
        "{scenario}: {published} publishes to {channels} channel(s) x {subscribers} subscribers in {publish_secs:.2} s: {delivered} deliveries ({per_s:.0}/s), lost {lost}; latency p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms; bench CPU {own_cpu:.0}%{}",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.9) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        server_cpu_per(server_cpu, delivered, "delivery"),
    );
    Ok(json!({
        "scenario": scenario,
        "channels": channels,
        "subscribers": subscribers,
        "publishers": publishers,
        "rate": rate,
        "size": size,
        "published": published,
        "publish_failures": failures.load(Ordering::Relaxed),
        "delivered": delivered,
        "lost": lost,
        "unexpected": unexpected,
        "deliveries_per_s": per_s.round(),
        "latency_ms": latency_ms(&hist),
        "bench_cpu_percent": own_cpu.round(),
        "server_cpu_us_per_delivery": server_cpu.filter(|_| delivered > 0).map(|s| (s * 1e6 / delivered as f64 * 100.0).round() / 100.0),
    }))
}

async fn rpc(ctx: &Ctx, sockets: usize, inflight: usize) -> Result<Value, BoxError> {
    let wires = open_wires(ctx, sockets).await?;
    let pad = padding(ctx.size);
    let meter = CpuMeter::start(ctx.server_pids());
    let started = Instant::now();
    let deadline = started + ctx.duration;
    let mut tasks = Vec::new();
    for mut wire in wires {
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            // Calls unanswered when the connection ends (an error answer ends the run instead).
            let lost = |outstanding: &std::collections::VecDeque<_>| outstanding.len() as u64;
            // Answers come in order (one socket's calls are handled in order), so the oldest
            // outstanding call is nearly always the one answered.
            let mut outstanding: std::collections::VecDeque<(u64, Instant)> =
                std::collections::VecDeque::with_capacity(inflight);
            loop {
                // One clock read per refill, not three per call: the clock is a visible share
                // of the generator's CPU at this rate.
                let now = Instant::now();
                let t = now_micros();
                while outstanding.len() < inflight && now < deadline {
                    match wire.feed_invoke("echo", t, &pad, None).await {
                        Ok(cid) => outstanding.push_back((cid, now)),
                        Err(_) => return Ok((hist, lost(&outstanding))),
                    }
                }
                if outstanding.is_empty() {
                    break;
                }
                match wire.next_frame("echo").await {
                    Some(Ok(Frame::Response(rid, None))) => {
                        let Some(at) = outstanding.iter().position(|(cid, _)| *cid == rid) else {
                            continue;
                        };
                        if let Some((_, t0)) = outstanding.remove(at) {
                            let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                        }
                    }
                    Some(Ok(Frame::Response(_, Some(refused)))) => return Err(refused),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Ok((hist, lost(&outstanding))),
                }
            }
            wire.close().await;
            Ok((hist, 0))
        }));
    }
    let mut hist = histogram();
    let mut failed = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok((h, f))) => {
                let _ = hist.add(h);
                failed += f;
            }
            Ok(Err(refused)) => return Err(refused.to_string().into()),
            Err(_) => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (own_cpu, server_cpu) = meter.stop();
    let acks = hist.len();
    let per_s = acks as f64 / secs;
    eprintln!(
        "rpc: {sockets} sockets x {inflight} in flight: {acks} acks in {secs:.2} s ({per_s:.0}/s), {failed} failed; latency p50 {:.2} ms p99 {:.2} ms; bench CPU {own_cpu:.0}%{}",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        server_cpu_per(server_cpu, acks, "ack"),
    );
    Ok(json!({
        "scenario": "rpc",
        "sockets": sockets,
        "inflight": inflight,
        "size": ctx.size,
        "acks": acks,
        "failed": failed,
        "lost": failed,
        "acks_per_s": per_s.round(),
        "latency_ms": latency_ms(&hist),
        "bench_cpu_percent": own_cpu.round(),
        "server_cpu_us_per_ack": server_cpu.filter(|_| acks > 0).map(|s| (s * 1e6 / acks as f64 * 100.0).round() / 100.0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster's master does little itself: its CPU is its workers'. A shell whose child spins
    /// stands in for it.
    #[test]
    fn a_process_cpu_counts_its_live_descendants() {
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "sh -c 'while :; do :; done' & wait"])
            .spawn()
            .expect("spawn sh");
        let pid = parent.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut counted = Duration::ZERO;
        while Instant::now() < deadline {
            counted = proc_cpu(pid).unwrap_or_default();
            if counted >= Duration::from_millis(100) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let children = children(pid);
        let parent_own = stat_cpu(pid, false).unwrap_or_default();
        for child in &children {
            let _ = std::process::Command::new("kill")
                .arg(child.to_string())
                .status();
        }
        let _ = parent.kill();
        let _ = parent.wait();
        assert_eq!(children.len(), 1, "the shell's one child");
        assert!(counted >= Duration::from_millis(100), "counted {counted:?}");
        // The parent itself only waits: nearly all of it is the child's.
        assert!(parent_own < Duration::from_millis(100), "{parent_own:?}");
    }
}
