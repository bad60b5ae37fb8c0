// Presence (issue 18) with real clients: the official client, unmodified, asks with
// `invoke('#presence', {channel})` and receives batched join/leave events through
// `receiver('#presence')`; a socket that is not subscribed is refused; our browser client
// (`/socketcluster.js`, under Node) has `channel.presence()`, `onJoin` and `onLeave`. sc only:
// the Node reference has no presence.
import assert from 'node:assert/strict';
import {WebSocket} from 'ws';
import {test, startServer, FAST_ENV, isReference, waitUntil, connectedClient, sleep} from './harness.mjs';

globalThis.WebSocket = WebSocket;
const {create} = await import(new URL('../../sc-core/assets/socketcluster.js', import.meta.url).href);

const skip = isReference && 'the Node reference has no presence';
const server = isReference ? null : await startServer(FAST_ENV);

async function subscribed(client, name) {
  client.subscribe(name);
  await client.log.find('subscribe', {pred: (e) => e.channel === name, what: `subscribe to ${name}`});
}

/** Collects the data of every `#presence` transmit the official client hands to its receiver. */
function presenceEvents(client) {
  const events = [];
  (async () => {
    for await (const data of client.receiver('#presence')) events.push(data);
  })();
  return events;
}

const sockets = (list) => new Set(list.map((e) => e.socket));

test('official client: #presence counts subscribers, users and info; join/leave events arrive batched', async () => {
  const [watcher] = await connectedClient(server);
  const events = presenceEvents(watcher);
  await subscribed(watcher, 'presjl/1');
  const [ann] = await connectedClient(server);
  await ann.invoke('login', {sub: 'ann'});
  await ann.invoke('presenceInfo', {nick: 'Ann'});
  const others = [];
  for (let i = 0; i < 8; i++) others.push((await connectedClient(server))[0]);
  await Promise.all([ann, ...others].map((c) => subscribed(c, 'presjl/1')));

  const answer = await watcher.invoke('#presence', {channel: 'presjl/1'});
  assert.equal(answer.count, 10);
  assert.equal(answer.users, 1);
  assert.equal(answer.entries.length, 10);
  const annEntry = answer.entries.find((e) => e.socket === ann.id);
  assert.deepEqual(annEntry, {socket: ann.id, user: 'ann', info: {nick: 'Ann'}});
  assert.equal(answer.entries.find((e) => e.socket === watcher.id).user, null);

  // Every join (the watcher's own included) arrives, in fewer events than joins.
  const everyone = new Set([watcher.id, ann.id, ...others.map((c) => c.id)]);
  await waitUntil(() => events.flatMap((e) => e.joins).length >= everyone.size, {what: 'every join'});
  const joined = sockets(events.flatMap((e) => e.joins));
  assert.deepEqual(joined, everyone);
  assert.ok(events.length < everyone.size, `${events.length} events for ${everyone.size} joins`);
  for (const e of events) assert.equal(e.channel, 'presjl/1');

  // Leaves: an unsubscribe and a disconnect.
  const before = events.length;
  const leaving = new Set([ann.id, others[0].id]);
  ann.unsubscribe('presjl/1');
  others[0].disconnect();
  await waitUntil(() => events.slice(before).flatMap((e) => e.leaves).length >= 2, {what: 'two leaves'});
  assert.deepEqual(sockets(events.slice(before).flatMap((e) => e.leaves)), leaving);
  assert.equal((await watcher.invoke('#presence', {channel: 'presjl/1'})).count, 8);
}, {skip});

test('official client: a socket that is not subscribed may not ask; a channel without presence says so', async () => {
  const [member] = await connectedClient(server);
  await subscribed(member, 'pres/2');
  const [stranger] = await connectedClient(server);
  await assert.rejects(stranger.invoke('#presence', {channel: 'pres/2'}), (e) => {
    assert.equal(e.name, 'InvalidActionError');
    assert.match(e.message, /only its subscribers may/);
    return true;
  });
  await assert.rejects(stranger.invoke('#presence', {channel: 'plain-channel'}), (e) => {
    assert.equal(e.name, 'InvalidActionError');
    assert.match(e.message, /has no presence/);
    return true;
  });
  assert.equal((await member.invoke('#presence', {channel: 'pres/2'})).count, 1);
}, {skip});

test('browser client: channel.presence(), onJoin and onLeave', async () => {
  const url = `ws://127.0.0.1:${server.port}/socketcluster/`;
  const socket = create({url, ackTimeout: 2000});
  const other = create({url, ackTimeout: 2000});
  try {
    await Promise.all([socket, other].map((s) => new Promise((resolve) => s.on('connect', resolve))));
    const room = socket.subscribe('presjl/3');
    await new Promise((resolve) => socket.on('subscribe', resolve));
    const joins = [];
    const leaves = [];
    room.onJoin((entry) => joins.push(entry));
    room.onLeave((entry) => leaves.push(entry));
    const theirs = other.subscribe('presjl/3');
    await waitUntil(() => joins.some((e) => e.socket === other.id), {what: 'the other socket joining'});
    const answer = await room.presence();
    assert.equal(answer.count, 2);
    assert.deepEqual(sockets(answer.entries), new Set([socket.id, other.id]));
    theirs.unsubscribe();
    await waitUntil(() => leaves.some((e) => e.socket === other.id), {what: 'the other socket leaving'});
    assert.equal((await room.presence()).count, 1);
    // A channel this socket is not on: refused, with the server's error.
    await assert.rejects(other.invoke('#presence', {channel: 'pres/9'}), /only its subscribers may/);
  } finally {
    socket.disconnect();
    other.disconnect();
    await sleep(50);
  }
}, {skip});
