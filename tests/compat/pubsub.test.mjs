// Plan 16-22: subscribe, publish, unsubscribe, subscribe options and subscribe middleware.
import assert from 'node:assert/strict';
import {
  test, startServer, FAST_ENV, connectedClient, collectChannel, sentPackets, receivedPackets,
  waitUntil, sleep, settle, handshakenRaw
} from './harness.mjs';

const server = await startServer(FAST_ENV);

const publishesOf = (client, channel, since = 0) =>
  receivedPackets(client, since).filter((p) => p.event === '#publish' && p.data && p.data.channel === channel);

async function subscribed(client, name, options) {
  const channel = client.subscribe(name, options);
  const items = collectChannel(channel);
  await client.log.find('subscribe', {pred: (e) => e.channel === name, what: `subscribe event for ${name}`});
  return items;
}

test('16 subscribe -> subscribe event; invokePublish resolves and the channel yields the data exactly once', async () => {
  const [client] = await connectedClient(server);
  const channel = client.subscribe('room16');
  assert.equal(client.getChannelState('room16'), 'pending');
  const items = collectChannel(channel);
  const ev = await client.log.next('subscribe');
  assert.equal(ev.channel, 'room16');
  assert.deepEqual(ev.subscriptionOptions, {});
  assert.equal(client.getChannelState('room16'), 'subscribed');
  assert.equal(client.isSubscribed('room16'), true);

  const sub = sentPackets(client).filter((p) => p.event === '#subscribe');
  assert.equal(sub.length, 1);
  assert.deepEqual(sub[0].data, {channel: 'room16'});
  assert.equal(typeof sub[0].cid, 'number');

  assert.equal(await client.invokePublish('room16', 'x'), undefined);
  assert.equal(await items.next(), 'x');
  await sleep(200);
  assert.deepEqual(items.items, ['x']);
  assert.deepEqual(publishesOf(client, 'room16').map((p) => p.data), [{channel: 'room16', data: 'x'}]);

  // The publish was an invoke (cid) and its ack is {rid} without data.
  const pub = sentPackets(client).find((p) => p.event === '#publish');
  assert.deepEqual(pub.data, {channel: 'room16', data: 'x'});
  assert.equal(typeof pub.cid, 'number');
  const ack = receivedPackets(client).find((p) => p.rid === pub.cid);
  assert.deepEqual(ack, {rid: pub.cid});
});

test('17 transmitPublish from A reaches subscribers B and C once each, and A (subscribed) too', async () => {
  const [a] = await connectedClient(server);
  const [b] = await connectedClient(server);
  const [c] = await connectedClient(server);
  const onA = await subscribed(a, 'room17');
  const onB = await subscribed(b, 'room17');
  const onC = await subscribed(c, 'room17');

  const since = a.log.mark();
  await a.transmitPublish('room17', {msg: 'hello', n: 17});
  const pub = sentPackets(a, since).find((p) => p.event === '#publish');
  assert.equal('cid' in pub, false, 'transmitPublish carries no cid');

  for (const [name, items] of [['A', onA], ['B', onB], ['C', onC]]) {
    assert.deepEqual(await items.next(), {msg: 'hello', n: 17}, `${name} received`);
  }
  await sleep(200);
  for (const [name, items] of [['A', onA], ['B', onB], ['C', onC]]) {
    assert.equal(items.items.length, 1, `${name} received exactly once`);
  }
  // Nothing answers a transmitPublish.
  assert.deepEqual(receivedPackets(a, since).filter((p) => 'rid' in p), []);
});

test('17b a publisher that is not subscribed gets no delivery frame; publishing to an empty channel is acked', async () => {
  const [a] = await connectedClient(server);
  const [b] = await connectedClient(server);
  const onB = await subscribed(b, 'room17b');
  const since = a.log.mark();
  assert.equal(await a.invokePublish('room17b', 'only-b'), undefined);
  assert.equal(await onB.next(), 'only-b');
  assert.equal(await a.invokePublish('nobodyHere17b', 'void'), undefined);
  await sleep(150);
  assert.deepEqual(receivedPackets(a, since).filter((p) => p.event === '#publish'), []);
});

