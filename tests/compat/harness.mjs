// Test harness for the compat suite: starts the server under test, makes official clients and raw
// WebSocket connections that record everything, and cleans up after each test.
//
// COMPAT_TARGET=reference -> `node reference-server.mjs`; otherwise the Rust binary
// `$COMPAT_SERVER_BIN` (default `<repo>/target/debug/compat-server`).

import {spawn} from 'node:child_process';
import {existsSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {test as nodeTest, after} from 'node:test';
import socketClusterClient from 'socketcluster-client';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');

export const TARGET = process.env.COMPAT_TARGET === 'reference' ? 'reference' : 'sc';
export const isReference = TARGET === 'reference';

/** Server options shared by most test files: fast timers, everything else default. */
export const FAST_ENV = Object.freeze({
  SC_PING_INTERVAL: '1000',
  SC_PING_TIMEOUT: '4000',
  SC_ACK_TIMEOUT: '1000',
  SC_HANDSHAKE_TIMEOUT: '3000'
});

/** Client ackTimeout used unless a test says otherwise (ms). */
export const CLIENT_ACK_TIMEOUT = 1000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Lets already-received events reach the logs: client events are delivered through async
 * iterators, a few microtasks after the promise of an invoke settled.
 */
export const settle = () => sleep(20);

// ------------------------------------------------------------------------------------------------
// Resources: everything a test creates is closed at its end, whatever happened.

let currentTestResources = null;
const fileResources = [];
const liveServers = new Set();

function track(resource) {
  (currentTestResources || fileResources).push(resource);
  return resource;
}

async function closeAll(resources) {
  while (resources.length) {
    const r = resources.pop();
    try {
      await r.close();
    } catch {
      // best effort
    }
  }
}

function killLiveServers() {
  for (const child of liveServers) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killLiveServers);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    killLiveServers();
    process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
  });
}

after(async () => {
  await closeAll(fileResources);
});

function serverLogs() {
  const parts = [];
  for (const child of liveServers) {
    const s = child.__server;
    if (s) parts.push(s.describeLogs());
  }
  return parts.join('\n');
}

/**
 * Defines a test (node:test) with automatic cleanup of the clients, raw sockets and servers it
 * created, and with the server's stderr appended to the failure message.
 */
export function test(name, fn, options = {}) {
  return nodeTest(name, {timeout: 30000, ...options}, async (t) => {
    const resources = [];
    currentTestResources = resources;
    try {
      await fn(t);
    } catch (err) {
      const logs = serverLogs();
      if (logs && err && typeof err === 'object') {
        try {
          err.message = `${err.message}\n${logs}`;
        } catch {
          // read-only message
        }
      }
      throw err;
    } finally {
      currentTestResources = null;
      await closeAll(resources);
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Server process

function serverCommand() {
  if (isReference) {
    return {cmd: process.execPath, args: [path.join(here, 'reference-server.mjs')]};
  }
  const bin = process.env.COMPAT_SERVER_BIN || path.join(repoRoot, 'target', 'debug', 'compat-server');
  if (!existsSync(bin)) {
    throw new Error(
      `compat server binary not found at ${bin}: run \`cargo build -p compat-server\` ` +
      'or set COMPAT_SERVER_BIN (or COMPAT_TARGET=reference to test the Node reference)'
    );
  }
  return {cmd: bin, args: []};
}

/**
 * Starts a server with the given SC_* variables (SC_PORT is always 0) and waits for
 * `LISTENING <port>`. Returns {port, url, env, stop(), logs()}.
 */
export async function startServer(env = {}, {startTimeout = 15000} = {}) {
  const {cmd, args} = serverCommand();
  const fullEnv = {...process.env, ...env, SC_PORT: '0'};
  const child = spawn(cmd, args, {env: fullEnv, stdio: ['pipe', 'pipe', 'pipe']});
  liveServers.add(child);

  const stderrChunks = [];
  let stderrLen = 0;
  const stdoutLines = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderrChunks.push(chunk);
    stderrLen += chunk.length;
    while (stderrLen > 64 * 1024 && stderrChunks.length > 1) {
      stderrLen -= stderrChunks.shift().length;
    }
  });

  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = {code, signal};
      liveServers.delete(child);
      resolve(exited);
    });
  });
  child.on('error', () => {});

  const label = `${TARGET} server (${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ') || 'defaults'})`;

  const port = await new Promise((resolve, reject) => {
    let buf = '';
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      reject(new Error(`${label} did not print LISTENING within ${startTimeout} ms\n${stderrChunks.join('')}`));
    }, startTimeout);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      let idx;
      while ((idx = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, idx).replace(/\r$/, '');
        buf = buf.slice(idx + 1);
        stdoutLines.push(line);
        const m = /^LISTENING (\d+)$/.exec(line);
        if (m && !done) {
          done = true;
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      }
    });
    exitPromise.then((info) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`${label} exited before listening (${JSON.stringify(info)})\n${stderrChunks.join('')}`));
    });
  }).catch((err) => {
    child.kill('SIGKILL');
    throw err;
  });

  const server = {
    port,
    pid: child.pid,
    url: `ws://127.0.0.1:${port}/socketcluster/`,
    env: fullEnv,
    label,
    logs: () => stderrChunks.join(''),
    stdoutLines,
    get exited() {
      return exited;
    },
    describeLogs() {
      const text = stderrChunks.join('').trimEnd();
      const tail = text.length > 8000 ? `...${text.slice(-8000)}` : text;
      return `--- ${label} on port ${port}${exited ? ` (exited ${JSON.stringify(exited)})` : ''}: stderr ---\n${tail || '(empty)'}`;
    },
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exitPromise;
      clearTimeout(timer);
    },
    close() {
      return server.stop();
    }
  };
  child.__server = server;
  track(server);
  return server;
}

