// The sc browser client: an ES module served by every sc server at `/socketcluster.js`, speaking
// the SocketCluster protocol (v2 pings by default) like the official `socketcluster-client`, with
// no dependencies and no build step.
//
//   import { create } from '/socketcluster.js';
//   const socket = create();                       // same host, path /socketcluster/
//   await socket.invoke('login', { name: 'ann' }); // the token is kept in localStorage
//   const room = socket.subscribe('rooms/1');
//   room.listen((msg) => console.log(msg));        // or: for await (const msg of room) ...
//   await socket.publish('rooms/1', { text: 'hi' });
//
// Reconnects with backoff (1 s + up to 1 s random, x1.5, at most 30 s: quicker than the official
// client's 10 s first delay, for development) and resubscribes every channel after a reconnect.
//
// Recovery: on a channel with history the server positions every publication (offset, epoch).
// The client keeps the last position per channel and resubscribes with it, so the server sends
// what was missed, in order, before live messages, each once. When the history no longer covers
// the gap, nothing partial arrives and the socket emits `recoveryFail` ({channel, offset, epoch};
// no offset when the server could not read the history): reload the channel's state then;
// `channel.position` is the server's latest from there on. The same event (once per gap) tells of
// a gap while subscribed: the server's `#recoveryFailed` (publications lost before reaching it, a
// broker restart's new epoch), or a publication that opens a new epoch past its first offset.
//
//   socket.on('recoveryFail', ({channel}) => reloadRoom(channel));
//
// Typed contracts (`sc types`): `create({ contract })` with the `contract` of the generated
// `sc-types.js` types every call (socketcluster.d.ts) and compares the contract's hash with the
// server's at every handshake; when they differ the socket emits `contractMismatch`
// ({expected, actual}) after `connect`: the server was updated, reload the page.
//
// Presence: on a channel with presence, `await channel.presence()` answers who is subscribed
// ({count, users, entries: [{socket, user, info}], cut}); on one with join/leave events,
// `channel.onJoin(fn)` / `channel.onLeave(fn)` call `fn(entry)` for each socket that joins or
// leaves (batched by the server; `channel.onPresence(fn)` gets each whole event, whose `cut`
// says some entries were left out: ask `presence()` again then).
//
//   const room = socket.subscribe('rooms/1');
//   const { count } = await room.presence();
//   room.onJoin(({ user }) => console.log(`${user ?? 'a guest'} joined`));

const DEFAULTS = {
  path: '/socketcluster/',
  ackTimeout: 10000,
  autoReconnect: true,
  reconnect: { initialDelay: 1000, randomness: 1000, multiplier: 1.5, maxDelay: 30000 },
  authTokenName: 'socketcluster.authToken',
};

function storage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}

function makeError(name, message, extra) {
  const error = new Error(message);
  error.name = name;
  return Object.assign(error, extra ?? {});
}

