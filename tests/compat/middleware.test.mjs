// Plan 23-25 and 38-39: inbound, publish and handshake middleware, origins.
import assert from 'node:assert/strict';
import {
  test, startServer, FAST_ENV, isReference, connectedClient, createClient, collectChannel,
  receivedPackets, rawSocket, rejectionOf, sleep, settle, CLIENT_ACK_TIMEOUT
} from './harness.mjs';

const server = await startServer(FAST_ENV);

async function subscribed(client, name) {
  const items = collectChannel(client.subscribe(name));
  await client.log.find('subscribe', {pred: (e) => e.channel === name, what: `subscribe event for ${name}`});
  return items;
}

test('23 invoke middleware block without error -> SilentMiddlewareBlockedError, type inbound', async () => {
  const [client] = await connectedClient(server);
  const started = Date.now();
  const err = await rejectionOf(client.invoke('blockedSilently', 1), "invoke('blockedSilently')");
  assert.ok(Date.now() - started < CLIENT_ACK_TIMEOUT, 'answered, not timed out');
  assert.equal(err.name, 'SilentMiddlewareBlockedError');
  assert.equal(err.message, 'The invoke AGAction was blocked by inbound middleware');
  assert.equal(err.type, 'inbound');
  await settle();
  const reply = receivedPackets(client).find((p) => p.error);
  assert.deepEqual(reply.error, {
    message: 'The invoke AGAction was blocked by inbound middleware',
    name: 'SilentMiddlewareBlockedError',
    type: 'inbound'
  });
});

test('23b invoke middleware block with an error -> that error; allow with new data rewrites the data', async () => {
  const [client] = await connectedClient(server);
  const err = await rejectionOf(client.invoke('blockedLoud', 1), "invoke('blockedLoud')");
  assert.equal(err.name, 'NopeError');
  assert.equal(err.message, 'You shall not pass');
  assert.deepEqual(Object.keys(err), ['name']);

  assert.equal(await client.invoke('rewriteMe', {original: true}), 'rewritten');
  assert.equal(await client.invoke('rewriteMe'), 'rewritten');
});

test('23c inbound raw middleware drops a message silently, even an invoke (client times out)', async () => {
  const [client] = await connectedClient(server);
  const started = Date.now();
  const err = await rejectionOf(client.invoke('echo', 'please dropme'), 'dropped invoke');
  const elapsed = Date.now() - started;
  assert.equal(err.name, 'TimeoutError');
  assert.equal(err.message, 'Event response for echo event timed out');
  assert.ok(elapsed >= CLIENT_ACK_TIMEOUT - 50, `timed out after ${elapsed} ms`);
  await client.transmit('note', 'dropme too');
  await client.transmit('note', 'kept');
  assert.equal(client.state, 'open');
  assert.deepEqual(await client.invoke('getNotes'), ['kept']);
});

test('24 publishIn block -> invokePublish rejects with the block error; no subscriber receives it', async () => {
  const [publisher] = await connectedClient(server);
  const [subscriber] = await connectedClient(server);
  const items = await subscribed(subscriber, 'nopub24');
  const since = subscriber.log.mark();

  const err = await rejectionOf(publisher.invokePublish('nopub24', 'x'), 'blocked invokePublish');
  assert.equal(err.name, 'PublishDenied');
  assert.equal(err.message, 'nope');

  await publisher.transmitPublish('nopub24', 'y');
  await sleep(200);
  assert.deepEqual(items.items, []);
  assert.deepEqual(receivedPackets(subscriber, since).filter((p) => p.event === '#publish'), []);

  // The channel itself works for server publishes (publishIn is about client publishes).
  await publisher.invoke('serverPublish', {channel: 'nopub24', data: 'from-server'});
  assert.equal(await items.next(), 'from-server');
});

test('25 publishOut: a blocked subscriber misses the message; a transform changes what one receives', async () => {
  const [publisher] = await connectedClient(server);
  const [blocked] = await connectedClient(server);
  const [mutated] = await connectedClient(server);
  const [plain] = await connectedClient(server);
  const onBlocked = await subscribed(blocked, 'out25');
  const onMutated = await subscribed(mutated, 'out25');
  const onPlain = await subscribed(plain, 'out25');
  assert.equal(await blocked.invoke('setFlag', {flag: 'blockOut', value: true}), undefined);
  assert.equal(await mutated.invoke('setFlag', {flag: 'mutateOut', value: true}), undefined);

  await publisher.invokePublish('out25', 'orig');
  assert.equal(await onPlain.next(), 'orig');
  assert.equal(await onMutated.next(), `mutated-for-${mutated.id}`);
  await sleep(200);
  assert.deepEqual(onBlocked.items, []);
  assert.deepEqual(receivedPackets(blocked).filter((p) => p.event === '#publish'), []);
  assert.deepEqual(onPlain.items, ['orig']);
  assert.deepEqual(onMutated.items, [`mutated-for-${mutated.id}`]);
  assert.deepEqual(
    receivedPackets(mutated).filter((p) => p.event === '#publish'),
    [{event: '#publish', data: {channel: 'out25', data: `mutated-for-${mutated.id}`}}]
  );

  // Clearing the flag restores delivery.
  await blocked.invoke('setFlag', {flag: 'blockOut', value: false});
  await publisher.invoke('serverPublish', {channel: 'out25', data: 'again'});
  assert.equal(await onBlocked.next(), 'again');
});

