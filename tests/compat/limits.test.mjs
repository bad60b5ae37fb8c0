// Plan 26-27 and 41: allowClientPublish, socketChannelLimit, maxPayload, malformed input.
import assert from 'node:assert/strict';
import {
  test, startServer, FAST_ENV, connectedClient, collectChannel, handshakenRaw, rejectionOf,
  receivedPackets, sleep, isReference
} from './harness.mjs';

// One restricted server for 26, 27 and 41; the defaults are checked on a default server.
const limited = await startServer({
  ...FAST_ENV,
  SC_ALLOW_CLIENT_PUBLISH: 'false',
  SC_SOCKET_CHANNEL_LIMIT: '2',
  SC_MAX_PAYLOAD: '1024'
});
const defaults = await startServer(FAST_ENV);

test('26 allowClientPublish false -> invokePublish rejects InvalidActionError "Client publish feature is disabled"', async () => {
  const [publisher] = await connectedClient(limited);
  const [subscriber] = await connectedClient(limited);
  const items = collectChannel(subscriber.subscribe('pub26'));
  await subscriber.log.next('subscribe');

  const err = await rejectionOf(publisher.invokePublish('pub26', 'x'), 'invokePublish');
  assert.equal(err.name, 'InvalidActionError');
  assert.equal(err.message, 'Client publish feature is disabled');
  await publisher.transmitPublish('pub26', 'y');
  assert.equal(await publisher.invoke('echo', 'sync'), 'sync');
  await sleep(150);
  assert.deepEqual(items.items, []);
  assert.equal(publisher.state, 'open');

  // Server-side publishing is unaffected.
  await publisher.invoke('serverPublish', {channel: 'pub26', data: 'from-server'});
  assert.equal(await items.next(), 'from-server');
});

test('27 socketChannelLimit 2 -> third subscribe fails with BrokerError naming the limit', async () => {
  const [client] = await connectedClient(limited);
  client.subscribe('c1');
  client.subscribe('c2');
  await client.log.next('subscribe');
  await client.log.next('subscribe');
  client.subscribe('c3');
  const fail = await client.log.next('subscribeFail');
  assert.equal(fail.channel, 'c3');
  assert.equal(fail.error.name, 'BrokerError');
  assert.equal(
    fail.error.message,
    `Failed to subscribe socket to the c3 channel - InvalidActionError: Socket ${client.id} tried to exceed the channel subscription limit of 2`
  );
  assert.equal(client.getChannelState('c3'), 'unsubscribed');
  assert.equal(client.getChannelState('c1'), 'subscribed');
  assert.equal(client.getChannelState('c2'), 'subscribed');

  // Freeing a slot makes room again.
  client.unsubscribe('c1');
  client.subscribe('c3');
  const ok = await client.log.next('subscribe');
  assert.equal(ok.channel, 'c3');
});

test('27b socketChannelLimit defaults to 1000', async () => {
  const [raw] = await handshakenRaw(defaults);
  const batch = [];
  for (let i = 0; i < 1001; i++) {
    batch.push({event: '#subscribe', data: {channel: `many-${i}`}, cid: 2 + i});
  }
  raw.send(batch);
  const last = await raw.packet((p) => p.rid === 1002, {timeout: 10000, what: 'reply to the 1001st subscribe'});
  const replies = raw.packets().filter((p) => typeof p.rid === 'number' && p.rid >= 2 && p.rid <= 1002);
  assert.equal(replies.length, 1001);
  assert.deepEqual(replies.filter((p) => p.error), [last]);
  assert.equal(last.error.name, 'BrokerError');
  assert.match(last.error.message, /the many-1000 channel - InvalidActionError: Socket .+ tried to exceed the channel subscription limit of 1000$/);
});

