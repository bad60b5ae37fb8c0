// Reference implementation of the compat-server contract (README.md) on top of the Node reference
// `socketcluster-server@20`. `COMPAT_TARGET=reference npm test` runs the whole suite against it,
// which is how the tests themselves are checked.
//
// Start-up: options from the SC_* environment variables, then exactly one line
// `LISTENING <port>` on stdout. Diagnostics go to stderr (more of them with COMPAT_VERBOSE=1).

import http from 'node:http';
import socketClusterServer from 'socketcluster-server';

const env = process.env;
const verbose = !!env.COMPAT_VERBOSE;

function intEnv(name, dflt) {
  const raw = env[name];
  if (raw == null || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n)) {
    console.error(`invalid ${name}=${raw}`);
    process.exit(2);
  }
  return n;
}

function boolEnv(name, dflt) {
  const raw = env[name];
  if (raw == null || raw === '') return dflt;
  return raw === 'true' || raw === '1';
}

const port = intEnv('SC_PORT', 8000);
const protocolVersion = intEnv('SC_PROTOCOL_VERSION', 2);

const options = {
  pingInterval: intEnv('SC_PING_INTERVAL', 8000),
  pingTimeout: intEnv('SC_PING_TIMEOUT', 30000),
  handshakeTimeout: intEnv('SC_HANDSHAKE_TIMEOUT', 10000),
  ackTimeout: intEnv('SC_ACK_TIMEOUT', 10000),
  protocolVersion,
  allowClientPublish: boolEnv('SC_ALLOW_CLIENT_PUBLISH', true),
  // The contract's defaults (sc-core's), not the v20 library's (unlimited / 100 MiB).
  socketChannelLimit: intEnv('SC_SOCKET_CHANNEL_LIMIT', 1000),
  origins: env.SC_ORIGINS || '*:*',
  maxPayload: intEnv('SC_MAX_PAYLOAD', 1048576),
  authDefaultExpiry: intEnv('SC_AUTH_DEFAULT_EXPIRY', 86400)
};
if (env.SC_AUTH_KEY) {
  options.authKey = env.SC_AUTH_KEY;
}

const pongMessage = protocolVersion === 1 ? '#2' : '';

function makeError(name, message, extra = {}) {
  const err = new Error(message);
  err.name = name;
  Object.assign(err, extra);
  return err;
}

function queryOf(request) {
  try {
    return new URL(request.url, 'http://localhost').searchParams;
  } catch {
    return new URLSearchParams();
  }
}

// ---- server-wide state ----
let handshakes = 0;
let lastHandshakeAuthToken = null;
const serverSubscriptions = new Map(); // channel -> array of received data

// ---- per-socket state ----
const socketState = new WeakMap();
function stateOf(socket) {
  let st = socketState.get(socket);
  if (!st) {
    st = {
      notes: [],
      pongs: 0,
      flags: {},
      lastSubscribe: null,
      // channel -> waitForAuth flag of the latest raw #subscribe packet for it (the v20
      // subscribe action itself does not carry waitForAuth).
      subscribeWaitForAuth: new Map()
    };
    socketState.set(socket, st);
  }
  return st;
}

const httpServer = http.createServer((req, res) => {
  res.writeHead(404);
  res.end('Not found');
});

const agServer = socketClusterServer.attach(httpServer, options);

// ---- middleware ----

agServer.setMiddleware(agServer.MIDDLEWARE_HANDSHAKE, async (middlewareStream) => {
  for await (const action of middlewareStream) {
    const query = queryOf(action.request);
    if (action.type === action.HANDSHAKE_WS) {
      if (query.get('rejectWs') === '1') {
        action.block(makeError('HandshakeWsDenied', 'not here'));
        continue;
      }
    } else if (action.type === action.HANDSHAKE_SC) {
      if (query.get('rejectHandshake') === '1') {
        action.block(makeError('HandshakeDenied', 'go away', {statusCode: 4501}));
        continue;
      }
    }
    action.allow();
  }
});