test('18 server-side publish reaches all subscribed clients; a server-side subscription receives client publishes', async () => {
  const [a] = await connectedClient(server);
  const [b] = await connectedClient(server);
  const onA = await subscribed(a, 'srv18');
  const onB = await subscribed(b, 'srv18');

  assert.equal(await a.invoke('serverPublish', {channel: 'srv18', data: {from: 'server'}}), undefined);
  assert.deepEqual(await onA.next(), {from: 'server'});
  assert.deepEqual(await onB.next(), {from: 'server'});
  // Same delivery frame as a client publish.
  assert.deepEqual(publishesOf(b, 'srv18')[0], {event: '#publish', data: {channel: 'srv18', data: {from: 'server'}}});

  assert.equal(await a.invoke('serverSubscribe', {channel: 'srv18in'}), undefined);
  assert.deepEqual(await a.invoke('serverReceived', {channel: 'srv18in'}), []);
  await a.invokePublish('srv18in', 'p1');
  await b.transmitPublish('srv18in', {p: 2});
  // b's socket is processed in order: once this echo is answered, its publish went through.
  assert.equal(await b.invoke('echo', 'sync'), 'sync');
  await a.invoke('serverPublish', {channel: 'srv18in', data: 'p3'});
  const received = await waitUntil(async () => {
    const list = await a.invoke('serverReceived', {channel: 'srv18in'});
    return list.length >= 3 ? list : null;
  }, {what: 'three messages on the server-side subscription'});
  assert.deepEqual(received, ['p1', {p: 2}, 'p3']);
  await sleep(150);
  assert.deepEqual(await a.invoke('serverReceived', {channel: 'srv18in'}), ['p1', {p: 2}, 'p3']);
});

test('19 unsubscribe sends #unsubscribe without cid; later publishes no longer reach the client', async () => {
  const [client] = await connectedClient(server);
  const [other] = await connectedClient(server);
  const items = await subscribed(client, 'room19');
  await other.invokePublish('room19', 'before');
  assert.equal(await items.next(), 'before');

  const since = client.log.mark();
  client.unsubscribe('room19');
  assert.equal(client.getChannelState('room19'), 'unsubscribed');
  const unsub = sentPackets(client, since).filter((p) => p.event === '#unsubscribe');
  assert.deepEqual(unsub, [{event: '#unsubscribe', data: 'room19'}]);
  const unsubEvent = await client.log.find('unsubscribe', {since, pred: (e) => e.channel === 'room19'});
  assert.equal(unsubEvent.channel, 'room19');

  // Let the server process the unsubscribe (an echo round trip on the same socket), then publish.
  assert.equal(await client.invoke('echo', 'sync'), 'sync');
  await other.invokePublish('room19', 'after');
  await other.invoke('serverPublish', {channel: 'room19', data: 'after-server'});
  await sleep(200);
  assert.deepEqual(publishesOf(client, 'room19', since), [], 'no #publish frame after unsubscribing');
  assert.deepEqual(items.items, ['before']);
  // No answer to the unsubscribe either.
  assert.deepEqual(receivedPackets(client, since).filter((p) => 'rid' in p && p.data !== 'sync'), []);
});

test('19b raw #unsubscribe with cid is acked {rid}; #subscribe without cid subscribes nothing', async () => {
  const [raw] = await handshakenRaw(server);
  const [publisher] = await connectedClient(server);
  assert.deepEqual(await raw.invoke('#subscribe', {channel: 'raw19'}, 2), {rid: 2});
  assert.deepEqual(await raw.invoke('#unsubscribe', 'raw19', 3), {rid: 3});

  raw.send({event: '#subscribe', data: {channel: 'raw19b'}});
  assert.deepEqual(await raw.invoke('echo', 'sync', 4), {rid: 4, data: 'sync'});
  const since = raw.log.mark();
  await publisher.invokePublish('raw19', 'gone');
  await publisher.invokePublish('raw19b', 'never');
  await sleep(200);
  assert.deepEqual(raw.packets(since).filter((p) => p.event === '#publish'), []);
});

