// The chat page (templates/app/public, served by examples/chat) in headless Chromium: two pages
// chat with each other through the browser client at /socketcluster.js and see each other in the
// room's member list (presence: `channel.presence()`, `onJoin`, `onLeave`); a swap (the server
// restarted on the same port) keeps both logged in and in their room; a server restarted with a
// new key makes the page ask for the name again, and logging in rejoins the room; a refused
// action is shown; a page built against another contract (`sc types`) is told to reload.
//
// The swap test starts the chat the way `sc dev` does, without SC_AUTH_KEY in the environment it
// was given: one key made once for the app and handed to every start as SC_AUTH_KEY (`sc dev`
// keeps it in the app's `.sc/auth-key`; sc-cli/tests/dev.rs checks that part with a real
// `sc dev` and a real swap). Running `sc dev` here would rebuild the chat for every run.
//
// Needs Chromium (`CHROMIUM`, default /usr/bin/chromium) and the chat binary (`CHAT_BIN`, default
// target/debug/chat); scripts/test-all.sh builds it and .ci/run installs Chromium.
// `CHAT_SCREENSHOT=docs/chat.png npm test` also saves the README's screenshot.
import assert from 'node:assert/strict';
import {spawn, spawnSync} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import {copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const chatBin = process.env.CHAT_BIN || path.join(here, '..', '..', 'target', 'debug', 'chat');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const RANDOM_KEY_WARNING = 'no auth key configured';

/** Starts the chat on `port` (0: any) with `env` added to an environment without SC_AUTH_KEY;
 * resolves with {port, stop(), output(), waitForOutput()}; the output is stdout and stderr
 * (the log goes to stdout). */
function startChat(port, env = {}) {
  if (!existsSync(chatBin)) throw new Error(`chat binary not found at ${chatBin}: run \`cargo build -p chat\``);
  const base = {...process.env};
  delete base.SC_AUTH_KEY;
  const child = spawn(chatBin, [], {
    env: {...base, SC_PORT: String(port), SC_HOST: '127.0.0.1', RUST_LOG: 'warn', ...env},
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const waiters = [];
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (d) => {
      output += d;
      for (const w of [...waiters]) w();
    });
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chat did not start:\n${output}`)), 15000);
    child.stdout.on('data', () => {
      const m = /listening on http:\/\/[^:]+:(\d+)\//.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve({
          port: Number(m[1]),
          output: () => output,
          /** Resolves once `re` has matched the output `n` times. */
          waitForOutput: (re, n, ms = 15000) => new Promise((ok, fail) => {
            const t = setTimeout(() => fail(new Error(`no ${n}x ${re} in:\n${output}`)), ms);
            const check = () => {
              if ((output.match(new RegExp(re, 'g')) ?? []).length >= n) {
                clearTimeout(t);
                waiters.splice(waiters.indexOf(check), 1);
                ok();
              }
            };
            waiters.push(check);
            check();
          }),
          stop: () => new Promise((done) => {
            if (child.exitCode !== null) return done();
            child.once('exit', done);
            child.kill('SIGTERM');
          }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`chat exited (${code}):\n${output}`)));
  });
}

/** A page that records every failed HTTP response (a 404 favicon would show here). */
async function openPage(browser, failures) {
  const page = await (await browser.newContext({viewport: {width: 820, height: 640}})).newPage();
  page.on('response', (r) => { if (r.status() >= 400) failures.push(`${r.status()} ${r.url()}`); });
  return page;
}

async function login(page, name) {
  await page.waitForSelector('#login:visible');
  assert.equal(await page.isVisible('#say'), false, 'no Send box before login');
  await page.fill('#name', name);
  await page.click('#login button');
  await page.waitForSelector(`#me:has-text("${name}")`);
  await page.waitForSelector('#say:visible');
  await page.waitForSelector('#login', {state: 'hidden'});
  await page.waitForSelector('body[data-room="1"]', {state: 'attached'});
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#say button');
}

const logText = (page) => page.locator('#log').innerText();

test('two pages chat, and a swap keeps them logged in and in their room', {timeout: 90000}, async () => {
  const key = randomBytes(32).toString('hex'); // what `sc dev` keeps in .sc/auth-key
  const failures = [];
  let browser;
  let server;
  try {
    browser = await chromium.launch({executablePath: browserPath, args: ['--no-sandbox']});
    server = await startChat(0, {SC_AUTH_KEY: key});
    const url = `http://127.0.0.1:${server.port}/`;
    // Separate contexts: separate localStorage, as two people on two machines.
    const ann = await openPage(browser, failures);
    const bob = await openPage(browser, failures);
    for (const page of [ann, bob]) {
      await page.goto(url);
      await page.waitForSelector('#conn[data-state="connected"]');
    }
    await login(ann, 'ann');
    await login(bob, 'bob');
    assert.equal(await ann.inputValue('#name'), '', 'the login form does not keep the name');
    await say(ann, 'hello bob');
    await bob.waitForSelector('#log li:has-text("hello bob")');
    assert.match(await logText(bob), /\d{1,2}:\d\d(\s*[AP]M)?\s*ann\s*hello bob/i, 'a timestamp, the sender, the text');
    await ann.waitForSelector('#log li.mine:has-text("hello bob")');
    assert.equal(await ann.inputValue('#text'), '', 'a sent message leaves the box');
    await say(bob, 'hi ann');
    await ann.waitForSelector('#log li:has-text("hi ann")');
    // The room's members, from presence: both pages list both names.
    for (const page of [ann, bob]) {
      for (const name of ['ann', 'bob']) await page.waitForSelector(`#member-list li:has-text("${name}")`);
    }

    // A refused action is shown, and the refused text stays in the box.
    await say(ann, '   ');
    await ann.waitForSelector('#notice:visible:has-text("a message has 1 to 2000 bytes")');
    assert.equal(await ann.inputValue('#text'), '   ');
    if (process.env.CHAT_SCREENSHOT) {
      await say(ann, 'see you after the swap');
      await bob.waitForSelector('#log li:has-text("see you after the swap")');
      await bob.screenshot({path: process.env.CHAT_SCREENSHOT});
    }

    // The swap: the server restarts on the same port with the same key. Both pages reconnect
    // by themselves, still logged in and back in room 1.
    await server.stop();
    await ann.waitForSelector('#conn[data-state="reconnecting"]');
    await bob.waitForSelector('#conn[data-state="reconnecting"]');
    server = await startChat(Number(new URL(url).port), {SC_AUTH_KEY: key});
    for (const [page, name] of [[ann, 'ann'], [bob, 'bob']]) {
      await page.waitForSelector('#conn[data-state="connected"]', {timeout: 20000});
      await page.waitForSelector('body[data-room="1"]', {state: 'attached', timeout: 10000});
      assert.equal(await page.textContent('#me'), name);
      assert.equal(await page.isVisible('#login'), false, `${name} is not asked to log in again`);
    }
    await say(bob, 'back again');
    await ann.waitForSelector('#log li:has-text("back again")', {timeout: 10000});
    assert.match(await logText(ann), /bob\s*back again/);

    // Rooms: ann moves to room 2; bob, in room 1, does not get its messages, then follows.
    await ann.fill('#room', '2');
    await ann.click('#room-form button');
    await ann.waitForSelector('body[data-room="2"]', {state: 'attached'});
    // Bob sees ann leave room 1 (a leave event); ann's list is room 2's: only herself.
    await bob.waitForSelector('#member-list li:has-text("ann")', {state: 'detached'});
    await ann.waitForSelector('#member-list li:has-text("ann")');
    assert.equal(await ann.locator('#member-list li').count(), 1);
    assert.equal(await ann.locator('#log li').count(), 0, 'room 2 starts empty');
    await say(ann, 'in room two');
    await ann.waitForSelector('#log li:has-text("in room two")');
    await bob.goto(`${url}#room=2`);
    await bob.waitForSelector('body[data-room="2"]', {state: 'attached'});
    await bob.waitForSelector('#log li:has-text("in room two")'); // the room's recent messages
    assert.doesNotMatch(await logText(bob), /back again/);

    assert.deepEqual(failures, [], 'no failed request (favicon included)');
    assert.match(await ann.getAttribute('link[rel=icon]', 'href'), /^data:image\/svg\+xml,/);
    assert.ok(!server.output().includes(RANDOM_KEY_WARNING), server.output());
  } finally {
    await browser?.close();
    await server?.stop();
  }
});

test('a server restarted with a new key: the page asks for the name again and rejoins', {timeout: 60000}, async () => {
  // No key at all: each start signs with a new random key, and says so once.
  let browser;
  let server;
  try {
    browser = await chromium.launch({executablePath: browserPath, args: ['--no-sandbox']});
    server = await startChat(0);
    const url = `http://127.0.0.1:${server.port}/`;
    await server.waitForOutput(RANDOM_KEY_WARNING, 1);
    const ann = await openPage(browser, []);
    await ann.goto(url);
    await login(ann, 'ann');
    await server.stop();
    await ann.waitForSelector('#conn[data-state="reconnecting"]');
    server = await startChat(Number(new URL(url).port));
    // The stored token is refused: the login form is back, with the name, and no Send box.
    await ann.waitForSelector('#login:visible', {timeout: 20000});
    await ann.waitForSelector('#notice:visible:has-text("log in again")');
    assert.equal(await ann.isVisible('#say'), false);
    assert.equal(await ann.inputValue('#name'), 'ann');
    await ann.click('#login button');
    await ann.waitForSelector('#say:visible');
    await ann.waitForSelector('body[data-room="1"]', {state: 'attached'});
    await say(ann, 'here again');
    await ann.waitForSelector('#log li:has-text("here again")'); // delivered through the room
    assert.equal(await ann.isVisible('#notice'), false, 'the notice goes once logged in');
    assert.equal((server.output().match(/no auth key configured/g) ?? []).length, 1, server.output());
  } finally {
    await browser?.close();
    await server?.stop();
  }
});

test('a cluster without a key warns once, not once per worker', {timeout: 30000}, async () => {
  const server = await startChat(0, {SC_WORKERS: '2', RUST_LOG: 'info'});
  try {
    await server.waitForOutput('sc listening', 2); // both workers are up
    assert.equal((server.output().match(/no auth key configured/g) ?? []).length, 1, server.output());
  } finally {
    await server.stop();
  }
});

test('a page built against another contract is told to reload; the same contract is quiet', {timeout: 60000}, async () => {
  // The page with its generated contract next to it, as `sc types` writes it (the chat binary
  // with SC_EMIT_TYPES is what `sc types` runs after building).
  const dir = mkdtempSync(path.join(tmpdir(), 'sc-page-'));
  let browser;
  let server;
  try {
    const page = path.join(here, '..', '..', 'templates', 'app', 'public');
    for (const file of ['index.html', 'app.js']) copyFileSync(path.join(page, file), path.join(dir, file));
    const emit = spawnSync(chatBin, [], {env: {...process.env, SC_EMIT_TYPES: path.join(dir, 'sc-types.d.ts')}, encoding: 'utf8'});
    assert.equal(emit.status, 0, emit.stderr);
    const module = readFileSync(path.join(dir, 'sc-types.js'), 'utf8');
    assert.match(module, /contractHash = "[0-9a-f]{16}"/);

    browser = await chromium.launch({executablePath: browserPath, args: ['--no-sandbox']});
    server = await startChat(0, {SC_PUBLIC_DIR: dir});
    const url = `http://127.0.0.1:${server.port}/`;
    const failures = [];
    const ann = await openPage(browser, failures);
    await ann.goto(url);
    await login(ann, 'ann');
    assert.equal(await ann.getAttribute('body', 'data-contract'), null, 'the same contract: no mismatch');

    // The server was updated since this page was loaded: the page still holds the old module
    // (the browser's copy), the server's handshake carries another hash. (The server itself
    // always serves its own sc-types.js, so a reload gets the current one.)
    const stale = module.replace(/"[0-9a-f]{16}"/, '"0000000000000000"');
    await ann.route('**/sc-types.js', (route) => route.fulfill({contentType: 'text/javascript', body: stale}));
    await ann.reload();
    await ann.waitForSelector('body[data-contract="mismatch"]', {state: 'attached'});
    await ann.waitForSelector('#notice:visible:has-text("The server was updated: reload the page.")');
    assert.deepEqual(failures, []);
  } finally {
    await browser?.close();
    await server?.stop();
    rmSync(dir, {recursive: true, force: true});
  }
});