function recordRawPacket(socket, packet) {
  if (!packet || typeof packet !== 'object') return;
  if (packet.event === '#handshake') {
    lastHandshakeAuthToken = packet.data && packet.data.authToken !== undefined ? packet.data.authToken : null;
  } else if (packet.event === '#subscribe' && packet.data && typeof packet.data.channel === 'string') {
    stateOf(socket).subscribeWaitForAuth.set(packet.data.channel, !!packet.data.waitForAuth);
  }
}

agServer.setMiddleware(agServer.MIDDLEWARE_INBOUND_RAW, async (middlewareStream) => {
  for await (const action of middlewareStream) {
    const text = typeof action.data === 'string' ? action.data : Buffer.from(action.data).toString('utf8');
    const st = stateOf(action.socket);
    if (text === pongMessage) {
      st.pongs++;
      action.allow();
      continue;
    }
    if (text.includes('dropme')) {
      action.block();
      continue;
    }
    try {
      const parsed = JSON.parse(text);
      if (Array.isArray(parsed)) {
        for (const p of parsed) recordRawPacket(action.socket, p);
      } else {
        recordRawPacket(action.socket, parsed);
      }
    } catch {
      // not JSON: the protocol layer deals with it
    }
    action.allow();
  }
});

agServer.setMiddleware(agServer.MIDDLEWARE_INBOUND, async (middlewareStream) => {
  for await (const action of middlewareStream) {
    const socket = action.socket;
    switch (action.type) {
      case action.TRANSMIT:
        if (action.receiver === 'blockedTransmit') {
          action.block();
          continue;
        }
        break;
      case action.INVOKE:
        if (action.procedure === 'blockedSilently') {
          action.block();
          continue;
        }
        if (action.procedure === 'blockedLoud') {
          action.block(makeError('NopeError', 'You shall not pass'));
          continue;
        }
        if (action.procedure === 'rewriteMe') {
          action.allow({data: 'rewritten'});
          continue;
        }
        break;
      case action.SUBSCRIBE: {
        const st = stateOf(socket);
        st.lastSubscribe = {
          channel: action.channel,
          data: action.data === undefined ? null : action.data,
          waitForAuth: !!st.subscribeWaitForAuth.get(action.channel)
        };
        if (action.channel.startsWith('denied')) {
          action.block(makeError('SubDenied', 'no'));
          continue;
        }
        if (action.channel.startsWith('private') && !socket.authToken) {
          action.block(makeError('AuthRequired', 'login first'));
          continue;
        }
        break;
      }
      case action.PUBLISH_IN:
        if (action.channel.startsWith('nopub')) {
          action.block(makeError('PublishDenied', 'nope'));
          continue;
        }
        break;
      case action.AUTHENTICATE: {
        const block = action.authToken && action.authToken.authBlock;
        if (block === 'bad') {
          action.block(makeError('AuthBlocked', 'blocked', {isBadToken: true}));
          continue;
        }
        if (block === 'soft') {
          action.block(makeError('AuthBlocked', 'soft block', {isBadToken: false}));
          continue;
        }
        break;
      }
      default:
        break;
    }
    action.allow();
  }
});

agServer.setMiddleware(agServer.MIDDLEWARE_OUTBOUND, async (middlewareStream) => {
  for await (const action of middlewareStream) {
    if (action.type === action.PUBLISH_OUT) {
      const flags = stateOf(action.socket).flags;
      if (flags.blockOut) {
        action.block();
        continue;
      }
      if (flags.mutateOut) {
        action.allow({data: `mutated-for-${action.socket.id}`});
        continue;
      }
    }
    action.allow();
  }
});

// ---- procedures and receivers ----

function serve(socket, name, handler) {
  (async () => {
    for await (const request of socket.procedure(name)) {
      // Each request is handled on its own so a slow one (askClient, loginWith with confirm)
      // does not hold up the next one of the same name.
      (async () => {
        try {
          const result = await handler(request.data, request);
          if (!request.sent) request.end(result);
        } catch (err) {
          if (!request.sent) request.error(err);
        }
      })();
    }
  })();
}

function errorSummary(err) {
  if (err && typeof err === 'object') {
    return {name: err.name, message: err.message};
  }
  return {name: 'Error', message: String(err)};
}