test('41 frame larger than maxPayload closes 1009; other sockets unaffected', async () => {
  const [big, bigFirst] = await connectedClient(limited, {autoReconnectOptions: {initialDelay: 300, randomness: 0}});
  const [bystander] = await connectedClient(limited);

  assert.equal(await big.invoke('echo', 'y'.repeat(500)), 'y'.repeat(500));
  const since = big.log.mark();
  const err = await rejectionOf(big.invoke('echo', 'x'.repeat(2000)), 'oversized invoke');
  assert.equal(err.name, 'BadConnectionError');
  const disc = await big.log.find('disconnect', {since});
  assert.equal(disc.code, 1009);

  assert.equal(await bystander.invoke('echo', 'fine'), 'fine');
  assert.equal(bystander.state, 'open');
  assert.equal(bystander.log.count('disconnect'), 0);

  // 1009 is a temporary failure: the client comes back (with backoff).
  const again = await big.log.find('connect', {since, timeout: 3000});
  assert.notEqual(again.id, bigFirst.id);
});

test('41b maxPayload defaults to 1 MiB', async () => {
  const [raw] = await handshakenRaw(defaults);
  const nearly = 'a'.repeat(1024 * 1024 - 200);
  const reply = await raw.invoke('echo', nearly, 2, {timeout: 5000});
  assert.equal(reply.data.length, nearly.length);

  raw.send({event: 'echo', data: 'b'.repeat(1024 * 1024 + 100), cid: 3});
  const closed = await raw.waitClose(5000);
  assert.equal(closed.code, 1009);
  assert.deepEqual(raw.packets().filter((p) => p.rid === 3), []);
});

test('41c malformed JSON and odd packets after the handshake are ignored; the socket stays open', async () => {
  const [raw] = await handshakenRaw(defaults);
  for (const junk of ['{not json', 'plain text', '{"event":42}', '{"rid":999,"data":1}', '[1,"x",null]', '{}', 'null', '#2']) {
    raw.send(junk);
  }
  const reply = await raw.invoke('echo', 'survived', 2);
  assert.deepEqual(reply, {rid: 2, data: 'survived'});
  assert.equal(raw.log.count('close'), 0);
  assert.deepEqual(raw.packets().filter((p) => p.rid !== 1 && p.rid !== 2), []);

  const [client] = await connectedClient(defaults);
  const since = client.log.mark();
  client.send('{broken');
  client.send('not json at all');
  assert.equal(await client.invoke('echo', 'ok'), 'ok');
  assert.equal(client.log.count('disconnect'), 0);
  assert.deepEqual(receivedPackets(client, since).filter((p) => p.data !== 'ok'), []);
});

test('41d batches: an array of packets in one frame is processed in order', async () => {
  const [raw] = await handshakenRaw(defaults);
  raw.send([
    {event: 'note', data: 1},
    {event: 'echo', data: 'first', cid: 2},
    {event: 'note', data: 2},
    {event: 'getNotes', cid: 3}
  ]);
  const notes = await raw.packet((p) => p.rid === 3);
  assert.deepEqual(notes, {rid: 3, data: [1, 2]});
  const ids = raw.packets().filter((p) => p.rid === 2 || p.rid === 3).map((p) => p.rid);
  assert.deepEqual(ids, [2, 3]);
});

test('41e a string with a lone UTF-16 surrogate is answered, never dropped (sc: an error; the reference echoes it)', async () => {
  // Valid for JSON.parse, which the client uses; serde_json refuses it and Rust strings cannot
  // hold it, so sc answers the invoke with an error instead of letting it time out.
  const [client] = await connectedClient(defaults);
  if (isReference) {
    assert.equal(await client.invoke('echo', '\ud834'), '\ud834');
  } else {
    const err = await rejectionOf(client.invoke('echo', '\ud834'), 'invoke');
    assert.equal(err.name, 'InvalidMessageError');
    assert.match(err.message, /lone UTF-16 surrogate \(\\ud834\)/);
  }
  assert.equal(await client.invoke('echo', 'after'), 'after');
  assert.equal(client.state, 'open');
});
