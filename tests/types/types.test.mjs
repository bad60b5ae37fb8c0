// Typed client contracts, checked with the real `tsc` (the `typescript` package pinned here):
// `sc types` on the chat (the app `sc new` creates) and on examples/auth writes declarations that
// type-check; the template's page (`templates/app/public/app.js`, `// @ts-check`) type-checks
// against the chat's; and the typed browser client accepts the right calls and refuses the wrong
// ones (`fixtures/typed-client.js`, and `fixtures/typed-generic.ts` for `create<Contract>()`:
// every refused line carries `@ts-expect-error`, which fails the check when the line
// type-checks).
//
// `sc types --exe` runs the binaries already built (`SC_BIN`, `CHAT_BIN`, `AUTH_BIN`, default
// target/debug/{sc,chat,auth}; scripts/test-all.sh builds them), so nothing is compiled here.
// That a breaking Rust change fails the page's check is proven where the app is rebuilt anyway:
// sc-cli/tests/new.rs.
import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import {copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..', '..');
const bin = (name, env) => process.env[env] || path.join(root, 'target', 'debug', name);
const tsc = path.join(here, 'node_modules', 'typescript', 'bin', 'tsc');

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, {encoding: 'utf8', ...opts});
  return {status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}`};
}

/** `sc types` for the app in `appDir` with its built binary, into `out` (a fresh directory). */
function scTypes(appDir, exe, out) {
  for (const file of [bin('sc', 'SC_BIN'), exe]) {
    assert.ok(existsSync(file), `${file} not built: run \`cargo build -p sc-cli -p chat -p auth\``);
  }
  const r = run(bin('sc', 'SC_BIN'), ['types', '--path', appDir, '--exe', exe, '--out', path.join(out, 'sc-types.d.ts')]);
  assert.equal(r.status, 0, r.output);
  for (const file of ['sc-types.d.ts', 'sc-types.js', 'socketcluster.d.ts']) {
    assert.ok(existsSync(path.join(out, file)), `sc types wrote no ${file}: ${r.output}`);
  }
  return readFileSync(path.join(out, 'sc-types.d.ts'), 'utf8');
}

function typeCheck(args) {
  assert.ok(existsSync(tsc), 'typescript is not installed: run `npm ci` in tests/types');
  return run(process.execPath, [tsc, ...args]);
}

test('sc types on the chat: the page and the typed client type-check against it', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sc-types-chat-'));
  try {
    const types = scTypes(path.join(root, 'examples', 'chat'), bin('chat', 'CHAT_BIN'), dir);
    assert.match(types, /export type ChatMsg = \{ from: string, text: string,/);
    assert.match(types, /"chat": \{ payload: Say; reply: void \};/);
    assert.match(types, /"history": \{ payload: number; reply: Array<ChatMsg> \};/);
    assert.match(types, /\| \{ pattern: `rooms\/\$\{number\}`; message: ChatMsg \}/);
    const hash = /hash: "([0-9a-f]{16})"/.exec(types)?.[1];
    assert.ok(hash, types);
    assert.equal(readFileSync(path.join(dir, 'sc-types.js'), 'utf8').includes(`"${hash}"`), true);

    const page = path.join(root, 'templates', 'app', 'public');
    for (const file of ['app.js', 'jsconfig.json']) copyFileSync(path.join(page, file), path.join(dir, file));
    copyFileSync(path.join(here, 'fixtures', 'typed-client.js'), path.join(dir, 'typed-client.js'));
    const r = typeCheck(['-p', path.join(dir, 'jsconfig.json')]);
    assert.equal(r.status, 0, `tsc found errors:\n${r.output}`);

    // From TypeScript: `create<Contract>()`.
    copyFileSync(path.join(here, 'fixtures', 'typed-generic.ts'), path.join(dir, 'typed-generic.ts'));
    const ts = typeCheck(['--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022',
      '--moduleResolution', 'bundler', '--lib', 'es2022,dom', path.join(dir, 'typed-generic.ts')]);
    assert.equal(ts.status, 0, `tsc found errors:\n${ts.output}`);
  } finally {
    rmSync(dir, {recursive: true, force: true});
  }
});

test('sc types on examples/auth: its declarations type-check', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sc-types-auth-'));
  try {
    const types = scTypes(path.join(root, 'examples', 'auth'), bin('auth', 'AUTH_BIN'), dir);
    assert.match(types, /"login": \{ payload: Login; reply: void \};/);
    assert.match(types, /"whoami": \{ payload: undefined; reply: string \};/);
    assert.match(types, /\| \{ pattern: `inbox\/\$\{string\}`; message: Note \}/);
    const r = typeCheck(['--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022',
      '--moduleResolution', 'bundler', path.join(dir, 'sc-types.d.ts'), path.join(dir, 'socketcluster.d.ts')]);
    assert.equal(r.status, 0, `tsc found errors:\n${r.output}`);
  } finally {
    rmSync(dir, {recursive: true, force: true});
  }
});
