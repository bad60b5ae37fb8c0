// Channel contracts with the official client (sc only: the Node reference has none). A declared
// channel refuses what its declaration does not allow; a refused publish never reaches the
// subscriber listening in each test; an allowed one arrives exactly once; a guard's rewrite is
// what subscribers get; channel names are bounded (max_channel_name).
import assert from 'node:assert/strict';
import {test as harnessTest, startServer, FAST_ENV, TARGET, connectedClient, collectChannel, rejectionOf, sleep} from './harness.mjs';

const skip = TARGET === 'reference' ? 'the Node reference has no channel contracts' : false;
const server = skip ? null : await startServer({...FAST_ENV, SC_MAX_CHANNEL_NAME: '64'});
const test = (name, fn) => harnessTest(name, fn, {skip});

async function listener(name) {
  const [client] = await connectedClient(server);
  await client.invoke('login', {username: 'listener'});
  const channel = client.subscribe(name);
  const items = collectChannel(channel);
  await client.log.find('subscribe', {pred: (e) => e.channel === name, what: `subscribe ${name}`});
  return items;
}

async function nothingArrives(items) {
  await sleep(250);
  assert.deepEqual(items.items, [], 'a refused publication was delivered');
}

test('a typed channel refuses every client publish by default; the server still publishes', async () => {
  const items = await listener('typed/1');
  const [guest] = await connectedClient(server);
  const err = await rejectionOf(guest.invokePublish('typed/1', {from: 'alice', text: 'forged'}), 'guest publish');
  assert.equal(err.name, 'PublishRefusedError');
  assert.equal(err.message, "Client publish to channel 'typed/1' refused: only the server publishes on typed/{id} (publish = server)");
  await nothingArrives(items);
  await guest.invoke('serverPublish', {channel: 'typed/1', data: {from: 'server', text: 'hi'}});
  assert.deepEqual(await items.next(), {from: 'server', text: 'hi'});
});

test('publish = authenticated: guests and ill-typed messages are refused, a member publishes once', async () => {
  const items = await listener('members/2');
  const [guest] = await connectedClient(server);
  const err = await rejectionOf(guest.invokePublish('members/2', {from: 'x', text: 'y'}), 'guest');
  assert.equal(err.name, 'PublishRefusedError');
  assert.match(err.message, /requires an authenticated socket \(publish = authenticated\)$/);

  const [member] = await connectedClient(server);
  await member.invoke('login', {username: 'ann'});
  for (const bad of [{not: 'a ChatMsg'}, 'plain text', 'x'.repeat(200 * 1024)]) {
    const e = await rejectionOf(member.invokePublish('members/2', bad), 'ill-typed');
    assert.equal(e.name, 'InvalidArgumentsError');
    assert.match(e.message, /^Client publish to channel 'members\/2' refused: the message is not a ChatMsg: /);
  }
  await nothingArrives(items);
  await member.invokePublish('members/2', {from: 'ann', text: 'hello', isAdmin: true});
  assert.deepEqual(await items.next(), {from: 'ann', text: 'hello'});
  await sleep(200);
  assert.equal(items.items.length, 1, 'delivered exactly once');
});

test('a publish guard rewrites a forged sender', async () => {
  const items = await listener('stamped/3');
  const [bob] = await connectedClient(server);
  await bob.invoke('login', {username: 'bob'});
  await bob.invokePublish('stamped/3', {from: 'ann', text: 'wire me $500'});
  assert.deepEqual(await items.next(), {from: 'bob', text: 'wire me $500'});
  const [guest] = await connectedClient(server);
  const err = await rejectionOf(guest.invokePublish('stamped/3', {from: 'ann', text: 'x'}), 'guest');
  assert.equal(err.name, 'AuthError');
  assert.match(err.message, /^Client publish to channel 'stamped\/3' refused: /);
  await sleep(200);
  assert.equal(items.items.length, 1);
});

test('a publish guard refuses a forged sender; an own-name publish is delivered once', async () => {
  const items = await listener('signed/4');
  const [bob] = await connectedClient(server);
  await bob.invoke('login', {username: 'bob'});
  const err = await rejectionOf(bob.invokePublish('signed/4', {from: 'ann', text: 'wire me $500'}), 'forged');
  assert.equal(err.name, 'ForgedSenderError');
  await nothingArrives(items);
  await bob.invokePublish('signed/4', {from: 'bob', text: 'hi', extra: 'dropped'});
  assert.deepEqual(await items.next(), {from: 'bob', text: 'hi'});
  await sleep(200);
  assert.equal(items.items.length, 1);
});

test('an over-long channel name is refused on subscribe and publish', async () => {
  const [client] = await connectedClient(server);
  const long = 'n'.repeat(65);
  const expected = 'Channel name is 65 bytes long; the server accepts at most 64 (max_channel_name)';
  const err = await rejectionOf(client.invokePublish(long, 1), 'publish');
  assert.equal(err.name, 'InvalidActionError');
  assert.equal(err.message, expected);
  client.subscribe(long);
  const fail = await client.log.find('subscribeFail', {pred: (e) => e.channel === long, what: 'subscribeFail'});
  assert.equal(fail.error.message, expected);
});
