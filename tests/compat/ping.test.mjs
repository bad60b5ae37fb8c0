// Plan 10-15: ping/pong, watchdogs and the rules before the handshake.
import assert from 'node:assert/strict';
import {
  test, startServer, isReference, connectedClient, rawSocket, handshakenRaw, sleep
} from './harness.mjs';

const PING_INTERVAL = 200;
const PING_TIMEOUT = 1000;
const HANDSHAKE_TIMEOUT = 600;
const PING_ENV = {
  SC_PING_INTERVAL: String(PING_INTERVAL),
  SC_PING_TIMEOUT: String(PING_TIMEOUT),
  SC_HANDSHAKE_TIMEOUT: String(HANDSHAKE_TIMEOUT),
  SC_ACK_TIMEOUT: '1000'
};

const server = await startServer(PING_ENV);

test('10 ping/pong v2: with pingInterval 200 / pingTimeout 1000 the client stays connected 3 s and the server saw pongs', async () => {
  const [client, ev] = await connectedClient(server);
  assert.equal(ev.pingTimeout, PING_TIMEOUT);
  const since = client.log.mark();
  await sleep(3000);
  assert.equal(client.state, 'open');
  assert.equal(client.log.count('disconnect'), 0);
  assert.equal(client.log.count('connect'), 1);

  const pings = client.log.count('in', {since, pred: (m) => m === ''});
  const pongsSent = client.log.count('out', {since, pred: (m) => m === ''});
  assert.ok(pings >= 10, `client saw ${pings} '' pings in 3 s`);
  assert.ok(pongsSent >= 10, `client sent ${pongsSent} '' pongs in 3 s`);
  assert.equal(client.log.count('in', {since, pred: (m) => m === '#1'}), 0, 'no v1 pings');

  const stats = await client.invoke('stats');
  assert.ok(stats.pongs >= 10, `server counted ${stats.pongs} pongs`);
  assert.ok(stats.pongs <= client.log.count('out', {pred: (m) => m === ''}), 'server counted no more pongs than were sent');
});

test('10b pings before the handshake (sc: none, pings start after the handshake reply; reference: from connection)', async () => {
  const raw = rawSocket(server);
  await raw.waitOpen();
  await sleep(450);
  const early = raw.frames().filter((f) => f === '').length;
  if (isReference) {
    assert.ok(early >= 1, `reference pinged ${early} times before the handshake`);
  } else {
    assert.equal(early, 0, 'no ping before the handshake');
  }
  const since = raw.log.mark();
  await raw.handshake();
  await raw.log.find('in', {since, pred: (f) => f === '', timeout: 2 * PING_INTERVAL + 300, what: 'a ping after the handshake'});
  // Still alive well past pingTimeout thanks to the (auto) pongs.
  await sleep(PING_TIMEOUT + 300);
  assert.equal(raw.log.count('close'), 0);
  assert.deepEqual(await raw.invoke('echo', 'alive', 2), {rid: 2, data: 'alive'});
});

test('11 protocol v1: #1/#2 exchanged, connection stable', async () => {
  const v1 = await startServer({...PING_ENV, SC_PROTOCOL_VERSION: '1'});
  const [client] = await connectedClient(v1, {protocolVersion: 1});
  const since = client.log.mark();
  await sleep(1500);
  assert.equal(client.state, 'open');
  assert.equal(client.log.count('disconnect'), 0);
  const pings = client.log.count('in', {since, pred: (m) => m === '#1'});
  const pongs = client.log.count('out', {since, pred: (m) => m === '#2'});
  assert.ok(pings >= 4, `client saw ${pings} #1 pings`);
  assert.ok(pongs >= 4, `client sent ${pongs} #2 pongs`);
  assert.equal(client.log.count('in', {pred: (m) => m === ''}), 0, "no '' pings on a v1 server");
  const stats = await client.invoke('stats');
  assert.ok(stats.pongs >= 4, `server counted ${stats.pongs} #2 pongs`);
  assert.deepEqual(await client.invoke('echo', [1]), [1]);

  // A raw v1 socket that answers #1 with #2 also stays up past pingTimeout.
  const raw = rawSocket(v1, {protocolVersion: 1});
  await raw.handshake();
  await sleep(PING_TIMEOUT + 300);
  assert.equal(raw.log.count('close'), 0);
  assert.ok(raw.frames().filter((f) => f === '#1').length >= 4);
});