// ------------------------------------------------------------------------------------------------
// Event log: records events in order and lets tests wait for them without races.

export class EventLog {
  constructor() {
    this.items = [];
    this._cursors = new Map();
    this._waiters = new Set();
  }

  push(kind, value) {
    const item = {kind, value, t: Date.now(), index: this.items.length};
    this.items.push(item);
    for (const w of this._waiters) w();
  }

  /** Index to pass as `since` to only look at later items. */
  mark() {
    return this.items.length;
  }

  all(kind, {since = 0, pred} = {}) {
    return this.items.filter((it) => it.index >= since && it.kind === kind && (!pred || pred(it.value)))
      .map((it) => it.value);
  }

  count(kind, opts) {
    return this.all(kind, opts).length;
  }

  _find(kind, since, pred) {
    for (let i = since; i < this.items.length; i++) {
      const it = this.items[i];
      if (it.kind === kind && (!pred || pred(it.value))) return it;
    }
    return null;
  }

  /** Waits for the first item of `kind` (matching `pred`) at or after index `since`. */
  find(kind, {since = 0, pred, timeout = 3000, what} = {}) {
    const found = this._find(kind, since, pred);
    if (found) return Promise.resolve(found.value);
    return new Promise((resolve, reject) => {
      const check = () => {
        const it = this._find(kind, since, pred);
        if (it) {
          this._waiters.delete(check);
          clearTimeout(timer);
          resolve(it.value);
        }
      };
      const timer = setTimeout(() => {
        this._waiters.delete(check);
        reject(new Error(`timed out after ${timeout} ms waiting for ${what || kind}`));
      }, timeout);
      this._waiters.add(check);
    });
  }

  /**
   * Waits for the next item of `kind` not yet returned by next() for that kind (each call
   * consumes one), optionally matching `pred`.
   */
  async next(kind, {pred, timeout = 3000, what} = {}) {
    const key = kind;
    const since = this._cursors.get(key) ?? 0;
    let found;
    const p = this.find(kind, {since, pred, timeout, what});
    const value = await p;
    found = this._find(kind, since, pred);
    this._cursors.set(key, found.index + 1);
    return value;
  }

  /** Rejects if an item of `kind` (matching pred) shows up within `ms`. */
  async expectNone(kind, {since = 0, pred, ms = 300, what} = {}) {
    await sleep(ms);
    const found = this._find(kind, since, pred);
    if (found) {
      throw new Error(`unexpected ${what || kind}: ${safeJson(found.value)}`);
    }
  }
}

