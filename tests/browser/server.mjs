// Starts target/debug/confab on a temp data dir and talks to its API like a client would.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const repo = resolve(import.meta.dirname, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || join(repo, 'target');
export const BIN = process.env.CONFAB_BIN || join(targetDir, 'debug', 'confab');
export const ADMIN_EMAIL = 'admin@localhost';
export const ADMIN_PASSWORD = 'console-test-admin-pw';

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export async function waitFor(what, fn, { timeout = 15000, every = 100 } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

export class Confab {
  static async start() {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`cargo build\` first (CARGO_TARGET_DIR is honoured)`);
    const c = new Confab();
    c.dir = mkdtempSync(join(tmpdir(), 'confab-console-'));
    c.port = await freePort();
    c.base = `http://127.0.0.1:${c.port}`;
    await c.spawn();
    return c;
  }

  async spawn() {
    this.log = '';
    this.proc = spawn(BIN, ['serve'], {
      env: {
        ...process.env,
        CONFAB_DATA_DIR: this.dir,
        CONFAB_BIND: `127.0.0.1:${this.port}`,
        CONFAB_PUBLIC_URL: this.base,
        CONFAB_ADMIN_EMAIL: ADMIN_EMAIL,
        CONFAB_ADMIN_PASSWORD: ADMIN_PASSWORD,
        CONFAB_AUTH_RATE_PER_MINUTE: '0',
        CONFAB_LOG: 'warn',
        CONFAB_WORKERS: '2',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout.on('data', (d) => (this.log += d));
    this.proc.stderr.on('data', (d) => (this.log += d));
    this.exited = new Promise((ok) => this.proc.once('exit', (code, signal) => ok({ code, signal })));
    await waitFor('confab /healthz', async () => (await fetch(`${this.base}/healthz`)).ok, { timeout: 30000 });
  }

  /** SIGTERM (CONTRACT §1: drains, closes WebSockets with 1001), then the same data dir again. */
  async stop() {
    this.proc.kill('SIGTERM');
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 35000);
    const r = await this.exited;
    clearTimeout(killer);
    return r;
  }

  async close() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async call(method, path, { token, body } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(this.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  async ok(method, path, opts) {
    const r = await this.call(method, path, opts);
    if (r.status >= 300) throw new Error(`${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async login(email, password) {
    return (await this.ok('POST', '/auth/login', { body: { email, password } })).accessToken;
  }

  /** A staff member invited by the admin, signed up with the invite. */
  async agent(admin, email, firstName, lastName, password, phone) {
    const invite = await this.ok('POST', '/agent/invite', { token: admin, body: { email, role: 'agent' } });
    const signup = await this.ok('POST', '/auth/signup', {
      body: { email, password, firstName, lastName, phone, inviteToken: invite.inviteToken },
    });
    return { email, password, userId: signup.userId, token: await this.login(email, password) };
  }

  /** Sets a webhook secret this test knows on the bootstrap sandbox channel. */
  async sandbox(admin) {
    const ch = (await this.ok('GET', '/channel', { token: admin })).find((c) => c.provider === 'sandbox');
    this.secret = `console-test-${Date.now()}`;
    await this.ok('PUT', `/channel/${ch.channelId}`, {
      token: admin,
      body: { provider: 'sandbox', phoneNumber: ch.phoneNumber, displayName: ch.displayName, webhookSecret: this.secret },
    });
    this.channelId = ch.channelId;
  }

  /** CONTRACT §6 sandbox webhook, signed like a provider would (on another sandbox channel
   * with `{channelId, secret}`); `extra` adds message fields such as `reactsTo` (then `text`
   * is a reaction's emoji). */
  async customerSays(from, name, text, { channelId = this.channelId, secret = this.secret, extra = {} } = {}) {
    const raw = JSON.stringify({
      channelId,
      messages: [{ id: `sb-${Math.random().toString(16).slice(2)}${Date.now()}`, from, name, text, timestamp: new Date().toISOString(), ...extra }],
    });
    const sig = `sha256=${createHmac('sha256', secret).update(raw).digest('hex')}`;
    const res = await fetch(`${this.base}/webhooks/sandbox`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Confab-Signature': sig },
      body: raw,
    });
    if (res.status !== 200) throw new Error(`sandbox webhook → ${res.status} ${await res.text()}`);
  }
}