test('38 handshakeSC block with statusCode 4501 -> client error with name/message, connectAbort 4501, no reconnect', async () => {
  const [probe] = await connectedClient(server);
  const before = await probe.invoke('stats');
  const client = createClient(server, {query: {rejectHandshake: '1'}});
  const abort = await client.log.next('connectAbort');
  assert.equal(abort.code, 4501);
  assert.equal(abort.reason, 'HandshakeDenied: go away');
  const err = await client.log.find('error', {pred: (e) => e.error.name === 'HandshakeDenied'});
  assert.equal(err.error.message, 'go away');
  assert.equal(err.error.statusCode, 4501);
  assert.equal(client.log.count('connect'), 0);

  await sleep(600);
  assert.equal(client.state, 'closed');
  assert.equal(client.pendingReconnect, false);
  assert.equal(client.log.count('connecting'), 1, 'no reconnect attempt');
  const afterStats = await probe.invoke('stats');
  assert.equal(afterStats.handshakes, before.handshakes, 'the rejected handshake did not count');
});

test('38b raw: handshakeSC block answers {rid:1, error:{message, name, statusCode:4501}} then closes 4501', async () => {
  const raw = rawSocket(server, {query: 'rejectHandshake=1'});
  await raw.waitOpen();
  raw.send({event: '#handshake', data: {authToken: null}, cid: 1});
  const reply = await raw.packet((p) => p.rid === 1);
  assert.deepEqual(reply, {rid: 1, error: {message: 'go away', name: 'HandshakeDenied', statusCode: 4501}});
  const closed = await raw.waitClose();
  assert.equal(closed.code, 4501);
});

test('39 handshakeWS block -> client connectAbort 1006; a raw client sees HTTP 401', async () => {
  const client = createClient(server, {
    query: {rejectWs: '1'},
    autoReconnectOptions: {initialDelay: 5000, randomness: 0}
  });
  const abort = await client.log.next('connectAbort');
  assert.equal(abort.code, 1006);
  assert.equal(abort.reason, 'Socket hung up');
  assert.equal(client.log.count('connect'), 0);

  const raw = rawSocket(server, {query: 'rejectWs=1'});
  const refusal = await raw.waitHttp();
  assert.equal(refusal.status, 401);
  assert.equal(refusal.body, 'not here');
  assert.equal(raw.log.count('open'), 0);
});

test('39b restricted origins: no/bad Origin -> client connectAbort 1006 and HTTP 403; a listed origin connects', async () => {
  const restricted = await startServer({...FAST_ENV, SC_ORIGINS: 'good.example:*'});

  // The Node client sends no Origin header: rejected once origins are restricted.
  const client = createClient(restricted, {autoReconnectOptions: {initialDelay: 5000, randomness: 0}});
  const abort = await client.log.next('connectAbort');
  assert.equal(abort.code, 1006);

  const bad = rawSocket(restricted, {origin: 'http://evil.example'});
  assert.deepEqual(await bad.waitHttp(), {
    status: 403,
    body: 'Failed to authorize socket handshake - Invalid origin: http://evil.example'
  });
  const none = rawSocket(restricted);
  assert.equal((await none.waitHttp()).status, 403);

  const good = rawSocket(restricted, {origin: 'http://good.example:1234'});
  await good.waitOpen();
  const reply = await good.handshake();
  assert.equal(reply.data.isAuthenticated, false);

  const [goodClient] = await connectedClient(restricted, {wsOptions: {origin: 'https://good.example'}});
  assert.equal(await goodClient.invoke('echo', 'origin ok'), 'origin ok');
});

test('39c origin matching by whole host:port entry (sc) vs substring (reference)', async () => {
  const restricted = await startServer({...FAST_ENV, SC_ORIGINS: 'good.example:*'});
  const partial = rawSocket(restricted, {origin: 'http://od.example'});
  if (isReference) {
    await partial.waitOpen();
  } else {
    assert.equal((await partial.waitHttp()).status, 403);
  }
});