function defaultUrl(path) {
  const loc = globalThis.location;
  if (!loc) return `ws://127.0.0.1:8000${path}`;
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}${path}`;
}

/** A subscription handle: `listen(fn)` (returns a function that stops listening), async iteration
 * over the channel's messages, `unsubscribe()`, `state` ('pending' | 'subscribed' |
 * 'unsubscribed') and `position` ({offset, epoch} of the last message received on a channel with
 * history, or null). */
class Channel {
  constructor(socket, name) {
    this.socket = socket;
    this.name = name;
    this.state = 'pending';
    this.position = null;
    // The last position a `recoveryFail` was emitted for, so one gap is reported once (the ack,
    // the server's `#recoveryFailed` and a new epoch's publication can all tell of it).
    this.reported = null;
    this.listeners = new Set();
    this.enders = new Set();
    this.presenceListeners = { join: new Set(), leave: new Set(), event: new Set() };
  }

  /** Who is subscribed to the channel (the server's `#presence`): resolves with `{count, users,
   * entries, cut?}`; rejects when the channel has no presence or this socket may not ask. */
  presence() {
    return this.socket.invoke('#presence', { channel: this.name });
  }

  /** Calls `fn(entry)` for each socket that joins; returns a function that stops it. */
  onJoin(fn) {
    return this._addPresenceListener('join', fn);
  }

  /** Calls `fn(entry)` for each socket that leaves; returns a function that stops it. */
  onLeave(fn) {
    return this._addPresenceListener('leave', fn);
  }

  /** Calls `fn({joins, leaves, cut})` for each presence event; returns a function that stops it. */
  onPresence(fn) {
    return this._addPresenceListener('event', fn);
  }

  _addPresenceListener(kind, fn) {
    this.presenceListeners[kind].add(fn);
    return () => this.presenceListeners[kind].delete(fn);
  }

  _presence(data) {
    const call = (fn, arg) => {
      try {
        fn(arg);
      } catch (e) {
        this.socket._emit('error', e);
      }
    };
    const joins = Array.isArray(data.joins) ? data.joins : [];
    const leaves = Array.isArray(data.leaves) ? data.leaves : [];
    for (const fn of this.presenceListeners.event) call(fn, { joins, leaves, cut: data.cut === true });
    // Leaves first: a socket that left and came back within one window ends up present.
    for (const entry of leaves) for (const fn of this.presenceListeners.leave) call(fn, entry);
    for (const entry of joins) for (const fn of this.presenceListeners.join) call(fn, entry);
  }

  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  unsubscribe() {
    this.socket.unsubscribe(this.name);
  }

  [Symbol.asyncIterator]() {
    const queue = [];
    let wake = null;
    const stop = this.listen((data) => {
      queue.push(data);
      if (wake) wake();
    });
    const end = () => {
      if (wake) wake();
    };
    this.enders.add(end);
    const channel = this;
    return {
      async next() {
        while (queue.length === 0) {
          if (channel.state === 'unsubscribed') return { done: true, value: undefined };
          await new Promise((resolve) => { wake = resolve; });
          wake = null;
        }
        return { done: false, value: queue.shift() };
      },
      async return() {
        stop();
        channel.enders.delete(end);
        return { done: true, value: undefined };
      },
    };
  }

  /** Ends the channel's iterators (unsubscribed or kicked out). */
  _close() {
    this.state = 'unsubscribed';
    for (const end of this.enders) end();
  }

  /** Delivers a publication once: on a channel with history, one at or before the last position
   * of the same epoch was already delivered. */
  _publication(p) {
    if (typeof p.offset === 'number' && typeof p.epoch === 'string') {
      const last = this.position;
      if (last && last.epoch === p.epoch && p.offset <= last.offset) return;
      // The history was lost (a broker restarted) and the new epoch's first publications went
      // by: nobody can tell the app what it missed.
      if (last && last.epoch !== p.epoch && p.offset > 1) this._gap({ offset: p.offset - 1, epoch: p.epoch });
      this.position = { offset: p.offset, epoch: p.epoch };
    }
    this._deliver(p.data);
  }

  /** Publications up to `at` (a position, or null when unknown) will not come: emits
   * `recoveryFail` unless this gap was reported already. */
  _gap(at) {
    const seen = this.reported;
    if (at && seen && seen.epoch === at.epoch && seen.offset >= at.offset) return;
    this.reported = at;
    this.socket._emit('recoveryFail', { channel: this.name, ...(at ?? {}) });
  }

  _deliver(data) {
    for (const fn of this.listeners) {
      try {
        fn(data);
      } catch (e) {
        this.socket._emit('error', e);
      }
    }
  }
}