test('20 subscribe options data and waitForAuth reach subscribe middleware; priority never goes on the wire', async () => {
  const [client] = await connectedClient(server);
  assert.equal(await client.invoke('lastSubscribe'), null);

  await subscribed(client, 'opts20', {data: {hint: 1}, priority: 5});
  assert.deepEqual(await client.invoke('lastSubscribe'), {channel: 'opts20', data: {hint: 1}, waitForAuth: false});
  const first = sentPackets(client).filter((p) => p.event === '#subscribe');
  assert.equal(first.length, 1);
  assert.deepEqual(first[0].data, {channel: 'opts20', data: {hint: 1}});

  const loggedIn = client.log.next('authenticate');
  await client.invoke('login', {username: 'u20'});
  await loggedIn;
  await subscribed(client, 'w20', {waitForAuth: true, priority: 9});
  assert.deepEqual(await client.invoke('lastSubscribe'), {channel: 'w20', data: null, waitForAuth: true});

  const all = sentPackets(client).filter((p) => p.event === '#subscribe');
  assert.equal(all.length, 2);
  assert.deepEqual(all[1].data, {channel: 'w20', waitForAuth: true});
  for (const p of all) {
    assert.equal(JSON.stringify(p).includes('priority'), false, 'no priority on the wire');
  }
});

test('21 waitForAuth channel stays pending until login, then subscribes automatically', async () => {
  const [client] = await connectedClient(server);
  const items = collectChannel(client.subscribe('private21', {waitForAuth: true}));
  await sleep(300);
  assert.equal(client.getChannelState('private21'), 'pending');
  assert.deepEqual(sentPackets(client).filter((p) => p.event === '#subscribe'), [], 'nothing sent while unauthenticated');
  assert.equal(await client.invoke('lastSubscribe'), null);

  await client.invoke('login', {username: 'u21'});
  const ev = await client.log.next('subscribe');
  assert.equal(ev.channel, 'private21');
  assert.deepEqual(ev.subscriptionOptions, {waitForAuth: true});
  assert.equal(client.getChannelState('private21'), 'subscribed');
  assert.deepEqual(await client.invoke('lastSubscribe'), {channel: 'private21', data: null, waitForAuth: true});

  await client.invoke('serverPublish', {channel: 'private21', data: 'secret'});
  assert.equal(await items.next(), 'secret');
});

test('22 subscribe middleware block SubDenied -> subscribeFail with that error; channel unsubscribed', async () => {
  const [client] = await connectedClient(server);
  client.subscribe('denied22', {data: {why: 'test'}});
  const fail = await client.log.next('subscribeFail');
  assert.equal(fail.channel, 'denied22');
  assert.equal(fail.error.name, 'SubDenied');
  assert.equal(fail.error.message, 'no');
  assert.deepEqual(fail.subscriptionOptions, {data: {why: 'test'}});
  assert.equal(client.getChannelState('denied22'), 'unsubscribed');
  assert.equal(client.log.count('subscribe'), 0);
  assert.deepEqual(await client.invoke('lastSubscribe'), {channel: 'denied22', data: {why: 'test'}, waitForAuth: false});

  const reply = receivedPackets(client).find((p) => p.error && p.error.name === 'SubDenied');
  assert.deepEqual(reply.error, {message: 'no', name: 'SubDenied'});

  // Delivery to a denied channel never happens.
  await client.invoke('serverPublish', {channel: 'denied22', data: 'x'});
  await settle();
  assert.deepEqual(publishesOf(client, 'denied22'), []);
});

test('22b private channel without login -> subscribeFail AuthRequired; after login it subscribes', async () => {
  const [client] = await connectedClient(server);
  client.subscribe('private22');
  const fail = await client.log.next('subscribeFail');
  assert.equal(fail.channel, 'private22');
  assert.equal(fail.error.name, 'AuthRequired');
  assert.equal(fail.error.message, 'login first');
  assert.equal(client.getChannelState('private22'), 'unsubscribed');

  await client.invoke('login', {username: 'u22'});
  await client.log.next('authenticate');
  client.subscribe('private22');
  const ev = await client.log.next('subscribe');
  assert.equal(ev.channel, 'private22');
});

test('22c malformed #subscribe is answered InvalidActionError', async () => {
  const [raw] = await handshakenRaw(server);
  const reply = await raw.invoke('#subscribe', {notChannel: 1}, 2);
  assert.deepEqual(reply, {rid: 2, error: {message: 'Subscribe channel name was malformatted', name: 'InvalidActionError'}});
  const reply2 = await raw.invoke('#publish', {data: 1}, 3);
  assert.deepEqual(reply2, {rid: 3, error: {message: 'Publish channel name was malformatted', name: 'InvalidActionError'}});
});