function safeJson(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** Parses a text frame into packets ([] for pings, non-JSON and non-objects). */
export function framePackets(frame) {
  if (typeof frame !== 'string' || frame === '' || frame === '#1' || frame === '#2') return [];
  let parsed;
  try {
    parsed = JSON.parse(frame);
  } catch {
    return [];
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  return list.filter((p) => p && typeof p === 'object');
}

// ------------------------------------------------------------------------------------------------
// Official client

const CLIENT_EVENTS = [
  'connecting', 'connect', 'disconnect', 'connectAbort', 'close', 'error', 'authenticate',
  'deauthenticate', 'authStateChange', 'removeAuthToken', 'subscribe', 'subscribeFail',
  'unsubscribe', 'subscribeRequest', 'subscribeStateChange', 'kickOut', 'raw'
];

function tapTransport(client) {
  const transport = client.transport;
  if (!transport || !transport.socket) return;
  const ws = transport.socket;
  if (ws.__scTapped) return;
  ws.__scTapped = true;
  const originalSend = ws.send;
  ws.send = function (data, ...rest) {
    client.log.push('out', typeof data === 'string' ? data : Buffer.from(data).toString('utf8'));
    return originalSend.call(this, data, ...rest);
  };
}

/**
 * Creates an official socketcluster-client@20 socket against `server` with fast test options.
 * `client.log` (EventLog) records every client event (kinds as the event names), every inbound
 * frame (`in`, the raw text, pings included) and every outbound frame (`out`).
 * Pass `autoConnect: false` to connect later with `connectClient(client)`.
 */
export function createClient(server, opts = {}) {
  const {autoConnect = true, autoReconnectOptions, ...rest} = opts;
  const client = socketClusterClient.create({
    hostname: '127.0.0.1',
    port: server.port,
    ackTimeout: CLIENT_ACK_TIMEOUT,
    connectTimeout: 3000,
    ...rest,
    autoReconnectOptions: {initialDelay: 100, randomness: 0, multiplier: 1, maxDelay: 2000, ...autoReconnectOptions},
    autoConnect: false
  });
  const log = new EventLog();
  client.log = log;
  for (const name of CLIENT_EVENTS) {
    (async () => {
      for await (const value of client.listener(name)) {
        if (name === 'connecting') tapTransport(client);
        log.push(name, value);
      }
    })();
  }
  (async () => {
    for await (const {message} of client.listener('message')) {
      log.push('in', typeof message === 'string' ? message : `<binary ${message.byteLength} bytes>`);
    }
  })();

  track({
    close: async () => {
      client.disconnect();
      client.killAllListeners();
      client.killAllChannels();
      client.killAllProcedures();
      client.killAllReceivers();
    }
  });

  if (autoConnect) connectClient(client);
  return client;
}

/** client.connect() plus the outbound-frame tap on the new WebSocket. */
export function connectClient(client) {
  client.connect();
  tapTransport(client);
}

/** Creates a client and waits for its `connect` event; returns [client, connectEvent]. */
export async function connectedClient(server, opts = {}, {timeout = 5000} = {}) {
  const client = createClient(server, opts);
  const ev = await client.log.next('connect', {timeout, what: 'client connect'});
  return [client, ev];
}

/** Outbound packets (parsed) recorded for `client` from log index `since` on. */
export function sentPackets(client, since = 0) {
  return client.log.all('out', {since}).flatMap(framePackets);
}

/** Inbound packets (parsed) recorded for `client` from log index `since` on. */
export function receivedPackets(client, since = 0) {
  return client.log.all('in', {since}).flatMap(framePackets);
}

/** Collects the data a client channel yields. Returns {items, next(timeout)}. */
export function collectChannel(channel) {
  const log = new EventLog();
  (async () => {
    for await (const data of channel) {
      log.push('data', data);
    }
  })();
  return {
    log,
    get items() {
      return log.all('data');
    },
    next: (timeout = 3000) => log.next('data', {timeout, what: `data on channel ${channel.name}`})
  };
}

/** Resolves with the rejection of `promise`, or fails if it resolves. */
export async function rejectionOf(promise, what = 'promise') {
  try {
    const value = await promise;
    throw Object.assign(new Error(`${what} resolved with ${safeJson(value)} instead of rejecting`), {
      __notRejected: true
    });
  } catch (err) {
    if (err && err.__notRejected) throw err;
    return err;
  }
}

/** Polls `fn` until it returns a truthy value (returned) or the timeout passes. */
export async function waitUntil(fn, {timeout = 3000, interval = 50, what = 'condition'} = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${safeJson(last)})`);
    }
    await sleep(interval);
  }
}

// ------------------------------------------------------------------------------------------------
// Raw WebSocket

/**
 * Opens a raw `ws` connection to the server. Records to `raw.log`: `open`, `in` (text frames),
 * `close` ({code, reason}), `http` ({status, body}: refused upgrade), `error`.
 * With autoPong (default) it answers pings, but only after it saw its handshake reply (a pong
 * before the handshake is a 4009 in the reference).
 */
export function rawSocket(server, {query = '', origin, headers, path: p = '/socketcluster/', autoPong = true, protocolVersion = 2} = {}) {
  const url = `ws://127.0.0.1:${server.port}${p}${query ? `?${query}` : ''}`;
  const wsOptions = {};
  if (origin) wsOptions.origin = origin;
  if (headers) wsOptions.headers = headers;
  const ws = new WebSocket(url, [], wsOptions);
  const log = new EventLog();
  const ping = protocolVersion === 1 ? '#1' : '';
  const pong = protocolVersion === 1 ? '#2' : '';
  const raw = {
    ws,
    log,
    autoPong,
    handshakeDone: false,
    handshakeCid: null,
    send(data) {
      ws.send(typeof data === 'string' ? data : JSON.stringify(data));
    },
    waitOpen(timeout = 3000) {
      return log.find('open', {timeout, what: 'raw socket open'});
    },
    waitClose(timeout = 3000) {
      return log.find('close', {timeout, what: 'raw socket close'});
    },
    waitHttp(timeout = 3000) {
      return log.find('http', {timeout, what: 'HTTP refusal of the upgrade'});
    },
    /** Next inbound packet matching pred (parsed JSON objects only). */
    packet(pred, {since = 0, timeout = 3000, what = 'packet'} = {}) {
      return log.find('packet', {since, pred, timeout, what});
    },
    packets(since = 0) {
      return log.all('packet', {since});
    },
    frames(since = 0) {
      return log.all('in', {since});
    },
    /** Sends #handshake (cid 1 unless given) and resolves with the server's reply packet. */
    async handshake({authToken = null, cid = 1, timeout = 3000} = {}) {
      await raw.waitOpen(timeout);
      raw.handshakeCid = cid;
      raw.send({event: '#handshake', data: {authToken}, cid});
      const reply = await raw.packet((pk) => pk.rid === cid, {timeout, what: `#handshake reply (rid ${cid})`});
      return reply;
    },
    /** Sends an invoke and resolves with the response packet. */
    async invoke(event, data, cid, {timeout = 3000} = {}) {
      const packet = {event, data, cid};
      raw.send(packet);
      return raw.packet((pk) => pk.rid === cid, {timeout, what: `response to ${event} (rid ${cid})`});
    },
    close(code, reason) {
      try {
        if (ws.readyState === WebSocket.CONNECTING) {
          ws.terminate();
        } else if (ws.readyState === WebSocket.OPEN) {
          ws.close(code, reason);
          setTimeout(() => ws.terminate(), 200).unref();
        }
      } catch {
        // gone
      }
    }
  };
  ws.on('open', () => log.push('open', true));
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? `<binary ${data.length} bytes>` : data.toString('utf8');
    log.push('in', text);
    if (text === ping) {
      if (raw.autoPong && raw.handshakeDone && ws.readyState === WebSocket.OPEN) ws.send(pong);
      return;
    }
    for (const pk of framePackets(text)) {
      if (raw.handshakeCid != null && pk.rid === raw.handshakeCid && !raw.handshakeDone && !pk.error) {
        raw.handshakeDone = true;
      }
      log.push('packet', pk);
    }
  });
  ws.on('close', (code, reason) => log.push('close', {code, reason: reason.toString('utf8')}));
  ws.on('error', (err) => log.push('error', err));
  ws.on('unexpected-response', (req, res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c) => {
      body += c;
    });
    res.on('end', () => log.push('http', {status: res.statusCode, body}));
    res.on('error', () => log.push('http', {status: res.statusCode, body}));
  });
  track({close: () => raw.close()});
  return raw;
}

/** Raw socket that has completed its handshake; resolves [raw, handshakeReply]. */
export async function handshakenRaw(server, opts = {}) {
  const raw = rawSocket(server, opts);
  const reply = await raw.handshake();
  return [raw, reply];
}
