// Plan 36-37 and 40: kickOut, server-side disconnects and reconnect behaviour, offline buffering.
import assert from 'node:assert/strict';
import {
  test, startServer, FAST_ENV, connectedClient, collectChannel, sentPackets, receivedPackets,
  sleep, settle
} from './harness.mjs';

const server = await startServer(FAST_ENV);

async function subscribed(client, name) {
  const items = collectChannel(client.subscribe(name));
  await client.log.find('subscribe', {pred: (e) => e.channel === name, what: `subscribe event for ${name}`});
  return items;
}

test('36 server kickOut(room, bye) -> client kickOut event, channel unsubscribed, no further messages', async () => {
  const [client] = await connectedClient(server);
  const items = await subscribed(client, 'room36');
  const other = await subscribed(client, 'stay36');
  await client.invoke('serverPublish', {channel: 'room36', data: 'before'});
  assert.equal(await items.next(), 'before');

  const since = client.log.mark();
  assert.equal(await client.invoke('kick', {channel: 'room36', message: 'bye'}), undefined);
  const kick = await client.log.find('kickOut', {since});
  assert.deepEqual(kick, {channel: 'room36', message: 'bye'});
  assert.equal(client.getChannelState('room36'), 'unsubscribed');
  assert.equal(client.getChannelState('stay36'), 'subscribed');
  await settle();
  assert.deepEqual(
    receivedPackets(client, since).filter((p) => p.event === '#kickOut'),
    [{event: '#kickOut', data: {channel: 'room36', message: 'bye'}}]
  );

  await client.invoke('serverPublish', {channel: 'room36', data: 'after'});
  await client.invoke('serverPublish', {channel: 'stay36', data: 'still'});
  assert.equal(await other.next(), 'still');
  await sleep(150);
  assert.deepEqual(
    receivedPackets(client, since).filter((p) => p.event === '#publish' && p.data.channel === 'room36'),
    [],
    'the server unsubscribed the socket itself'
  );
  assert.deepEqual(items.items, ['before']);
  // The client sends nothing back for a kickOut.
  assert.deepEqual(sentPackets(client, since).filter((p) => p.event === '#unsubscribe'), []);
});

test('37 server disconnect(4321, why) -> client disconnect {4321, why} and reconnect', async () => {
  const [client, first] = await connectedClient(server, {autoReconnectOptions: {initialDelay: 200, randomness: 0}});
  const since = client.log.mark();
  assert.equal(await client.invoke('disconnectMe', {code: 4321, reason: 'why'}), undefined);
  const disc = await client.log.find('disconnect', {since});
  assert.deepEqual(disc, {code: 4321, reason: 'why'});
  const err = await client.log.find('error', {since, pred: (e) => e.error.name === 'SocketProtocolError'});
  assert.equal(err.error.code, 4321);
  const again = await client.log.find('connect', {since, timeout: 3000});
  assert.notEqual(again.id, first.id);
  assert.equal(client.state, 'open');
});

test('37b server disconnect with 1000 or 4500 -> no reconnect', async () => {
  for (const code of [1000, 4500]) {
    const [client] = await connectedClient(server, {autoReconnectOptions: {initialDelay: 100, randomness: 0}});
    const since = client.log.mark();
    assert.equal(await client.invoke('disconnectMe', {code, reason: `bye ${code}`}), undefined);
    const disc = await client.log.find('disconnect', {since});
    assert.deepEqual(disc, {code, reason: `bye ${code}`});
    await sleep(500);
    assert.equal(client.state, 'closed', `code ${code}: stays closed`);
    assert.equal(client.pendingReconnect, false);
    assert.equal(client.log.count('connecting', {since}), 0, `code ${code}: no reconnect attempt`);
    if (code === 1000) {
      assert.equal(client.log.count('error', {since}), 0, '1000 is not an error');
    }
  }
});

test('40 invokes and transmits issued while disconnected are delivered in order after reconnect; subscriptions restored', async () => {
  const [client, first] = await connectedClient(server, {
    ackTimeout: 4000,
    autoReconnectOptions: {initialDelay: 400, randomness: 0}
  });
  const items = await subscribed(client, 'room40');
  const since = client.log.mark();

  await client.invoke('disconnectMe', {code: 4100, reason: 'drop'});
  const disc = await client.log.find('disconnect', {since});
  assert.equal(disc.code, 4100);
  assert.notEqual(client.state, 'open');
  assert.equal(client.getChannelState('room40'), 'pending');

  const offline = client.log.mark();
  const order = [];
  client.transmit('note', 'a');
  const e1 = client.invoke('echo', 1).then((v) => order.push(['echo', v]));
  client.transmit('note', 'b');
  const e2 = client.invoke('echo', 2).then((v) => order.push(['echo', v]));
  client.transmit('note', 'c');
  assert.deepEqual(sentPackets(client, offline), [], 'nothing sent while disconnected');

  await Promise.all([e1, e2]);
  assert.deepEqual(order, [['echo', 1], ['echo', 2]]);
  const second = await client.log.find('connect', {since: offline});
  assert.notEqual(second.id, first.id);
  assert.deepEqual(await client.invoke('getNotes'), ['a', 'b', 'c']);

  // On the wire after the reconnect: handshake, resubscribe, then the buffered calls in order.
  const sequence = sentPackets(client, offline)
    .filter((p) => p.event)
    .map((p) => (p.event === '#subscribe' ? `#subscribe:${p.data.channel}` : p.event === 'note' ? `note:${p.data}` : p.event === 'echo' ? `echo:${p.data}` : p.event));
  assert.deepEqual(sequence.slice(0, 7), ['#handshake', '#subscribe:room40', 'note:a', 'echo:1', 'note:b', 'echo:2', 'note:c']);

  // The subscription was restored on the new socket.
  await client.log.find('subscribe', {since: offline, pred: (e) => e.channel === 'room40'});
  assert.equal(client.getChannelState('room40'), 'subscribed');
  await client.invoke('serverPublish', {channel: 'room40', data: 'after-reconnect'});
  assert.equal(await items.next(), 'after-reconnect');
});

test('40b invoking on a client closed by disconnect() reconnects it and delivers', async () => {
  const [client] = await connectedClient(server);
  client.disconnect();
  assert.equal(client.state, 'closed');
  const since = client.log.mark();
  assert.equal(await client.invoke('echo', 'auto'), 'auto');
  await client.log.find('connect', {since});
  assert.equal(client.state, 'open');
});
