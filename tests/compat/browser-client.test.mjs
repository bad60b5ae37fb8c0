// The sc browser client (`sc-core/assets/socketcluster.js`, served at `/socketcluster.js`) under
// Node: the `ws` package stands in for the browser's WebSocket and a Map for localStorage. The same
// module runs in Chromium in the page tests. Against the reference server too: it speaks the
// official protocol.
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {WebSocket} from 'ws';
import {test, startServer, FAST_ENV, isReference, waitUntil} from './harness.mjs';

globalThis.WebSocket = WebSocket;
const store = new Map();
globalThis.localStorage = {
  getItem: (k) => (store.has(k) ? store.get(k) : null),
  setItem: (k, v) => store.set(k, String(v)),
  removeItem: (k) => store.delete(k),
};

const modulePath = new URL('../../sc-core/assets/socketcluster.js', import.meta.url);
const {create} = await import(modulePath.href);

const server = await startServer(FAST_ENV);
const sockets = [];

function open(opts = {}) {
  const socket = create({
    url: `ws://127.0.0.1:${server.port}/socketcluster/`,
    ackTimeout: 2000,
    reconnect: {initialDelay: 50, randomness: 50},
    ...opts,
  });
  sockets.push(socket);
  return socket;
}

async function connected(opts) {
  const socket = open(opts);
  await new Promise((resolve) => socket.on('connect', resolve));
  return socket;
}

function closeAll() {
  for (const s of sockets.splice(0)) s.disconnect();
  store.clear();
}

test('browser client: invoke, transmit and server invoke', async () => {
  try {
    const socket = await connected();
    assert.ok(socket.id);
    assert.deepEqual(await socket.invoke('echo', {a: [1, 'é']}), {a: [1, 'é']});
    await assert.rejects(socket.invoke('fail'), (e) => e.name === 'CustomError' && e.code === 'E_X');
    socket.transmit('note', 'one');
    socket.transmit('note', 'two');
    await waitUntil(async () => (await socket.invoke('getNotes')).length === 2);
    assert.deepEqual(await socket.invoke('getNotes'), ['one', 'two']);
    socket.procedure('double', (n) => n * 2);
    assert.deepEqual(await socket.invoke('askClient', {procedure: 'double', data: 21}), {ok: true, data: 42});
  } finally {
    closeAll();
  }
});

test('browser client: subscribe, publish, iterate, unsubscribe, subscribeFail', async () => {
  try {
    const a = await connected();
    const b = await connected();
    const channel = a.subscribe('room');
    await new Promise((resolve) => a.on('subscribe', resolve));
    assert.equal(channel.state, 'subscribed');
    const got = [];
    channel.listen((m) => got.push(m));
    const iterated = (async () => {
      const seen = [];
      for await (const m of channel) seen.push(m);
      return seen;
    })();
    await b.publish('room', {n: 1});
    b.transmitPublish('room', {n: 2});
    await waitUntil(() => got.length === 2);
    assert.deepEqual(got, [{n: 1}, {n: 2}]);
    channel.unsubscribe();
    assert.deepEqual(await iterated, [{n: 1}, {n: 2}]);
    assert.equal(channel.state, 'unsubscribed');

    const failed = new Promise((resolve) => a.on('subscribeFail', resolve));
    a.subscribe('denied/x');
    const {channel: name, error} = await failed;
    assert.equal(name, 'denied/x');
    assert.equal(error.name, 'SubDenied');
  } finally {
    closeAll();
  }
});

const noContracts = isReference && 'the Node reference has no channel contracts';
test('browser client: a channel contract refuses a publish with the same error as the official client', async () => {
  try {
    const socket = await connected();
    await assert.rejects(socket.publish('typed/9', {from: 'alice', text: 'forged'}), (err) => {
      assert.equal(err.name, 'PublishRefusedError');
      assert.equal(err.message, "Client publish to channel 'typed/9' refused: only the server publishes on typed/{id} (publish = server)");
      return true;
    });
  } finally {
    closeAll();
  }
}, {skip: noContracts});

test('browser client: the token is kept in localStorage and used by the next page load', async () => {
  try {
    const first = await connected();
    const authed = new Promise((resolve) => first.on('authenticate', resolve));
    await first.invoke('login', {user: 'ann'});
    const {authToken} = await authed;
    assert.equal(authToken.user, 'ann');
    assert.ok(localStorage.getItem('socketcluster.authToken'));
    first.disconnect();

    const second = await connected();
    const who = await second.invoke('whoami');
    assert.equal(who.authToken.user, 'ann');
    second.deauthenticate();
    assert.equal(localStorage.getItem('socketcluster.authToken'), null);
    await waitUntil(async () => (await second.invoke('whoami')).authToken === null);
  } finally {
    closeAll();
  }
});

test('browser client: reconnects after the server drops it and resubscribes', async () => {
  try {
    const a = await connected();
    const b = await connected();
    const channel = a.subscribe('news');
    await new Promise((resolve) => a.on('subscribe', resolve));
    const got = [];
    channel.listen((m) => got.push(m));
    const reconnected = new Promise((resolve) => {
      let connects = 0;
      a.on('connect', () => {
        connects += 1;
        resolve(connects);
      });
    });
    const dropped = new Promise((resolve) => a.on('disconnect', resolve));
    await a.invoke('disconnectMe', {code: 4000, reason: 'go'}).catch(() => {});
    assert.equal((await dropped).code, 4000);
    await reconnected;
    await waitUntil(() => channel.state === 'subscribed');
    await b.publish('news', 'after');
    await waitUntil(() => got.includes('after'));
    assert.deepEqual(got, ['after']);
  } finally {
    closeAll();
  }
});

test('the server serves the browser client at /socketcluster.js', async () => {
  const res = await fetch(`http://127.0.0.1:${server.port}/socketcluster.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/javascript/);
  assert.equal(await res.text(), readFileSync(modulePath, 'utf8'));
}, {skip: isReference && 'sc only: the reference serves no browser client'});

test('browser client: a page built against another contract gets contractMismatch; the same contract none', async () => {
  try {
    // Our server's handshake carries its contract's hash; the reference's carries none.
    const first = await connected();
    const served = first.contractHash;
    if (isReference) assert.equal(served, null);
    else assert.match(served, /^[0-9a-f]{16}$/);

    const stale = open({contract: {hash: 'built-against-another'}});
    const mismatches = [];
    stale.on('contractMismatch', (e) => mismatches.push(e));
    await new Promise((resolve) => stale.on('connect', resolve));
    assert.deepEqual(mismatches, [{expected: 'built-against-another', actual: served}]);

    if (!isReference) {
      const current = open({contract: {hash: served}});
      let told = false;
      current.on('contractMismatch', () => { told = true; });
      await new Promise((resolve) => current.on('connect', resolve));
      assert.equal(told, false);
      // Without a contract the socket checks nothing.
      assert.equal((await connected()).contractHash, served);
    }
  } finally {
    closeAll();
  }
});

test('the server serves the contract and the client declarations', async () => {
  const types = await fetch(`http://127.0.0.1:${server.port}/sc-types.d.ts`);
  assert.equal(types.status, 200);
  assert.match(await types.text(), /export interface Contract \{ events: Events; channels: Channels; hash: "[0-9a-f]{16}"; \}/);
  const client = await fetch(`http://127.0.0.1:${server.port}/socketcluster.d.ts`);
  assert.equal(client.status, 200);
  const declarations = new URL('../../sc-core/assets/socketcluster.d.ts', import.meta.url);
  assert.equal(await client.text(), readFileSync(declarations, 'utf8'));
}, {skip: isReference && 'sc only: the reference serves no contract'});
