// Channel history and recovery (issue 17) across process failures, with real processes: the
// compat server as a cluster (master, 2 workers, a broker, a balancer). Our browser client
// (`/socketcluster.js`, under Node) gets every number of a stream once, in order, while each
// worker is SIGKILLed in turn; an official client that opted in gets the "not recovered"
// signal when the channel's broker is SIGKILLed, never a silent gap. sc only: the Node reference
// keeps no history and runs no cluster.
import assert from 'node:assert/strict';
import {WebSocket} from 'ws';
import {
  test,
  startServer,
  FAST_ENV,
  isReference,
  waitUntil,
  connectedClient,
  connectClient,
  receivedPackets,
  sleep,
} from './harness.mjs';
import {within, range, recoverWithOfficialClient, childrenOf} from './recovery.mjs';

globalThis.WebSocket = WebSocket;
const {create} = await import(new URL('../../sc-core/assets/socketcluster.js', import.meta.url).href);

const skip = isReference && 'the Node reference keeps no channel history and runs no cluster';
const CLUSTER_ENV = {
  ...FAST_ENV,
  SC_WORKERS: '2',
  SC_BROKERS: '1',
  SC_BALANCERS: '1',
  SC_SHUTDOWN_TIMEOUT: '1000',
  RUST_LOG: 'warn',
};

const workerPid = async (socket) => (await socket.invoke('stats')).pid;

/** A `once` promise for a browser-client event. */
function next(socket, event) {
  return new Promise((resolve) => {
    const off = socket.on(event, (payload) => {
      off();
      resolve(payload);
    });
  });
}

/** An official client served by a worker other than `pid` (the balancer spreads connections). */
async function officialClientAwayFrom(server, pid) {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      const [client] = await connectedClient(server);
      if ((await workerPid(client)) !== pid) return client;
      client.disconnect();
    } catch {
      // the other worker is still starting
    }
    await sleep(100);
  }
  throw new Error(`no client on a worker other than ${pid}\n${server.describeLogs()}`);
}

test('browser client in a 2-worker cluster: every number once, in order, while each worker is SIGKILLed in turn', async () => {
  const server = await startServer(CLUSTER_ENV, {startTimeout: 30000});
  const subscriber = create({url: server.url, ackTimeout: 2000, reconnect: {initialDelay: 100, randomness: 100, maxDelay: 1000}});
  const stream = {stop: false, last: 0, client: null, lastBy: null};
  let publishing = Promise.resolve();
  try {
    await within(next(subscriber, 'connect'), 'connect', 10000);
    const channel = subscriber.subscribe('hist/cluster');
    await within(next(subscriber, 'subscribe'), 'subscribe');
    const got = [];
    channel.listen((n) => got.push(n));
    const failures = [];
    subscriber.on('recoveryFail', (e) => failures.push(e));
    const workers = childrenOf(server.pid, 'worker');
    assert.equal(workers.length, 2, `two workers: ${workers}`);

    // The publisher (an official client) publishes 1, 2, 3, ... one at a time, each acked.
    // It is moved off a worker before that worker is killed, between two publications, so
    // every number is published exactly once.
    stream.client = await officialClientAwayFrom(server, await workerPid(subscriber));
    publishing = (async () => {
      while (!stream.stop) {
        const client = stream.client;
        await client.invokePublish('hist/cluster', stream.last + 1);
        stream.last += 1;
        stream.lastBy = client;
        await sleep(3);
      }
    })();

    for (const victim of workers) {
      const target = got.length + 150;
      await waitUntil(() => got.length >= target, {timeout: 15000, what: `${target} numbers`});
      // The subscriber onto the victim (dropped until the balancer places it there).
      for (let attempt = 0; (await workerPid(subscriber)) !== victim; attempt++) {
        assert.ok(attempt < 40, `the subscriber never reached worker ${victim}`);
        const back = next(subscriber, 'connect');
        await subscriber.invoke('disconnectMe', {code: 4000, reason: 'move'}).catch(() => {});
        await within(back, 'the reconnect', 10000);
        await waitUntil(() => channel.state === 'subscribed', {timeout: 5000});
      }
      if ((await workerPid(stream.client)) === victim) {
        const moved = await officialClientAwayFrom(server, victim);
        const old = stream.client;
        stream.client = moved;
        await waitUntil(() => stream.lastBy === moved, {timeout: 5000, what: 'the moved publisher'});
        old.disconnect();
      }
      const back = next(subscriber, 'connect');
      process.kill(victim, 'SIGKILL');
      await within(back, `the reconnect after worker ${victim} was killed`, 15000);
      await waitUntil(() => channel.state === 'subscribed', {timeout: 5000});
    }
    const target = got.length + 150;
    await waitUntil(() => got.length >= target, {timeout: 15000, what: `${target} numbers`});
    stream.stop = true;
    await publishing;
    await waitUntil(() => got.length >= stream.last, {timeout: 10000, what: `all ${stream.last}`});
    await sleep(300);
    assert.deepEqual(got, range(1, stream.last));
    assert.deepEqual(failures, []);
    assert.equal(channel.position.offset, stream.last);
    // Both original workers were killed (and replaced).
    const now = childrenOf(server.pid, 'worker');
    assert.equal(now.filter((p) => workers.includes(p)).length, 0, `${workers} -> ${now}`);
  } finally {
    stream.stop = true;
    await publishing.catch(() => {});
    subscriber.disconnect();
    await server.stop();
  }
}, {skip, timeout: 120000});

