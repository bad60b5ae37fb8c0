// Plan 3-9: client invoke/transmit and server invoke.
import assert from 'node:assert/strict';
import {
  test, startServer, FAST_ENV, isReference, connectedClient, handshakenRaw, receivedPackets,
  rejectionOf, sleep, settle, CLIENT_ACK_TIMEOUT
} from './harness.mjs';

const server = await startServer(FAST_ENV);
const SERVER_ACK_TIMEOUT = Number(FAST_ENV.SC_ACK_TIMEOUT);

test('03 invoke echo resolves to the same value', async () => {
  const [client] = await connectedClient(server);
  const value = {x: [1, 2], nested: {s: 'é✓', n: null, b: true, f: 1.5}};
  const started = Date.now();
  const result = await client.invoke('echo', value);
  assert.deepEqual(result, value);
  assert.ok(Date.now() - started < CLIENT_ACK_TIMEOUT);
  assert.deepEqual(await client.invoke('echo', {x: [1, 2]}), {x: [1, 2]});
  assert.equal(await client.invoke('echo', 'plain'), 'plain');
  assert.equal(await client.invoke('echo', 0), 0);
});

test('03b raw invoke echo answers {rid, data} with the same cid', async () => {
  const [raw] = await handshakenRaw(server);
  const reply = await raw.invoke('echo', {b: 2}, 2);
  assert.deepEqual(reply, {rid: 2, data: {b: 2}});
});

test('04 invoke of a handler answering nothing resolves to undefined ({rid} only on the wire)', async () => {
  const [client] = await connectedClient(server);
  const since = client.log.mark();
  const result = await client.invoke('empty', {ignored: true});
  assert.equal(result, undefined);
  await settle();
  const responses = receivedPackets(client, since).filter((p) => 'rid' in p);
  assert.equal(responses.length, 1);
  assert.deepEqual(Object.keys(responses[0]), ['rid']);

  const [raw] = await handshakenRaw(server);
  assert.deepEqual(await raw.invoke('empty', 1, 7), {rid: 7});
});

test('05 handler error rejects with exactly name CustomError, message boom, code E_X', async () => {
  const [client] = await connectedClient(server);
  const since = client.log.mark();
  const err = await rejectionOf(client.invoke('fail', 123), "invoke('fail')");
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'CustomError');
  assert.equal(err.message, 'boom');
  assert.equal(err.code, 'E_X');
  assert.deepEqual(Object.keys(err).sort(), ['code', 'name']);
  await settle();

  const responses = receivedPackets(client, since).filter((p) => 'rid' in p);
  assert.equal(responses.length, 1);
  assert.deepEqual(Object.keys(responses[0]).sort(), ['error', 'rid']);
  assert.deepEqual(responses[0].error, {message: 'boom', name: 'CustomError', code: 'E_X'});
});

test('06 invoke with no server handler (sc: UnhandledEventError at once; reference: TimeoutError)', async () => {
  const [client] = await connectedClient(server);
  const started = Date.now();
  const err = await rejectionOf(client.invoke('noSuchProcedure', 1), "invoke('noSuchProcedure')");
  const elapsed = Date.now() - started;
  if (isReference) {
    assert.equal(err.name, 'TimeoutError');
    assert.equal(err.message, 'Event response for noSuchProcedure event timed out');
    assert.ok(elapsed >= CLIENT_ACK_TIMEOUT - 50, `timed out after ${elapsed} ms`);
  } else {
    assert.equal(err.name, 'UnhandledEventError');
    assert.equal(err.message, "No handler for event 'noSuchProcedure'");
    assert.ok(elapsed < CLIENT_ACK_TIMEOUT / 2, `answered after ${elapsed} ms`);
  }
  // The socket is still fine.
  assert.equal(client.state, 'open');
  assert.equal(await client.invoke('echo', 'ok'), 'ok');
});

test('07 transmit reaches the server handler once and nothing comes back', async () => {
  const [client] = await connectedClient(server);
  const since = client.log.mark();
  await client.transmit('note', 'first');
  await client.transmit('note', {second: [2]});
  await sleep(200);
  // Nothing but pings came back for the transmits.
  assert.deepEqual(receivedPackets(client, since), []);
  assert.deepEqual(await client.invoke('getNotes'), ['first', {second: [2]}]);
  // Exactly once: asking again shows no duplicates.
  await sleep(100);
  assert.deepEqual(await client.invoke('getNotes'), ['first', {second: [2]}]);
});

test('07b a transmit of an event with no receiver is ignored and the socket stays open', async () => {
  const [client] = await connectedClient(server);
  const since = client.log.mark();
  await client.transmit('nobodyListens', 1);
  await client.transmit('blockedTransmit', 2);
  await sleep(200);
  assert.deepEqual(receivedPackets(client, since), []);
  assert.equal(client.state, 'open');
  assert.deepEqual(await client.invoke('getNotes'), []);
});

test('08 server invoke is answered by a client procedure; a client error arrives with name/message', async () => {
  const [client] = await connectedClient(server);
  (async () => {
    for await (const request of client.procedure('question')) {
      request.end({answer: request.data.q * 2});
    }
  })();
  (async () => {
    for await (const request of client.procedure('badQuestion')) {
      const err = new Error('client says no');
      err.name = 'ClientErr';
      request.error(err);
    }
  })();

  const ok = await client.invoke('askClient', {procedure: 'question', data: {q: 21}});
  assert.deepEqual(ok, {ok: true, data: {answer: 42}});

  const bad = await client.invoke('askClient', {procedure: 'badQuestion', data: {q: 1}});
  assert.deepEqual(bad, {ok: false, error: {name: 'ClientErr', message: 'client says no'}});

  // The server's invoke on the wire: {event, cid:number, data}.
  const serverInvokes = receivedPackets(client).filter((p) => p.event === 'question');
  assert.equal(serverInvokes.length, 1);
  assert.equal(typeof serverInvokes[0].cid, 'number');
  assert.deepEqual(serverInvokes[0].data, {q: 21});
});

test('09 server invoke of a procedure the client lacks fails with TimeoutError after the server ackTimeout', async () => {
  const [client] = await connectedClient(server);
  const started = Date.now();
  const result = await client.invoke(
    'askClient',
    {procedure: 'unknownToClient', data: 1},
    {ackTimeout: SERVER_ACK_TIMEOUT + 3000}
  );
  const elapsed = Date.now() - started;
  assert.deepEqual(result, {
    ok: false,
    error: {name: 'TimeoutError', message: 'Event response for unknownToClient event timed out'}
  });
  assert.ok(elapsed >= SERVER_ACK_TIMEOUT - 50, `answered after ${elapsed} ms`);
  assert.ok(elapsed < SERVER_ACK_TIMEOUT + 2000, `answered after ${elapsed} ms`);
  assert.equal(client.state, 'open');
});

test('09b server invoke interleaves with client invokes on the same socket', async () => {
  const [client] = await connectedClient(server);
  (async () => {
    for await (const request of client.procedure('slowAnswer')) {
      setTimeout(() => request.end('late'), 300);
    }
  })();
  const pending = client.invoke('askClient', {procedure: 'slowAnswer', data: null});
  // While the server waits for the client, the socket keeps serving other invokes.
  assert.equal(await client.invoke('echo', 'meanwhile'), 'meanwhile');
  assert.deepEqual(await pending, {ok: true, data: 'late'});
});
