// Renders bench/results/latest.jsonl (written by bench/run.sh) as bench/RESULTS.md: sc, the
// minimal server (the ceiling) and the Node reference side by side, with sc's ratio to each and
// the targets of each scenario.
import fs from 'node:fs';
import os from 'node:os';

// RUN_DATE: when the runs were made (default: now).
const [file, command] = process.argv.slice(2);
const rows = fs.readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const get = (name, label) => rows.find((r) => r.name === name && r.result.label === label)?.result;

const fmt = (v, digits = 0) =>
  v == null || Number.isNaN(v) ? 'n/a' : Number(v).toLocaleString('en-US', { maximumFractionDigits: digits });

// [scenario, metric, pick, higher is better, target ratio vs Node, target share of the minimal
// server (issue 19), absolute bound for sc]
const perHandshake = (r) => (r.server_cpu_s != null && r.sockets ? (r.server_cpu_s * 1e6) / r.sockets : null);
const specs = [
  ['fanout-max', 'deliveries/s (1000 subscribers, 64 B, max rate)', (r) => r.deliveries_per_s, true, 15, 0.9],
  ['fanout-max', 'server CPU µs per delivery', (r) => r.server_cpu_us_per_delivery, false, null, null],
  ['fanout-20', 'p99 latency ms (20 publishes/s to 1000 subscribers)', (r) => r.latency_ms?.p99, false, 10, 1 / 1.05],
  ['rpc', 'acks/s (100 sockets x 10 in flight, 64 B)', (r) => r.acks_per_s, true, 10, 0.8],
  ['rpc', 'server CPU µs per ack', (r) => r.server_cpu_us_per_ack, false, null, null, 1.2],
  ['connect', 'handshakes/s (5000 sockets, 64 at a time)', (r) => r.handshakes_per_s, true, 10, null],
  ['connect', 'server CPU µs per handshake', perHandshake, false, null, null],
  ['storm', 'handshakes/s (10,000 sockets at once)', (r) => r.handshakes_per_s, true, null, 0.8],
  ['storm', 'handshake p99 ms (10,000 sockets at once)', (r) => r.handshake_ms?.p99, false, null, null, 200],
  ['idle-memory', 'server RSS bytes per idle socket (19,000 sockets)', (r) => r.server_rss_bytes_per_socket, false, null, null, 3000],
];

// How sc compares with a peer: > 1 is better for sc, whatever the direction of the metric.
const ratioOf = (a, b, higher) => (a != null && b != null && a > 0 && b > 0 ? (higher ? a / b : b / a) : null);

const lines = [];
lines.push('# Benchmark results', '');
lines.push(`Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}; Node ${process.version}.`);
lines.push(`Date: ${process.env.RUN_DATE ?? new Date().toISOString()}. Command: \`${command}\`.`, '');
const { SERVER_CPUS, BENCH_CPUS } = process.env;
const placement =
  SERVER_CPUS || BENCH_CPUS
    ? `Server pinned to CPUs ${SERVER_CPUS || 'any'}, load generator to CPUs ${BENCH_CPUS || 'any'}`
    : 'Server and load generator share the machine';
lines.push(
  `${placement}; each scenario runs on a freshly started server. ` +
    'sc runs with its per-socket message rate limit off (`SC_MESSAGE_RATE_LIMIT=0`), as the Node reference has none. ' +
    'The minimal server (bench/peers/minimal) knows just enough protocol for these scenarios (no pings, auth or limits): ' +
    'it is the ceiling of this machine and load generator. "sc vs minimal" is sc\'s share of it (1× = as good; ' +
    'for latency, CPU and memory the inverse ratio, so above 1 is always better for sc).',
  '',
);
lines.push(
  '| scenario | sc | minimal server | Node reference | sc vs minimal | target | sc vs Node | target | met |',
  '|---|---|---|---|---|---|---|---|---|',
);
for (const [name, metric, pick, higher, nodeTarget, minimalTarget, bound] of specs) {
  const sc = get(name, 'sc');
  const a = sc ? pick(sc) : null;
  const minimal = get(name, 'minimal');
  const node = get(name, 'node');
  const m = minimal ? pick(minimal) : null;
  const b = node ? pick(node) : null;
  const vsMinimal = ratioOf(a, m, higher);
  const vsNode = ratioOf(a, b, higher);
  let nodeText = 'n/a';
  if (vsNode != null && vsNode >= 1) nodeText = `${fmt(vsNode, 2)}× ${higher ? 'more' : 'less'} (better)`;
  if (vsNode != null && vsNode < 1) nodeText = `${fmt(1 / vsNode, 2)}× ${higher ? 'fewer' : 'more'} (worse)`;
  const checks = [];
  const targets = [];
  if (minimalTarget != null) {
    targets.push(`≥ ${fmt(minimalTarget, 2)}× minimal`);
    if (vsMinimal != null) checks.push(vsMinimal >= minimalTarget);
  }
  if (nodeTarget != null) {
    if (vsNode != null) checks.push(vsNode >= nodeTarget);
  }
  if (bound != null) {
    targets.push(`${higher ? '≥' : '≤'} ${fmt(bound, 2)}`);
    if (a != null) checks.push(higher ? a >= bound : a <= bound);
  }
  const met = checks.length === 0 ? '-' : checks.every(Boolean) ? 'yes' : 'no';
  lines.push(
    `| ${metric} | ${fmt(a, 2)} | ${fmt(m, 2)} | ${fmt(b, 2)} | ${vsMinimal == null ? 'n/a' : `${fmt(vsMinimal, 2)}×`} | ` +
      `${targets.join(', ') || '-'} | ${nodeText} | ${nodeTarget == null ? '-' : `≥ ${nodeTarget}×`} | ${met} |`,
  );
}
const lost = rows.filter((r) => (r.result.lost ?? 0) > 0).map((r) => `${r.name} (${r.result.label}): ${r.result.lost}`);
lines.push('', `Loss: ${lost.length ? lost.join(', ') : 'none in any run'}.`, '');

