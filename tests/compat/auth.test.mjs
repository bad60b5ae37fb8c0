// Plan 28-35: JWT auth (login, token handshake, bad tokens, client-side authenticate, expiry).
import assert from 'node:assert/strict';
import jwt from 'jsonwebtoken';
import {
  test, startServer, connectedClient, createClient, connectClient, sentPackets, receivedPackets,
  rejectionOf, sleep, settle, handshakenRaw, rawSocket
} from './harness.mjs';

const AUTH_KEY = 'compat-suite-secret-key';
const DEFAULT_EXPIRY = 3600;
const PING_INTERVAL = 300;
const server = await startServer({
  SC_PING_INTERVAL: String(PING_INTERVAL),
  SC_PING_TIMEOUT: '4000',
  SC_ACK_TIMEOUT: '1000',
  SC_AUTH_KEY: AUTH_KEY,
  SC_AUTH_DEFAULT_EXPIRY: String(DEFAULT_EXPIRY)
});

const nowSec = () => Math.floor(Date.now() / 1000);
const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

async function login(client, claims) {
  const since = client.log.mark();
  assert.equal(await client.invoke('login', claims), undefined);
  return client.log.find('authenticate', {since, what: 'client authenticate event'});
}

/** A client that has `token` in its storage before it connects. */
async function clientWithStoredToken(token) {
  const client = createClient(server, {autoConnect: false});
  await client.auth.saveToken(client.authTokenName, token, {});
  connectClient(client);
  const ev = await client.log.next('connect');
  return [client, ev];
}

test('28 login: setAuthToken -> client authenticate; token has username, iat, exp = iat + authDefaultExpiry, verifies HS256', async () => {
  const [client] = await connectedClient(server);
  const before = nowSec();
  const ev = await login(client, {username: 'alice', role: 'admin'});
  const after = nowSec();

  assert.equal(client.authState, 'authenticated');
  assert.equal(typeof ev.signedAuthToken, 'string');
  assert.equal(ev.signedAuthToken, client.signedAuthToken);
  assert.deepEqual(ev.authToken, client.authToken);

  const token = client.authToken;
  assert.equal(token.username, 'alice');
  assert.equal(token.role, 'admin');
  assert.equal(typeof token.iat, 'number');
  assert.ok(token.iat >= before - 1 && token.iat <= after + 1, `iat ${token.iat} is now`);
  assert.equal(token.exp, token.iat + DEFAULT_EXPIRY);
  assert.deepEqual(Object.keys(token).sort(), ['exp', 'iat', 'role', 'username']);

  const [headerPart] = client.signedAuthToken.split('.');
  assert.deepEqual(JSON.parse(Buffer.from(headerPart, 'base64url').toString()), {alg: 'HS256', typ: 'JWT'});
  const verified = jwt.verify(client.signedAuthToken, AUTH_KEY, {algorithms: ['HS256']});
  assert.deepEqual(verified, token);

  // The wire: #setAuthToken transmit (no cid) with {token}.
  await settle();
  const set = receivedPackets(client).filter((p) => p.event === '#setAuthToken');
  assert.equal(set.length, 1);
  assert.equal('cid' in set[0], false);
  assert.deepEqual(set[0].data, {token: client.signedAuthToken});

  // The client stored it, and the server socket holds the same payload.
  assert.equal(await client.auth.loadToken(client.authTokenName), client.signedAuthToken);
  const who = await client.invoke('whoami');
  assert.deepEqual(who.authToken, token);
});

test('29 after login, reconnect() sends the stored token in #handshake; isAuthenticated; server token matches', async () => {
  const [client] = await connectedClient(server);
  await login(client, {username: 'bob'});
  const signed = client.signedAuthToken;
  const payload = client.authToken;

  const since = client.log.mark();
  client.reconnect();
  const ev = await client.log.find('connect', {since});
  assert.equal(ev.isAuthenticated, true);
  assert.equal(ev.authToken, signed);
  assert.equal('authError' in ev, false);
  assert.equal(client.authState, 'authenticated');
  assert.deepEqual(client.authToken, payload);

  const handshakes = sentPackets(client, since).filter((p) => p.event === '#handshake');
  assert.equal(handshakes.length, 1);
  assert.deepEqual(handshakes[0].data, {authToken: signed});

  const stats = await client.invoke('stats');
  assert.equal(stats.lastHandshakeAuthToken, signed);
  const who = await client.invoke('whoami');
  assert.equal(who.id, ev.id);
  assert.deepEqual(who.authToken, payload);
  // No #setAuthToken follows a successful token handshake.
  await settle();
  assert.deepEqual(receivedPackets(client, since).filter((p) => p.event === '#setAuthToken'), []);
});

