// Declarations of the sc browser client (`/socketcluster.js`), served next to it at
// `/socketcluster.d.ts` and written by `sc types` beside the app's contract (`sc-types.d.ts`).
//
// Untyped, every event and channel name is accepted. Typed by the generated contract:
//
//   import { create } from './socketcluster.js';
//   import { contract } from './sc-types.js';
//   const socket = create({ contract });          // Socket<Contract>
//   await socket.invoke('chat', { room: 1, text: 'hi' });  // payload and reply checked
//   socket.subscribe('rooms/1').listen((msg) => msg.text); // msg: ChatMsg
//
// The contract's hash is compared with the server's (`contractHash` in the handshake reply): when
// they differ the socket emits `contractMismatch` ({expected, actual}): the page was built against
// another version of the server (reload it).

/** The shape of a generated contract (`Contract` in `sc-types.d.ts`). */
export interface AnyContract {
  events: { [event: string]: { payload: unknown; reply: unknown } };
  channels: { pattern: string; message: unknown };
  hash: string;
}

/** No contract: any event, any channel, `unknown` data. */
export interface Untyped extends AnyContract {
  events: { [event: string]: { payload: unknown; reply: unknown } };
  channels: { pattern: string; message: unknown };
  hash: string;
}

/** The contract value `sc-types.js` exports: its hash, and (types only) the contract. */
export interface ContractRef<C extends AnyContract> {
  readonly hash: string;
  readonly types?: C;
}

export type EventName<C extends AnyContract> = keyof C['events'] & string;
export type Payload<C extends AnyContract, E extends EventName<C>> = C['events'][E]['payload'];
export type ReplyOf<C extends AnyContract, E extends EventName<C>> = C['events'][E]['reply'];
/** The payload argument: optional when the event takes none (or anything). */
export type PayloadArgs<C extends AnyContract, E extends EventName<C>> =
  undefined extends Payload<C, E> ? [data?: Payload<C, E>] : [data: Payload<C, E>];
/** Names of the contract's channels (template literal types: `rooms/${number}`). */
export type ChannelName<C extends AnyContract> = C['channels']['pattern'];
/** The message type of the channel named `N`. */
export type MessageOf<C extends AnyContract, N extends string> =
  C['channels'] extends infer D ? (D extends { pattern: infer P; message: infer M } ? (N extends P ? M : never) : never) : never;

export interface ReconnectOptions {
  initialDelay?: number;
  randomness?: number;
  multiplier?: number;
  maxDelay?: number;
}

export interface CreateOptions<C extends AnyContract = Untyped> {
  /** Full WebSocket URL; default: this page's host with `path`. */
  url?: string;
  path?: string;
  ackTimeout?: number;
  autoConnect?: boolean;
  autoReconnect?: boolean;
  reconnect?: ReconnectOptions;
  authTokenName?: string;
  /** The generated contract (`import { contract } from './sc-types.js'`): types every call, and
   * its hash is checked against the server's at each handshake (`contractMismatch`). */
  contract?: ContractRef<C>;
}

/** An error from the server or the client (`name` is the SocketCluster error name). */
export interface ScError extends Error {
  name: string;
  [field: string]: unknown;
}

export interface Position {
  offset: number;
  epoch: string;
}

export interface SocketEvents {
  connect: { id: string | null; isAuthenticated: boolean; authError?: ScError };
  disconnect: { code: number; reason: string };
  error: Error;
  authenticate: { authToken: unknown };
  deauthenticate: Record<string, never>;
  subscribe: { channel: string };
  subscribeFail: { channel: string; error: ScError };
  unsubscribe: { channel: string };
  kickOut: { channel: string; message?: string };
  recoveryFail: { channel: string; offset?: number; epoch?: string };
  /** The server's contract is not the one this page was built against: reload. */
  contractMismatch: { expected: string; actual: string | null };
}

/** One subscribed socket on a channel with presence. */
export interface PresenceEntry {
  socket: string;
  /** The token's user claim (`sub` by default); null for a guest. */
  user: string | null;
  /** What the server attached (`Socket::set_presence_info`). */
  info?: unknown;
}

/** The server's answer to `#presence`. */
export interface Presence {
  count: number;
  users: number;
  entries: PresenceEntry[];
  /** `entries` stops short of `count`. */
  cut?: boolean;
}

export interface PresenceEvent {
  joins: PresenceEntry[];
  leaves: PresenceEntry[];
  cut: boolean;
}

export interface Channel<M> extends AsyncIterable<M> {
  readonly name: string;
  readonly state: 'pending' | 'subscribed' | 'unsubscribed';
  readonly position: Position | null;
  /** Calls `fn` with every message; returns a function that stops listening. */
  listen(fn: (message: M) => void): () => void;
  unsubscribe(): void;
  /** Who is subscribed (a channel with presence; rejects otherwise, or for a non-member). */
  presence(): Promise<Presence>;
  /** Calls `fn` for each socket that joins (a channel with join/leave events). */
  onJoin(fn: (entry: PresenceEntry) => void): () => void;
  /** Calls `fn` for each socket that leaves. */
  onLeave(fn: (entry: PresenceEntry) => void): () => void;
  /** Calls `fn` with each whole join/leave event (`cut`: ask `presence()` again). */
  onPresence(fn: (event: PresenceEvent) => void): () => void;
}

export declare class Socket<C extends AnyContract = Untyped> {
  constructor(options?: CreateOptions<C>);
  readonly url: string;
  readonly state: 'closed' | 'connecting' | 'open';
  readonly id: string | null;
  /** The token's claims (not verified here: the server verifies). */
  readonly authToken: any;
  readonly signedAuthToken: string | null;
  /** The server's contract hash from the last handshake (null: it sent none). */
  readonly contractHash: string | null;
  on<K extends keyof SocketEvents>(event: K, fn: (payload: SocketEvents[K]) => void): () => void;
  connect(): void;
  disconnect(code?: number, reason?: string): void;
  /** Invokes a server procedure; resolves with its reply, rejects with its error. */
  invoke<E extends EventName<C>>(event: E, ...data: PayloadArgs<C, E>): Promise<ReplyOf<C, E>>;
  /** Sends an event without waiting for an answer. */
  transmit<E extends EventName<C>>(event: E, ...data: PayloadArgs<C, E>): void;
  procedure(name: string, fn: (data: unknown) => unknown): void;
  receiver(event: string, fn: (data: unknown) => void): () => void;
  subscribe<N extends ChannelName<C>>(name: N): Channel<MessageOf<C, N>>;
  unsubscribe(name: string): void;
  publish<N extends ChannelName<C>>(channel: N, data: MessageOf<C, N>): Promise<void>;
  transmitPublish<N extends ChannelName<C>>(channel: N, data: MessageOf<C, N>): void;
  authenticate(token: string): Promise<{ isAuthenticated: boolean; authError?: ScError }>;
  deauthenticate(): void;
}

/** Creates a socket and connects it (unless `autoConnect: false`). */
export declare function create<C extends AnyContract = Untyped>(options?: CreateOptions<C>): Socket<C>;