export class Socket {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options, reconnect: { ...DEFAULTS.reconnect, ...(options.reconnect ?? {}) } };
    this.url = this.options.url ?? defaultUrl(this.options.path);
    this.state = 'closed';
    this.id = null;
    this.authToken = null;
    this.signedAuthToken = storage()?.getItem(this.options.authTokenName) ?? null;
    this.channels = new Map();
    this.pending = new Map();
    this.procedures = new Map();
    this.receivers = new Map();
    this.handlers = new Map();
    this.queue = [];
    this.cid = 0;
    this.attempts = 0;
    this.ws = null;
    this.reconnectTimer = null;
    this.closedByUser = false;
    this.contractHash = null;
  }

  /** `socket.on('connect' | 'disconnect' | 'error' | 'authenticate' | 'deauthenticate' |
   * 'subscribe' | 'subscribeFail' | 'unsubscribe' | 'kickOut' | 'recoveryFail' |
   * 'contractMismatch', fn)`; returns an unsubscribe function. */
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return () => this.handlers.get(event)?.delete(fn);
  }

  _emit(event, payload) {
    for (const fn of this.handlers.get(event) ?? []) {
      try {
        fn(payload);
      } catch (e) {
        if (event !== 'error') this._emit('error', e);
      }
    }
  }

  connect() {
    if (this.ws) return;
    this.closedByUser = false;
    clearTimeout(this.reconnectTimer);
    this.state = 'connecting';
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => this._handshake();
    ws.onmessage = (event) => this._onMessage(typeof event.data === 'string' ? event.data : '');
    ws.onerror = () => this._emit('error', makeError('SocketProtocolError', `WebSocket error on ${this.url}`));
    ws.onclose = (event) => this._onClose(event.code, event.reason);
  }

  /** Closes for good (no reconnect) with code 1000. */
  disconnect(code = 1000, reason = '') {
    this.closedByUser = true;
    clearTimeout(this.reconnectTimer);
    if (this.ws) this.ws.close(code, reason);
  }

  _send(text) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(text);
  }

  _sendWhenOpen(packet) {
    if (this.state === 'open') this._send(JSON.stringify(packet));
    else this.queue.push(packet);
  }

  _call(event, data, { queue = true } = {}) {
    const cid = ++this.cid;
    const packet = data === undefined ? { event, cid } : { event, data, cid };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(cid);
        reject(makeError('TimeoutError', `Event response for ${event} event timed out`));
      }, this.options.ackTimeout);
      this.pending.set(cid, { resolve, reject, timer, event });
      if (queue) this._sendWhenOpen(packet);
      else this._send(JSON.stringify(packet));
    });
  }

  _handshake() {
    this._call('#handshake', { authToken: this.signedAuthToken }, { queue: false }).then(
      (reply) => {
        this.id = reply?.id ?? null;
        this.state = 'open';
        this.attempts = 0;
        if (reply?.isAuthenticated) {
          this.authToken = decodeToken(this.signedAuthToken);
        } else if (this.signedAuthToken) {
          this._forgetToken();
        }
        this.contractHash = typeof reply?.contractHash === 'string' ? reply.contractHash : null;
        this._emit('connect', { id: this.id, isAuthenticated: !!reply?.isAuthenticated, authError: reply?.authError });
        // Typed contracts: the page was built against `options.contract` (sc-types.js); a server
        // with another contract was updated since.
        const expected = this.options.contract?.hash;
        if (typeof expected === 'string' && expected !== this.contractHash) {
          this._emit('contractMismatch', { expected, actual: this.contractHash });
        }
        for (const channel of this.channels.values()) this._subscribeOnServer(channel);
        const queued = this.queue;
        this.queue = [];
        for (const packet of queued) this._send(JSON.stringify(packet));
      },
      (error) => {
        this._emit('error', error);
        this.ws?.close(4003, 'handshake failed');
      }
    );
  }

  _onMessage(text) {
    if (text === '') {
      this._send('');
      return;
    }
    if (text === '#1') {
      this._send('#2');
      return;
    }
    let packet;
    try {
      packet = JSON.parse(text);
    } catch {
      return;
    }
    const packets = Array.isArray(packet) ? packet : [packet];
    for (const p of packets) this._onPacket(p);
  }

  _onPacket(p) {
    if (p && typeof p.rid === 'number') {
      const call = this.pending.get(p.rid);
      if (!call) return;
      this.pending.delete(p.rid);
      clearTimeout(call.timer);
      if (p.error) {
        const e = p.error;
        call.reject(typeof e === 'object' ? makeError(e.name ?? 'Error', e.message ?? '', e) : makeError('Error', String(e)));
      } else {
        call.resolve(p.data);
      }
      return;
    }
    if (!p || typeof p.event !== 'string') return;
    switch (p.event) {
      case '#publish': {
        const channel = this.channels.get(p.data?.channel);
        if (channel) channel._publication(p.data);
        return;
      }
      case '#setAuthToken':
        this._setToken(p.data?.token);
        if (p.cid) this._send(JSON.stringify({ rid: p.cid }));
        return;
      case '#removeAuthToken':
        this._forgetToken();
        return;
      case '#presence': {
        // Also handed to `receiver('#presence')` below, as the official client does.
        const channel = this.channels.get(p.data?.channel);
        if (channel) channel._presence(p.data);
        break;
      }
      case '#recoveryFailed': {
        // A gap the server saw (publications lost before reaching it, a dropped frame, a new
        // epoch): continue from its position. After a `recovered:false` ack it repeats the
        // ack's top (reported once, by whichever is handled first); without a position it only
        // repeats an ack's, which reports it.
        const channel = this.channels.get(p.data?.channel);
        const d = p.data;
        if (channel && typeof d.offset === 'number' && typeof d.epoch === 'string') {
          const at = { offset: d.offset, epoch: d.epoch };
          const last = channel.position;
          if (!last || last.epoch !== at.epoch || last.offset < at.offset) {
            channel.position = at;
            channel._gap(at);
          }
        }
        break; // receivers still get it, as before
      }
      case '#kickOut': {
        const channel = this.channels.get(p.data?.channel);
        if (channel) {
          this.channels.delete(channel.name);
          channel._close();
          this._emit('kickOut', { channel: channel.name, message: p.data?.message });
        }
        return;
      }
      default:
        break;
    }
    if (p.cid) {
      const procedure = this.procedures.get(p.event);
      const answer = (error, data) => {
        const reply = error ? { rid: p.cid, error: { name: error.name, message: error.message } } : { rid: p.cid, data };
        this._send(JSON.stringify(reply));
      };
      if (!procedure) {
        answer(makeError('UnhandledEventError', `No handler for event '${p.event}'`));
        return;
      }
      Promise.resolve()
        .then(() => procedure(p.data))
        .then((data) => answer(null, data), (error) => answer(error));
      return;
    }
    for (const fn of this.receivers.get(p.event) ?? []) fn(p.data);
  }

  _onClose(code, reason) {
    const wasOpen = this.state === 'open';
    this.ws = null;
    this.state = 'closed';
    for (const [cid, call] of this.pending) {
      clearTimeout(call.timer);
      call.reject(makeError('BadConnectionError', `Event '${call.event}' was aborted due to a bad socket connection`));
      this.pending.delete(cid);
    }
    for (const channel of this.channels.values()) channel.state = 'pending';
    if (wasOpen) this._emit('disconnect', { code, reason });
    // Like the official client: every close but 1000 and the application's own codes (>= 4500)
    // is retried (1001 server restart, 1006 dropped, 4000/4001 ping, 4100 slow consumer...).
    const retry = !this.closedByUser && this.options.autoReconnect && code !== 1000 && code < 4500;
    if (retry) {
      const r = this.options.reconnect;
      const delay = Math.min(r.maxDelay, r.initialDelay * r.multiplier ** this.attempts) + Math.random() * r.randomness;
      this.attempts += 1;
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
    }
  }

  _setToken(token) {
    if (typeof token !== 'string') return;
    this.signedAuthToken = token;
    this.authToken = decodeToken(token);
    storage()?.setItem(this.options.authTokenName, token);
    this._emit('authenticate', { authToken: this.authToken });
  }

  _forgetToken() {
    const had = this.signedAuthToken !== null;
    this.signedAuthToken = null;
    this.authToken = null;
    storage()?.removeItem(this.options.authTokenName);
    if (had) this._emit('deauthenticate', {});
  }

  /** Invokes a server procedure; resolves with its answer, rejects with its error. */
  invoke(event, data) {
    return this._call(event, data);
  }

  /** Sends an event without waiting for an answer. */
  transmit(event, data) {
    this._sendWhenOpen(data === undefined ? { event } : { event, data });
  }

  /** Answers server invokes of `procedure` with `fn(data)` (may return a promise). */
  procedure(name, fn) {
    this.procedures.set(name, fn);
  }

  /** Calls `fn(data)` for every server transmit of `event`; returns a stop function. */
  receiver(event, fn) {
    if (!this.receivers.has(event)) this.receivers.set(event, new Set());
    this.receivers.get(event).add(fn);
    return () => this.receivers.get(event)?.delete(fn);
  }

  subscribe(name) {
    let channel = this.channels.get(name);
    if (channel) return channel;
    channel = new Channel(this, name);
    this.channels.set(name, channel);
    if (this.state === 'open') this._subscribeOnServer(channel);
    return channel;
  }

  _subscribeOnServer(channel) {
    channel.state = 'pending';
    const request = { channel: channel.name };
    const recover = channel.position;
    if (recover) request.recover = recover;
    this._call('#subscribe', request, { queue: false }).then(
      (ack) => {
        if (this.channels.get(channel.name) !== channel) return;
        channel.state = 'subscribed';
        // A channel with history answers its latest position. When recovering, the missed
        // messages follow and move the position; otherwise it is where this subscriber starts.
        const top = typeof ack?.offset === 'number' && typeof ack?.epoch === 'string' ? { offset: ack.offset, epoch: ack.epoch } : null;
        // (Messages batched with the ack in one frame are handled before this runs: keep a
        // position they moved past the top.)
        const last = channel.position;
        const behind = !last || last.epoch !== top?.epoch || last.offset < top.offset;
        if (top && behind && !(recover && ack.recovered === true)) channel.position = top;
        const failed = recover && ack?.recovered === false;
        // Not recovered and no position (the server could not read the history): start afresh
        // rather than ask for the same gap again later.
        if (failed && !top && channel.position === recover) channel.position = null;
        this._emit('subscribe', { channel: channel.name });
        if (failed) channel._gap(top);
      },
      (error) => {
        if (error.name === 'BadConnectionError') return; // retried after the reconnect
        this.channels.delete(channel.name);
        channel._close();
        this._emit('subscribeFail', { channel: channel.name, error });
      }
    );
  }

  unsubscribe(name) {
    const channel = this.channels.get(name);
    if (!channel) return;
    this.channels.delete(name);
    channel._close();
    if (this.state === 'open') this._send(JSON.stringify({ event: '#unsubscribe', data: name }));
    this._emit('unsubscribe', { channel: name });
  }

  /** Publishes and waits for the server's acknowledgement. */
  publish(channel, data) {
    return this._call('#publish', { channel, data });
  }

  /** Publishes without waiting. */
  transmitPublish(channel, data) {
    this._sendWhenOpen({ event: '#publish', data: { channel, data } });
  }

  /** Authenticates with a signed token (stored on success). */
  async authenticate(token) {
    const status = await this._call('#authenticate', token);
    if (status?.isAuthenticated) this._setToken(token);
    return status;
  }

  /** Forgets the token here and on the server. */
  deauthenticate() {
    this._forgetToken();
    this.transmit('#removeAuthToken');
  }
}

/** The claims of a JWT (not verified: the server verifies). */
function decodeToken(token) {
  if (typeof token !== 'string') return null;
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch {
    return null;
  }
}

/** Creates a socket and connects it. */
export function create(options = {}) {
  const socket = new Socket(options);
  if (options.autoConnect !== false) socket.connect();
  return socket;
}