/** What `client` received on `channel`, in order: numbers, and `x` for a `#recoveryFailed`. */
function received(client, channel) {
  return receivedPackets(client).flatMap((p) => {
    if (p?.event === '#publish' && p.data?.channel === channel) return [p.data.data];
    if (p?.event === '#recoveryFailed' && p.data?.channel === channel) return ['x'];
    return [];
  });
}

test('official client: a broker SIGKILLed under opted-in subscribers gives #recoveryFailed, never a silent gap', async () => {
  const server = await startServer(CLUSTER_ENV, {startTimeout: 30000});
  try {
    const [publisher] = await connectedClient(server);
    const [live] = await connectedClient(server);
    // Reconnected by hand, after the broker is back and more was published.
    const [away] = await connectedClient(server, {autoReconnect: false});
    const channels = [recoverWithOfficialClient(live, 'hist/b'), recoverWithOfficialClient(away, 'hist/b')];
    await Promise.all(channels.map((c) => within(c.listener('subscribe').once(), 'subscribe')));
    for (const n of range(1, 5)) await publisher.invokePublish('hist/b', n);
    await waitUntil(() => received(live, 'hist/b').length === 5 && received(away, 'hist/b').length === 5);

    const dropped = away.listener('disconnect').once();
    await away.invoke('disconnectMe', {code: 4000, reason: 'away'}).catch(() => {});
    await dropped;
    const [broker] = childrenOf(server.pid, 'broker');
    assert.ok(broker, 'a broker process');
    process.kill(broker, 'SIGKILL');
    // Publishing fails while the broker is away (never silently); 6 goes through once it is back.
    for (let attempt = 0; ; attempt++) {
      try {
        await publisher.invokePublish('hist/b', 6);
        break;
      } catch (e) {
        assert.ok(attempt < 100, `the broker did not come back: ${e}\n${server.describeLogs()}`);
        await sleep(100);
      }
    }
    assert.notEqual(childrenOf(server.pid, 'broker')[0], broker, 'a new broker');
    for (const n of range(7, 10)) await publisher.invokePublish('hist/b', n);

    // The live subscriber lost nothing, but its history's epoch changed: it is told so before
    // the first publication of the new epoch.
    await waitUntil(() => received(live, 'hist/b').length === 11, {what: 'the live subscriber'});
    assert.deepEqual(received(live, 'hist/b'), [...range(1, 5), 'x', ...range(6, 10)]);

    // The away one comes back asking for what followed 5 in the old epoch: not recovered, and
    // nothing of 6..10 is replayed.
    const failed = away.receiver('#recoveryFailed').once();
    const resubscribed = channels[1].listener('subscribe').once();
    connectClient(away);
    const failure = await within(failed, '#recoveryFailed', 5000);
    assert.equal(failure.channel, 'hist/b');
    // The new broker's epoch, whose top is 10's position (6..10 are its offsets 1..5).
    const epochs = receivedPackets(live)
      .filter((p) => p?.event === '#publish' && p.data?.channel === 'hist/b')
      .map((p) => p.data.epoch);
    assert.deepEqual({offset: failure.offset, epoch: failure.epoch}, {offset: 5, epoch: epochs.at(-1)});
    assert.notEqual(epochs[0], epochs.at(-1));
    await within(resubscribed, 'the resubscription');
    await publisher.invokePublish('hist/b', 11);
    await waitUntil(() => received(away, 'hist/b').length === 7 && received(live, 'hist/b').length === 12);
    await sleep(200);
    assert.deepEqual(received(away, 'hist/b'), [...range(1, 5), 'x', 11]);
    assert.deepEqual(received(live, 'hist/b'), [...range(1, 5), 'x', ...range(6, 11)]);
  } finally {
    await server.stop();
  }
}, {skip, timeout: 60000});