test('30 expired token in storage -> connect authError AuthTokenExpiredError (isBadToken), then removeAuthToken and storage cleared', async () => {
  const exp = nowSec() - 60;
  const token = jwt.sign({username: 'old', exp}, AUTH_KEY, {algorithm: 'HS256'});
  const [client, ev] = await clientWithStoredToken(token);
  assert.equal(ev.isAuthenticated, false);
  assert.equal(ev.authToken, token);
  assert.ok(ev.authError instanceof Error);
  assert.equal(ev.authError.name, 'AuthTokenExpiredError');
  assert.equal(ev.authError.message, 'jwt expired');
  assert.equal(ev.authError.isBadToken, true);
  assert.equal(typeof ev.authError.expiry, 'string');
  assert.equal(Date.parse(ev.authError.expiry), exp * 1000);

  const removed = await client.log.next('removeAuthToken');
  assert.equal(removed.oldAuthToken, token);
  assert.equal(await client.auth.loadToken(client.authTokenName), null);
  assert.equal(client.authState, 'unauthenticated');
  assert.equal(client.authToken, null);
  assert.equal(client.signedAuthToken, null);
  assert.equal(client.log.count('authenticate'), 0);
  await settle();
  assert.deepEqual(receivedPackets(client).filter((p) => p.event === '#removeAuthToken'), [{event: '#removeAuthToken'}]);
  assert.deepEqual(await client.invoke('whoami'), {id: ev.id, authToken: null});
});

test('30b client authenticated from a stored token that then expires gets deauthenticate + removeAuthToken', async () => {
  // A stored valid token, then a server-side expiry check after a short expiry (see also 34).
  const exp = nowSec() + 2;
  const token = jwt.sign({username: 'soon', exp}, AUTH_KEY);
  const [client, ev] = await clientWithStoredToken(token);
  assert.equal(ev.isAuthenticated, true);
  assert.equal(client.authState, 'authenticated');
  const deauth = await client.log.next('deauthenticate', {timeout: 4000 + PING_INTERVAL});
  assert.ok(Date.now() >= exp * 1000, 'not before exp');
  assert.equal(deauth.oldSignedAuthToken, token);
  await client.log.next('removeAuthToken');
  assert.equal(await client.auth.loadToken(client.authTokenName), null);
});

test('31 forged token (wrong key) is rejected AuthTokenInvalidError, never authenticated', async () => {
  const forged = jwt.sign({username: 'mallory'}, 'not-the-server-key', {algorithm: 'HS256', expiresIn: 600});
  const [client, ev] = await clientWithStoredToken(forged);
  assert.equal(ev.isAuthenticated, false);
  assert.equal(ev.authError.name, 'AuthTokenInvalidError');
  assert.equal(ev.authError.message, 'invalid signature');
  assert.equal(ev.authError.isBadToken, true);
  await client.log.next('removeAuthToken');
  assert.equal(client.authState, 'unauthenticated');
  assert.equal(client.log.count('authenticate'), 0);
  assert.deepEqual(await client.invoke('whoami'), {id: ev.id, authToken: null});
});

test('31b alg:none token is rejected AuthTokenInvalidError, never authenticated', async () => {
  const none = `${b64url({alg: 'none', typ: 'JWT'})}.${b64url({username: 'mallory', iat: nowSec(), exp: nowSec() + 600})}.`;
  const [client, ev] = await clientWithStoredToken(none);
  assert.equal(ev.isAuthenticated, false);
  assert.equal(ev.authError.name, 'AuthTokenInvalidError');
  assert.equal(ev.authError.message, 'jwt signature is required');
  assert.equal(ev.authError.isBadToken, true);
  await client.log.next('removeAuthToken');
  assert.equal(client.authState, 'unauthenticated');
  assert.deepEqual(await client.invoke('whoami'), {id: ev.id, authToken: null});

  // Same token with the key's algorithm name but no signature: rejected too.
  const stripped = `${b64url({alg: 'HS256', typ: 'JWT'})}.${b64url({username: 'mallory'})}.`;
  const [raw, reply] = await handshakenRaw(server, {});
  assert.equal(reply.data.isAuthenticated, false);
  const res = await raw.invoke('#authenticate', stripped, 2);
  assert.equal(res.error.name, 'AuthTokenInvalidError');
  assert.equal(res.error.isBadToken, true);
});

