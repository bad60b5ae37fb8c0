// The Node reference peer of `bench/run.sh`: socketcluster-server@20 in one process, doing what
// examples/echo does and nothing else (invoke `echo` answers its data, `login` sets a token,
// clients may subscribe and publish anywhere). Listens on SC_PORT (default 8000), prints
// `LISTENING <port>`.
import http from 'node:http';
import socketClusterServer from 'socketcluster-server';

const port = Number(process.env.SC_PORT || 8000);
const httpServer = http.createServer();
const agServer = socketClusterServer.attach(httpServer, {
  authKey: process.env.SC_AUTH_KEY || 'bench-secret',
});

(async () => {
  for await (const { socket } of agServer.listener('connection')) {
    (async () => {
      for await (const request of socket.procedure('echo')) {
        request.end(request.data);
      }
    })();
    (async () => {
      for await (const request of socket.procedure('login')) {
        socket.setAuthToken(request.data);
        request.end();
      }
    })();
  }
})();

httpServer.listen(port, '127.0.0.1', () => {
  console.log(`LISTENING ${httpServer.address().port}`);
});