const single = get('deploy-single', 'sc');
const cluster = get('deploy-cluster', 'sc');
const redis = get('deploy-redis-2-nodes', 'sc');
lines.push('## sc deployments (one channel, 1000 subscribers, 8 publishing sockets x 16 in flight)', '');
lines.push(
  'Server CPU is summed over all of the server\'s processes (the cluster\'s master, workers and broker; both nodes and the Redis server), the load generator\'s excluded. Target (issue 19): at most 30% more per delivery than the single process.',
  '',
);
lines.push(
  '| deployment | deliveries/s | vs single process | server CPU µs per delivery | more than single process | p99 ms |',
  '|---|---|---|---|---|---|',
);
const dep = (label, r) => {
  if (!r) return;
  const ratio = single && r.deliveries_per_s ? r.deliveries_per_s / single.deliveries_per_s : null;
  const cpu = r.server_cpu_us_per_delivery;
  const base = single?.server_cpu_us_per_delivery;
  const extra = cpu && base && r !== single ? `${fmt((cpu / base - 1) * 100, 0)}%` : r === single ? '-' : 'n/a';
  lines.push(
    `| ${label} | ${fmt(r.deliveries_per_s)} | ${ratio == null ? 'n/a' : `${fmt(ratio * 100, 0)}%`} | ${fmt(cpu, 2)} | ${extra} | ${fmt(r.latency_ms?.p99, 1)} |`,
  );
};
dep('single process (in-process broker)', single);
dep('2 workers + 1 broker process', cluster);
dep('2 nodes through Redis (subscribers split)', redis);
lines.push('');
const history = get('fanout-max-history', 'sc');
const plain = get('fanout-max', 'sc');
if (plain && history) {
  const a = plain.server_cpu_us_per_delivery;
  const b = history.server_cpu_us_per_delivery;
  const extra = a && b ? (b / a - 1) * 100 : null;
  lines.push('## History (fan-out, 1000 subscribers, every channel keeping 100 publications)', '');
  lines.push('| | deliveries/s | server µs CPU per delivery | p99 ms |', '|---|---|---|---|');
  lines.push(`| without history | ${fmt(plain.deliveries_per_s)} | ${fmt(a, 2)} | ${fmt(plain.latency_ms?.p99, 1)} |`);
  lines.push(`| SC_HISTORY_SIZE=100 | ${fmt(history.deliveries_per_s)} | ${fmt(b, 2)} | ${fmt(history.latency_ms?.p99, 1)} |`);
  lines.push('', `History adds ${extra == null ? 'n/a' : `${fmt(extra, 0)}%`} server CPU per delivery (target: at most 20%).`, '');
}
const soak = get('soak', 'sc');
const soakPresence = get('soak-presence', 'sc');
const perCycle = (r) => (r?.server_cpu_s != null && r.cycles ? (r.server_cpu_s * 1e6) / r.cycles : null);
if (soak && soakPresence) {
  const a = perCycle(soak);
  const b = perCycle(soakPresence);
  const extra = a && b ? (b / a - 1) * 100 : null;
  lines.push('## Presence (churn: connect, subscribe to 1-3 channels, publish, invoke, unsubscribe, disconnect)', '');
  lines.push('| | cycles | server µs CPU per cycle | errors |', '|---|---|---|---|');
  lines.push(`| without presence | ${fmt(soak.cycles)} | ${fmt(a, 0)} | ${fmt(soak.errors)} |`);
  lines.push(`| SC_PRESENCE=1 (every channel) | ${fmt(soakPresence.cycles)} | ${fmt(b, 0)} | ${fmt(soakPresence.errors)} |`);
  lines.push('', `Presence adds ${extra == null ? 'n/a' : `${fmt(extra, 0)}%`} server CPU per churn cycle (its joins and leaves; deliveries do not change).`, '');
}
for (const r of rows) {
  lines.push(`<details><summary>${r.name} (${r.result.label})</summary>\n\n\`\`\`json\n${JSON.stringify(r.result)}\n\`\`\`\n</details>`);
}
console.log(lines.join('\n'));