test('31c malformed tokens in the handshake: jwt malformed / invalid token, with #removeAuthToken', async () => {
  for (const [token, message] of [['abc', 'jwt malformed'], ['a.b.c', 'invalid token']]) {
    const raw = rawSocket(server);
    const reply = await raw.handshake({authToken: token});
    assert.equal(reply.data.isAuthenticated, false);
    assert.deepEqual(reply.data.authError, {message, name: 'AuthTokenInvalidError', isBadToken: true});
    await raw.packet((p) => p.event === '#removeAuthToken', {what: '#removeAuthToken'});
  }
});

test('31d token not active yet (nbf) -> AuthTokenNotBeforeError, isBadToken false, token kept', async () => {
  const token = jwt.sign({username: 'future', nbf: nowSec() + 600}, AUTH_KEY, {expiresIn: 1200});
  const [client, ev] = await clientWithStoredToken(token);
  assert.equal(ev.isAuthenticated, false);
  assert.equal(ev.authError.name, 'AuthTokenNotBeforeError');
  assert.equal(ev.authError.message, 'jwt not active');
  assert.equal(ev.authError.isBadToken, false);
  await sleep(200);
  assert.equal(client.log.count('removeAuthToken'), 0);
  assert.equal(await client.auth.loadToken(client.authTokenName), token);
  assert.deepEqual((await client.invoke('whoami')).authToken, null);
});

test('32 authenticate(validToken) resolves {isAuthenticated:true, authError:null}; a bad token rejects and leaves the client unauthenticated', async () => {
  const [client] = await connectedClient(server);
  const valid = jwt.sign({username: 'carol'}, AUTH_KEY, {expiresIn: 600});
  const status = await client.authenticate(valid);
  assert.deepEqual(status, {isAuthenticated: true, authError: null});
  assert.equal(client.authState, 'authenticated');
  assert.equal(client.authToken.username, 'carol');
  const who = await client.invoke('whoami');
  assert.equal(who.authToken.username, 'carol');
  const sent = sentPackets(client).find((p) => p.event === '#authenticate');
  assert.equal(sent.data, valid);
  assert.equal(typeof sent.cid, 'number');

  const err = await rejectionOf(client.authenticate('garbage.token.here'), 'authenticate(bad token)');
  assert.equal(err.name, 'AuthTokenInvalidError');
  assert.equal(err.message, 'invalid token');
  assert.equal(err.isBadToken, true);
  assert.equal(client.authState, 'unauthenticated');
  assert.equal(client.authToken, null);
  assert.deepEqual((await client.invoke('whoami')).authToken, null);
});

test('32b authenticate middleware: authBlock bad -> rejected (isBadToken); soft -> resolved with authError, unauthenticated', async () => {
  const [client] = await connectedClient(server);
  const bad = jwt.sign({username: 'x', authBlock: 'bad'}, AUTH_KEY, {expiresIn: 600});
  const err = await rejectionOf(client.authenticate(bad), 'authenticate(authBlock bad)');
  assert.equal(err.name, 'AuthBlocked');
  assert.equal(err.message, 'blocked');
  assert.equal(err.isBadToken, true);
  assert.equal(client.authState, 'unauthenticated');

  const soft = jwt.sign({username: 'y', authBlock: 'soft'}, AUTH_KEY, {expiresIn: 600});
  const status = await client.authenticate(soft);
  assert.equal(status.isAuthenticated, false);
  assert.equal(status.authError.name, 'AuthBlocked');
  assert.equal(status.authError.message, 'soft block');
  assert.equal(status.authError.isBadToken, false);
  assert.equal(client.authState, 'unauthenticated');
  assert.deepEqual((await client.invoke('whoami')).authToken, null);

  // In the handshake the block is an authError; bad -> #removeAuthToken, soft -> token kept.
  const [c2, ev2] = await clientWithStoredToken(bad);
  assert.equal(ev2.isAuthenticated, false);
  assert.equal(ev2.authError.name, 'AuthBlocked');
  assert.equal(ev2.authError.isBadToken, true);
  await c2.log.next('removeAuthToken');

  const [c3, ev3] = await clientWithStoredToken(soft);
  assert.equal(ev3.isAuthenticated, false);
  assert.equal(ev3.authError.name, 'AuthBlocked');
  assert.equal(ev3.authError.message, 'soft block');
  assert.equal(ev3.authError.isBadToken, false);
  await sleep(200);
  assert.equal(c3.log.count('removeAuthToken'), 0);
  assert.equal(await c3.auth.loadToken(c3.authTokenName), soft);
});

