// @ts-check
// The chat page. The browser client is served by the app itself (`/socketcluster.js`): no npm
// install, no build step. `sc types` (and `sc dev`, after every build) writes the app's contract
// next to this file: `sc-types.d.ts` (the types of every event and channel, from the Rust code),
// `sc-types.js` (the contract's hash) and `socketcluster.d.ts` (the client's declarations), so
// `tsc -p public/jsconfig.json` checks every call below against the Rust handlers.
import { create } from './socketcluster.js';

/** @typedef {import('./sc-types.js').ChatMsg} ChatMsg */
/** @typedef {import('./sc-types.js').Contract} Contract */
/** @typedef {`rooms/${number}`} RoomName */

// The contract this page was built against (the server serves its own when `sc types` was never
// run here: then the page is not told about server updates).
import { contract } from './sc-types.js';

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @param {string} id */
const input = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
// Typed by the contract: `create({ contract })` is a `Socket<Contract>`.
const socket = create({ contract });
let room = roomFromAddress() ?? 1;
/** @type {import('./socketcluster.js').Channel<ChatMsg> | null} */
let channel = null; // the `rooms/{id}` subscription, while logged in
/** @type {(() => void) | null} */
let stopListening = null;
let lastName = storedName(); // offered again if the server stops accepting the login
let loggingOut = false;

function storedName() {
  try {
    const part = String(socket.signedAuthToken).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return String(JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '='))).name ?? '');
  } catch {
    return '';
  }
}

