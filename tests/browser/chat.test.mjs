// The chat page (templates/app/public, served by examples/chat) in headless Chromium: two pages
// chat with each other through the browser client at /socketcluster.js, and after the server
// restarts on the same port both reconnect, stay logged in (token in localStorage) and resubscribe.
//
// Needs Chromium (`CHROMIUM`, default /usr/bin/chromium) and the chat binary (`CHAT_BIN`, default
// target/debug/chat); scripts/test-all.sh builds it and .ci/run installs Chromium.
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {existsSync} from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const chatBin = process.env.CHAT_BIN || path.join(here, '..', '..', 'target', 'debug', 'chat');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';

/** Starts the chat server on `port` (0: any) and resolves with {port, stop()}. */
function startChat(port) {
  if (!existsSync(chatBin)) throw new Error(`chat binary not found at ${chatBin}: run \`cargo build -p chat\``);
  const child = spawn(chatBin, [], {
    env: {...process.env, SC_PORT: String(port), SC_HOST: '127.0.0.1', SC_AUTH_KEY: 'browser-test-key', RUST_LOG: 'warn'},
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chat did not start:\n${stderr}`)), 15000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text) => {
      const m = /listening on http:\/\/[^:]+:(\d+)\//.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve({
          port: Number(m[1]),
          stop: () => new Promise((done) => {
            child.once('exit', done);
            child.kill('SIGTERM');
          }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`chat exited (${code}):\n${stderr}`)));
  });
}

async function login(page, url, name) {
  await page.goto(url);
  await page.waitForSelector('#status:has-text("connected as guest")');
  await page.fill('#name', name);
  await page.click('#login button');
  await page.waitForSelector(`#status:has-text("connected as ${name}")`);
  await page.waitForSelector('#say:not([hidden])');
  await page.waitForSelector('body[data-room="joined"]', {state: 'attached'});
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#say button');
}

const logText = (page) => page.locator('#log').innerText();

test('two pages chat, and both come back after a server restart', {timeout: 90000}, async () => {
  let server = await startChat(0);
  const url = `http://127.0.0.1:${server.port}/`;
  const browser = await chromium.launch({executablePath: browserPath, args: ['--no-sandbox']});
  try {
    // Separate contexts: separate localStorage, as two people on two machines.
    const ann = await (await browser.newContext()).newPage();
    const bob = await (await browser.newContext()).newPage();
    await login(ann, url, 'ann');
    await login(bob, url, 'bob');
    await say(ann, 'hello bob');
    await bob.waitForSelector('#log li:has-text("hello bob")');
    assert.match(await logText(bob), /ann\s*hello bob/);
    await ann.waitForSelector('#log li:has-text("hello bob")');

    // The server restarts on the same port: the pages reconnect by themselves, still logged in.
    await server.stop();
    await ann.waitForSelector('#status:has-text("reconnecting")');
    await bob.waitForSelector('#status:has-text("reconnecting")');
    server = await startChat(Number(new URL(url).port));
    await ann.waitForSelector('#status:has-text("connected as ann")', {timeout: 20000});
    await bob.waitForSelector('#status:has-text("connected as bob")', {timeout: 20000});
    for (const page of [ann, bob]) {
      await page.waitForSelector('body[data-room="joined"]', {state: 'attached', timeout: 10000});
    }
    // Resubscribed: a message after the restart reaches the other page.
    await say(bob, 'back again');
    await ann.waitForSelector('#log li:has-text("back again")', {timeout: 10000});
    assert.match(await logText(ann), /bob\s*back again/);
  } finally {
    await browser.close();
    await server.stop();
  }
});