test('33 server deauthenticate -> client deauthenticate; client deauthenticate -> server socket unauthenticated', async () => {
  const [client] = await connectedClient(server);
  await login(client, {username: 'dave'});
  const signed = client.signedAuthToken;
  const since = client.log.mark();
  assert.equal(await client.invoke('logout'), undefined);
  const deauth = await client.log.find('deauthenticate', {since});
  assert.equal(deauth.oldSignedAuthToken, signed);
  assert.equal(deauth.oldAuthToken.username, 'dave');
  await client.log.find('removeAuthToken', {since});
  assert.equal(client.authState, 'unauthenticated');
  assert.equal(await client.auth.loadToken(client.authTokenName), null);
  assert.deepEqual(receivedPackets(client, since).filter((p) => p.event === '#removeAuthToken'), [{event: '#removeAuthToken'}]);
  assert.deepEqual((await client.invoke('whoami')).authToken, null);

  await login(client, {username: 'dave2'});
  assert.equal((await client.invoke('whoami')).authToken.username, 'dave2');
  const since2 = client.log.mark();
  await client.deauthenticate();
  assert.equal(client.authState, 'unauthenticated');
  const sent = sentPackets(client, since2).filter((p) => p.event === '#removeAuthToken');
  assert.deepEqual(sent, [{event: '#removeAuthToken'}]);
  assert.deepEqual((await client.invoke('whoami')).authToken, null);
  await settle();
  assert.deepEqual(receivedPackets(client, since2).filter((p) => p.rid == null && p.event !== undefined), [], 'nothing but the whoami reply came back');
});

test('34 token with 1 s expiry -> client receives #removeAuthToken within pingInterval after expiry', async () => {
  const [client] = await connectedClient(server);
  const since = client.log.mark();
  assert.equal(await client.invoke('loginWith', {claims: {username: 'brief'}, expiresIn: 1}), undefined);
  await client.log.find('authenticate', {since});
  const exp = client.authToken.exp;
  assert.equal(exp, client.authToken.iat + 1);

  const removed = await client.log.find('removeAuthToken', {since, timeout: 3000 + PING_INTERVAL});
  const at = Date.now();
  assert.equal(removed.oldAuthToken, client.log.all('authenticate', {since})[0].signedAuthToken);
  assert.ok(at >= exp * 1000, `removed at ${at}, before exp ${exp * 1000}`);
  assert.ok(at <= exp * 1000 + PING_INTERVAL + 600, `removed ${at - exp * 1000} ms after exp`);
  assert.equal(client.authState, 'unauthenticated');
  await client.log.find('deauthenticate', {since});
  assert.deepEqual((await client.invoke('whoami')).authToken, null);
});

test('35 setAuthToken with rejectOnFailedDelivery resolves once the client confirms', async () => {
  const [client] = await connectedClient(server);
  const since = client.log.mark();
  const result = await client.invoke('loginWith', {claims: {username: 'confirmed'}, expiresIn: 600, confirm: true});
  assert.deepEqual(result, {confirmed: true});
  // By the time the server answered, the client had the token (it confirmed it).
  assert.equal(client.authState, 'authenticated');
  assert.equal(client.authToken.username, 'confirmed');
  assert.equal(client.authToken.exp, client.authToken.iat + 600);

  const set = receivedPackets(client, since).filter((p) => p.event === '#setAuthToken');
  assert.equal(set.length, 1);
  assert.equal(typeof set[0].cid, 'number');
  assert.deepEqual(set[0].data, {token: client.signedAuthToken});
  const confirmation = sentPackets(client, since).filter((p) => p.rid === set[0].cid);
  assert.deepEqual(confirmation, [{rid: set[0].cid}]);
  assert.equal((await client.invoke('whoami')).authToken.username, 'confirmed');
});