function roomFromAddress() {
  const m = /room=(\d+)/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

/** @param {string} state @param {string} text */
function setConn(state, text) {
  $('conn').dataset.state = state;
  $('conn').textContent = text;
}

/** A refused action or a lost login, in words; stays until the next successful action.
 * @param {string} text */
function notice(text) {
  $('notice').textContent = text;
  $('notice').hidden = !text;
}

/** @param {any} err */
const refused = (err) => notice(`Refused: ${err.message || err.name}${err.name ? ` (${err.name})` : ''}`);

/** @param {ChatMsg} msg */
function show(msg) {
  const li = document.createElement('li');
  if (msg.from === socket.authToken?.name) li.className = 'mine';
  if (typeof msg.at === 'number') {
    const when = new Date(msg.at);
    const time = document.createElement('time');
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    li.append(time);
  }
  const who = document.createElement('b');
  who.textContent = msg.from;
  li.append(who, document.createTextNode(msg.text));
  li.dataset.key = `${msg.at}|${msg.from}|${msg.text}`;
  const log = $('log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// The room's members, from the room's presence: who is subscribed (socket -> user), asked once
// per subscription, then kept up to date by join/leave events.
/** @type {Map<string, string | null>} */
let members = new Map();
function showMembers() {
  const names = [...new Set(members.values())].filter((n) => n !== null).sort();
  $('member-list').replaceChildren(...names.map((n) => Object.assign(document.createElement('li'), { textContent: n })));
  $('members').hidden = false;
}
/** @param {import('./socketcluster.js').Channel<ChatMsg>} ch */
async function loadMembers(ch) {
  try {
    const { entries } = await ch.presence();
    if (ch !== channel) return;
    members = new Map(entries.map((e) => /** @type {[string, string | null]} */ ([e.socket, e.user])));
    showMembers();
  } catch (err) {
    refused(err);
  }
}

/** @param {string} [name] */
function loggedOut(name) {
  leaveRoom();
  $('who').hidden = true;
  $('room-form').hidden = true;
  $('say').hidden = true;
  $('login').hidden = false;
  input('name').value = name ?? '';
  $('name').focus();
}

function loggedIn() {
  const name = socket.authToken?.name ?? '?';
  lastName = name;
  $('me').textContent = name;
  $('who').hidden = false;
  $('login').hidden = true;
  input('name').value = '';
  $('room-form').hidden = false;
  $('say').hidden = false;
  joinRoom(room);
}

function leaveRoom() {
  stopListening?.();
  stopListening = null;
  if (channel) socket.unsubscribe(channel.name);
  channel = null;
  members = new Map();
  $('members').hidden = true;
  delete document.body.dataset.room;
}

/** Shows room `id`: its recent messages, then every new one.
 * @param {number} id */
async function joinRoom(id) {
  const name = /** @type {RoomName} */ (`rooms/${id}`);
  // Already there (a reconnect: the client resubscribes by itself).
  if (channel?.name === name && channel.state !== 'unsubscribed') return;
  leaveRoom();
  room = id;
  input('room').value = String(id);
  history.replaceState(null, '', `#room=${id}`);
  $('log').replaceChildren();
  // The room's recent messages: the `history` event reads the channel's history. After a
  // reconnect the client gets what it missed by itself (see `recoveryFail` below).
  try {
    for (const msg of await socket.invoke('history', id)) show(msg);
  } catch (err) {
    refused(err);
  }
  if (room !== id || !socket.authToken) return; // another room was chosen, or logged out, meanwhile
  channel = socket.subscribe(name);
  const ch = channel;
  const stops = [
    channel.listen(show),
    channel.onJoin((e) => { members.set(e.socket, e.user); showMembers(); }),
    channel.onLeave((e) => { members.delete(e.socket); showMembers(); }),
    // Some joins or leaves were left out of an event: ask again.
    channel.onPresence(({ cut }) => { if (cut) loadMembers(ch); }),
  ];
  stopListening = () => stops.forEach((stop) => stop());
}

socket.on('connect', ({ isAuthenticated }) => {
  setConn('connected', 'connected');
  if (isAuthenticated) loggedIn();
  else if ($('login').hidden) loggedOut(lastName);
});
socket.on('disconnect', () => {
  setConn('reconnecting', 'reconnecting…');
  delete document.body.dataset.room;
});
// Marks when the room subscription is live (after each (re)connect): tests wait for it.
socket.on('subscribe', ({ channel: name }) => {
  if (name === `rooms/${room}`) document.body.dataset.room = String(room);
  // After each (re)subscribe: who is there now.
  if (channel && name === channel.name) loadMembers(channel);
});
socket.on('subscribeFail', ({ channel: name, error }) => {
  if (name === channel?.name) channel = null;
  refused(error);
});
// Away longer than the room keeps messages (or the server lost them): what was missed cannot
// be replayed, so show the room's recent messages again, keeping any that arrived meanwhile.
socket.on('recoveryFail', async ({ channel: name }) => {
  if (name !== channel?.name) return;
  const id = room;
  /** The log's entries. */
  const entries = () => /** @type {HTMLElement[]} */ ([...$('log').children]);
  const before = new Set(entries());
  let recent;
  try {
    recent = await socket.invoke('history', id);
  } catch (err) {
    return refused(err);
  }
  if (room !== id) return;
  const live = entries().filter((li) => !before.has(li));
  $('log').replaceChildren();
  for (const msg of recent) show(msg);
  const shown = new Set(entries().map((li) => li.dataset.key));
  $('log').append(...live.filter((li) => !shown.has(li.dataset.key)));
});
// The server runs another contract than this page was built against (`sc types`): it was
// updated since the page loaded, so calls may not fit any more.
socket.on('contractMismatch', () => {
  notice('The server was updated: reload the page.');
  document.body.dataset.contract = 'mismatch';
});
socket.on('kickOut', ({ channel: name, message }) => notice(`Removed from ${name}${message ? `: ${message}` : ''}`));
socket.on('authenticate', () => {
  notice('');
  loggedIn();
});
// The server no longer accepts the stored token (expired, or signed with a key it does not
// have, such as a server restarted without a fixed SC_AUTH_KEY): ask for the name again.
socket.on('deauthenticate', () => {
  if (loggingOut) {
    loggingOut = false;
  } else {
    notice('Your login was not accepted any more (the server may have restarted with a new key): log in again.');
  }
  loggedOut(lastName);
});

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    await socket.invoke('login', input('name').value);
  } catch (err) {
    refused(err);
  }
});
$('logout').addEventListener('click', () => {
  loggingOut = true;
  socket.deauthenticate();
  notice('');
});
$('room-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = Number(input('room').value);
  if (Number.isSafeInteger(id) && id >= 0) joinRoom(id);
});
window.addEventListener('hashchange', () => {
  const id = roomFromAddress();
  if (id !== null && socket.authToken) joinRoom(id);
});
$('say').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = input('text').value;
  try {
    await socket.invoke('chat', { room, text });
    // Cleared only once the server took it: a refused message stays to be fixed or resent.
    if (input('text').value === text) input('text').value = '';
    notice('');
  } catch (err) {
    refused(err);
  }
});