test('12 raw client that stops ponging is closed with 4001 after pingTimeout', async () => {
  const raw = rawSocket(server, {autoPong: false});
  await raw.handshake();
  const started = Date.now();
  const closed = await raw.waitClose(PING_TIMEOUT + 2000);
  const elapsed = Date.now() - started;
  assert.equal(closed.code, 4001);
  assert.equal(closed.reason, '');
  assert.ok(elapsed >= PING_TIMEOUT - 300 && elapsed <= PING_TIMEOUT + 800, `closed after ${elapsed} ms`);
  assert.ok(raw.frames().filter((f) => f === '').length >= 2, 'it was pinged meanwhile');
});

test('13 server that stops pinging makes the client close 4000 and reconnect immediately', async () => {
  // Backoff of 5 s: an immediate reconnect is only possible through the 4000 rule.
  const [client, first] = await connectedClient(server, {
    autoReconnectOptions: {initialDelay: 5000, randomness: 0, multiplier: 1, maxDelay: 5000}
  });
  const started = Date.now();
  assert.equal(await client.invoke('stopPinging'), undefined);
  const disc = await client.log.next('disconnect', {timeout: PING_TIMEOUT + 2000});
  const discAt = Date.now();
  assert.equal(disc.code, 4000);
  assert.equal(disc.reason, 'Server ping timed out');
  assert.ok(discAt - started <= PING_TIMEOUT + 500, `client gave up after ${discAt - started} ms`);

  const second = await client.log.next('connect', {timeout: 2000});
  const reconnectDelay = Date.now() - discAt;
  assert.ok(reconnectDelay < 1000, `reconnected after ${reconnectDelay} ms`);
  assert.notEqual(second.id, first.id);
  assert.equal(client.state, 'open');
  assert.deepEqual(await client.invoke('echo', 'back'), 'back');
});

test('14 raw client silent after open is closed with 4005 after handshakeTimeout', async () => {
  const raw = rawSocket(server, {autoPong: false});
  await raw.waitOpen();
  const started = Date.now();
  const closed = await raw.waitClose(HANDSHAKE_TIMEOUT + 2000);
  const elapsed = Date.now() - started;
  assert.equal(closed.code, 4005);
  assert.equal(closed.reason, '');
  assert.ok(elapsed >= HANDSHAKE_TIMEOUT - 150 && elapsed <= HANDSHAKE_TIMEOUT + 600, `closed after ${elapsed} ms`);
});

test('15 event before #handshake is closed 4009; #handshake without cid is closed 4008', async () => {
  const early = rawSocket(server);
  await early.waitOpen();
  early.send({event: 'echo', data: 1, cid: 1});
  const c1 = await early.waitClose();
  assert.equal(c1.code, 4009);
  assert.equal(c1.reason, '');
  assert.deepEqual(early.packets(), [], 'no answer to the early invoke');

  const noCid = rawSocket(server);
  await noCid.waitOpen();
  noCid.send({event: '#handshake', data: {authToken: null}});
  const c2 = await noCid.waitClose();
  assert.equal(c2.code, 4008);
  assert.equal(c2.reason, '');
  assert.deepEqual(noCid.packets(), [], 'no reply to a #handshake without cid');
});

test('15b non-JSON text and a transmit before #handshake are closed 4009', async () => {
  const text = rawSocket(server);
  await text.waitOpen();
  text.send('hello there');
  assert.equal((await text.waitClose()).code, 4009);

  const transmit = rawSocket(server);
  await transmit.waitOpen();
  transmit.send({event: 'note', data: 'too early'});
  assert.equal((await transmit.waitClose()).code, 4009);

  const response = rawSocket(server);
  await response.waitOpen();
  response.send({rid: 999, data: 1});
  assert.equal((await response.waitClose()).code, 4009);
});

test('15c #authenticate without cid after the handshake is closed 4008', async () => {
  const [raw] = await handshakenRaw(server);
  raw.send({event: '#authenticate', data: 'a.b.c'});
  const closed = await raw.waitClose();
  assert.equal(closed.code, 4008);
});
