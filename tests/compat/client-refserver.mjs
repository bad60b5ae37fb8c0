// Reference SocketCluster v20 server for the Rust client's integration tests.
// Usage: node client-refserver.mjs <port> [json-options]   (prints "LISTENING <port>")
import http from 'node:http';
import socketClusterServer from 'socketcluster-server';

const port = Number(process.argv[2] || 0);
// `logRaw: true` records every inbound message (all sockets, in order) for `rawLog`.
const { logRaw, ...extra } = process.argv[3] ? JSON.parse(process.argv[3]) : {};
const httpServer = http.createServer();
const agServer = socketClusterServer.attach(httpServer, {
  allowClientPublish: true,
  authKey: 'test-secret',
  ...extra,
});

const rawLog = [];
if (logRaw) {
  agServer.setMiddleware(agServer.MIDDLEWARE_INBOUND_RAW, async (stream) => {
    for await (const action of stream) {
      if (action.data !== '' && action.data !== '#2') rawLog.push(String(action.data));
      action.allow();
    }
  });
}

function serve(socket, name, fn) {
  (async () => {
    for await (const request of socket.procedure(name)) {
      try {
        await fn(request);
      } catch (err) {
        request.error(err);
      }
    }
  })();
}

(async () => {
  for await (const { socket } of agServer.listener('connection')) {
    serve(socket, 'echo', (req) => req.end(req.data));
    serve(socket, 'fail', (req) => {
      const err = new Error('custom failure');
      err.name = 'CustomError';
      err.code = 'E_X';
      req.error(err);
    });
    // #setAuthToken as an invoke: resolves once the client confirmed it (so before the reply).
    serve(socket, 'login', async (req) => {
      await socket.setAuthToken(req.data, { rejectOnFailedDelivery: true });
      req.end();
    });
    // #setAuthToken as a transmit (the default): may arrive after the reply.
    serve(socket, 'loginTransmit', async (req) => {
      await socket.setAuthToken(req.data);
      req.end();
    });
    serve(socket, 'whoami', (req) => req.end({
      id: socket.id,
      isAuthenticated: !!socket.authToken,
      authToken: socket.authToken,
      subscriptions: socket.subscriptions(),
    }));
    serve(socket, 'ask', async (req) => {
      const answer = await socket.invoke('question', req.data);
      req.end(answer);
    });
    serve(socket, 'kick', (req) => {
      req.end();
      socket.kickOut(req.data.channel, req.data.message);
    });
    serve(socket, 'dropMe', (req) => {
      req.end();
      setTimeout(() => socket.disconnect(req.data?.code ?? 4123, req.data?.reason ?? 'bye'), 20);
    });
    serve(socket, 'serverPublish', async (req) => {
      await agServer.exchange.invokePublish(req.data.channel, req.data.data);
      req.end();
    });
    serve(socket, 'stopPings', (req) => {
      // Silence this socket's pings and its pong watchdog: only the client's watchdog can fire.
      clearInterval(socket._pingIntervalTicker);
      clearTimeout(socket._pingTimeoutTicker);
      socket._resetPongTimeout = () => {};
      req.end();
    });
    serve(socket, 'rawLog', (req) => req.end(rawLog));
    serve(socket, 'deauth', (req) => {
      socket.deauthenticate();
      req.end();
    });
    (async () => {
      for await (const data of socket.receiver('note')) {
        socket.transmit('noted', data);
      }
    })();
  }
})();

httpServer.listen(port, '127.0.0.1', () => {
  console.log(`LISTENING ${httpServer.address().port}`);
});