function setUpSocket(socket) {
  const st = stateOf(socket);

  (async () => {
    for await (const data of socket.receiver('note')) {
      st.notes.push(data === undefined ? null : data);
    }
  })();

  serve(socket, 'echo', (data) => data);
  serve(socket, 'empty', () => undefined);
  serve(socket, 'fail', () => {
    throw makeError('CustomError', 'boom', {code: 'E_X'});
  });
  serve(socket, 'getNotes', () => st.notes.slice());
  serve(socket, 'askClient', async (data) => {
    try {
      const answer = await socket.invoke(data.procedure, data.data);
      return {ok: true, data: answer === undefined ? null : answer};
    } catch (err) {
      return {ok: false, error: errorSummary(err)};
    }
  });
  serve(socket, 'login', async (data) => {
    await socket.setAuthToken(data);
    return undefined;
  });
  serve(socket, 'loginWith', async (data) => {
    const opts = {};
    if (data.expiresIn != null) opts.expiresIn = data.expiresIn;
    if (data.confirm) opts.rejectOnFailedDelivery = true;
    await socket.setAuthToken(data.claims, opts);
    return data.confirm ? {confirmed: true} : undefined;
  });
  serve(socket, 'whoami', () => ({id: socket.id, authToken: socket.authToken || null}));
  serve(socket, 'logout', async () => {
    await socket.deauthenticate();
    return undefined;
  });
  serve(socket, 'kick', async (data) => {
    await socket.kickOut(data.channel, data.message);
    return undefined;
  });
  serve(socket, 'disconnectMe', (data, request) => {
    request.end();
    socket.disconnect(data.code, data.reason);
  });
  serve(socket, 'serverPublish', async (data) => {
    await agServer.exchange.invokePublish(data.channel, data.data);
    return undefined;
  });
  serve(socket, 'serverSubscribe', (data) => {
    if (!serverSubscriptions.has(data.channel)) {
      const received = [];
      serverSubscriptions.set(data.channel, received);
      const channel = agServer.exchange.subscribe(data.channel);
      (async () => {
        for await (const item of channel) {
          received.push(item === undefined ? null : item);
        }
      })();
    }
    return undefined;
  });
  serve(socket, 'serverReceived', (data) => (serverSubscriptions.get(data.channel) || []).slice());
  serve(socket, 'stats', () => ({
    handshakes,
    connections: agServer.clientsCount,
    pongs: st.pongs,
    lastHandshakeAuthToken,
    pid: process.pid
  }));
  serve(socket, 'lastSubscribe', () => st.lastSubscribe);
  serve(socket, 'setFlag', (data) => {
    st.flags[data.flag] = data.value;
    return undefined;
  });
  serve(socket, 'stopPinging', () => {
    clearInterval(socket._pingIntervalTicker);
    clearTimeout(socket._pingTimeoutTicker);
    socket._sendPing = () => {};
    socket._resetPongTimeout = () => {};
    return undefined;
  });
  serve(socket, 'rewriteMe', (data) => data);
}

// 'handshake' fires once per WebSocket (before the #handshake); 'connection' fires per
// completed #handshake (twice for a repeated one: the reference's documented quirk).
(async () => {
  for await (const {socket} of agServer.listener('handshake')) {
    setUpSocket(socket);
  }
})();

(async () => {
  for await (const {socket} of agServer.listener('connection')) {
    handshakes++;
    if (verbose) console.error(`connection ${socket.id}`);
  }
})();

(async () => {
  for await (const {error} of agServer.listener('error')) {
    console.error('server error:', error && error.stack ? error.stack : error);
  }
})();

(async () => {
  for await (const {warning} of agServer.listener('warning')) {
    if (verbose) console.error('server warning:', warning && warning.name, warning && warning.message);
  }
})();

httpServer.listen(port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${httpServer.address().port}\n`);
});

function shutdown() {
  agServer.close().catch(() => {});
  httpServer.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// The harness keeps our stdin open; EOF means it is gone, so do not outlive it.
process.stdin.on('end', shutdown);
process.stdin.on('error', () => {});
process.stdin.resume();
