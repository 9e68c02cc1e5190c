// The official Fynd JavaScript SDK (@gofynd/fdk-client-javascript, unchanged, with
// `strictResponseCheck` on so every answer is validated against the SDK's own schemas) against
// target/debug/confab: the platform client authenticates through confab's panel OAuth
// (client credentials of an auth client), the application client with an application token
// and the `f.session` cookie (CONTRACT §9, issue 9 "done when").

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { ADMIN_EMAIL, ADMIN_PASSWORD, Confab } from '../browser/server.mjs';

const require = createRequire(import.meta.url);
const { ApplicationConfig, ApplicationClient, PlatformConfig, PlatformClient } = require('@gofynd/fdk-client-javascript');

let confab;
let platform; // PlatformClient
let sdkConfig; // PlatformConfig
let company;
let appId;
let appToken;

async function api(method, path, token, body) {
  const res = await fetch(`${confab.base}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** The `f.session=…` pair of a response's Set-Cookie header. */
function sessionCookie(headers) {
  const raw = headers['set-cookie'];
  const line = (Array.isArray(raw) ? raw : [raw]).find((c) => c && c.startsWith('f.session='));
  assert.ok(line, `a session cookie in ${JSON.stringify(raw)}`);
  return line.split(';')[0];
}

/** The newest 6-digit code texted to `e164`, read from the server's SMS outbox files. */
function lastCode(e164) {
  const dir = join(confab.dir, 'outbox', 'sms');
  const texts = readdirSync(dir)
    .filter((f) => !f.startsWith('.'))
    .sort()
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .filter((t) => t.startsWith(`To: ${e164}`));
  const match = texts.at(-1)?.match(/\b(\d{6})\b/);
  assert.ok(match, `a code for ${e164}`);
  return match[1];
}

function storefront() {
  const config = new ApplicationConfig(
    { applicationID: String(appId), applicationToken: appToken, domain: confab.base },
    { strictResponseCheck: true },
  );
  return { config, client: new ApplicationClient(config) };
}

before(async () => {
  confab = await Confab.start();
  const login = await api('POST', '/auth/login', null, { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  const admin = login.body.accessToken;
  company = (await api('GET', '/auth/me', admin)).body.companyId;
  const created = await api('POST', '/application', admin, { name: 'sdkshop', domain: 'sdkshop.test' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  ({ applicationId: appId, token: appToken } = created.body);
  const client = await api('POST', '/auth-clients', admin, { clientId: 'fdk-extension', grants: ['client_credentials'] });
  assert.equal(client.status, 201, JSON.stringify(client.body));

  sdkConfig = new PlatformConfig(
    {
      companyId: String(company),
      domain: confab.base,
      apiKey: client.body.clientId,
      apiSecret: client.body.clientSecret,
      useAutoRenewTimer: false,
    },
    { strictResponseCheck: true },
  );
  // The SDK's own token request: form-encoded client credentials in a Basic header.
  const token = await sdkConfig.oauthClient.getAccesstokenObj({ grant_type: 'client_credentials' });
  sdkConfig.oauthClient.setToken(token);
  sdkConfig.oauthClient.token_expires_at = Date.now() + token.expires_in * 1000;
  platform = new PlatformClient(sdkConfig);
});

after(async () => {
  await confab?.close();
});

test('platform client: customers, sessions, config and groups through the SDK', async () => {
  const user = platform.application(String(appId)).user;
  const created = await user.createUser({
    body: {
      phone_number: '+918652523958',
      email: 'akash@sdkshop.test',
      first_name: 'Akash',
      last_name: 'Mane',
      gender: 'male',
      username: 'akash_sdk',
      meta: {},
    },
  });
  const id = created.user._id;
  assert.equal(typeof id, 'string');

  const list = await user.getCustomers({ pageSize: 10, pageNo: 1 });
  assert.equal(list.items.length, 1);
  assert.equal(list.page.item_total, 1);
  const found = await user.searchUsers({ q: 'akash@sdkshop.test' });
  assert.equal(found.users[0]._id, id);
  const updated = await user.updateUser({ userId: id, body: { first_name: 'Akash K', gender: 'male' } });
  assert.equal(updated.user.first_name, 'Akash K');

  const session = await user.createUserSession({ body: { user_id: id, domain: 'sdkshop.test', max_age: 3600 } });
  assert.ok(session.cookie['f.session']);
  const sessions = await user.getActiveSessions({ id });
  assert.equal(sessions.items.length, 1);

  const config = await user.getPlatformConfig();
  assert.equal(config.register, true);
  const changed = await user.updatePlatformConfig({ body: { ...config, flash_card: { text: 'Welcome', text_color: '#000000', background_color: '#FFFFFF' } } });
  assert.equal(changed.flash_card.text, 'Welcome');

  const group = await user.createUserGroup({ body: { name: 'VIP', description: 'Best customers' } });
  const groupId = group._id;
  assert.equal(typeof group.uid, 'number');
  const groups = await user.getUserGroups({ pageNo: '1', pageSize: '10' });
  assert.equal(groups.items.length, 1);
  assert.equal((await user.getUserGroupById({ groupId })).name, 'VIP');
  assert.equal((await user.updateUserGroup({ groupId, body: { name: 'VIPs', description: 'Best' } })).name, 'VIPs');
  await user.updateUserGroupPartially({ groupId, body: { user_data: [{ user_id: id, action: 'add' }] } });

  const blocked = await user.blockOrUnblockUsers({ body: { user_id: [id], status: false, reason: 'fraud' } });
  assert.equal(blocked.success, true);
  assert.equal((await user.getActiveSessions({ id })).items.length, 0, 'blocking ends the sessions');
  await user.blockOrUnblockUsers({ body: { user_id: [id], status: true, reason: 'cleared' } });
  const archived = await user.archiveUser({ body: { user_id: id } });
  assert.equal(archived.success, true);
});

test('platform token renewal: the SDK refresh grant rotates the token', async () => {
  const spent = sdkConfig.oauthClient.refreshToken;
  await sdkConfig.oauthClient.renewAccessToken();
  assert.ok(sdkConfig.oauthClient.refreshToken);
  assert.notEqual(sdkConfig.oauthClient.refreshToken, spent, 'refresh tokens rotate');
  const list = await platform.application(String(appId)).user.getCustomers({ pageSize: 5, pageNo: 1 });
  assert.ok(Array.isArray(list.items));
});

test('application client: register, log in, session, logout with the f.session cookie', async () => {
  const { config, client } = storefront();
  const [registered, headers] = await client.user.registerWithForm(
    {
      body: {
        first_name: 'Riya',
        last_name: 'Shah',
        gender: 'female',
        email: 'riya@sdkshop.test',
        password: 'password-123',
        phone: { country_code: '91', mobile: '9812300077' },
      },
    },
    { responseHeaders: true },
  );
  assert.equal(registered.success, true);
  config.setCookie(sessionCookie(headers));
  const me = await client.user.getLoggedInUser();
  assert.equal(me.user.first_name, 'Riya');
  assert.equal((await client.user.hasPassword()).result, 1);
  assert.ok((await client.user.getListOfActiveSessions()).sessions.length >= 1);
  assert.equal((await client.user.logout()).logout, true);

  const { config: again, client: fresh } = storefront();
  const [loggedIn, loginHeaders] = await fresh.user.loginWithEmailAndPassword(
    { body: { username: 'riya@sdkshop.test', password: 'password-123' } },
    { responseHeaders: true },
  );
  assert.equal(loggedIn.user.first_name, 'Riya');
  again.setCookie(sessionCookie(loginHeaders));
  assert.equal((await fresh.user.getLoggedInUser()).user.first_name, 'Riya');
  assert.equal((await fresh.user.userExists({ q: 'riya@sdkshop.test' })).user_exists, true);
  const cfg = await fresh.user.getPlatformConfig();
  assert.equal(cfg.register, true);
});

test('application client: loginWithToken takes over a session the platform made', async () => {
  const user = platform.application(String(appId)).user;
  const created = await user.createUser({ body: { phone_number: '+918652500011', first_name: 'Tok' } });
  const session = await user.createUserSession({ body: { user_id: created.user._id } });
  const { config, client } = storefront();
  const [answer, headers] = await client.user.loginWithToken(
    { body: { token: session.cookie['f.session'] } },
    { responseHeaders: true },
  );
  assert.equal(answer.user._id, created.user._id);
  config.setCookie(sessionCookie(headers));
  assert.equal((await client.user.getLoggedInUser()).user._id, created.user._id);
  await assert.rejects(client.user.loginWithToken({ body: { token: session.cookie['f.session'] } }), 'single use');
});

test('wrong credentials are refused', async () => {
  const bad = new PlatformConfig(
    { companyId: String(company), domain: confab.base, apiKey: 'fdk-extension', apiSecret: 'not-the-secret-000', useAutoRenewTimer: false },
  );
  await assert.rejects(bad.oauthClient.getAccesstokenObj({ grant_type: 'client_credentials' }));
  const wrongApp = new ApplicationClient(
    new ApplicationConfig({ applicationID: String(appId), applicationToken: 'wrong-token', domain: confab.base }),
  );
  await assert.rejects(wrongApp.user.getPlatformConfig());
});

test('platform client: end one session, end all sessions', async () => {
  const user = platform.application(String(appId)).user;
  const created = await user.createUser({ body: { phone_number: '+918652500022', first_name: 'Sess' } });
  const id = created.user._id;
  await user.createUserSession({ body: { user_id: id } });
  await user.createUserSession({ body: { user_id: id } });
  const { items } = await user.getActiveSessions({ id });
  assert.equal(items.length, 2);
  await user.deleteSession({ id, sessionId: items[0].session_id, reason: 'lost phone' });
  assert.equal((await user.getActiveSessions({ id })).items.length, 1);
  await user.deleteActiveSessions({ id, reason: 'password reset' });
  assert.equal((await user.getActiveSessions({ id })).items.length, 0);
  const group = await user.createUserGroup({ body: { name: 'Temp', description: 'temporary' } });
  await user.updateUserGroupPartially({ groupId: group._id, body: { user_data: [{ user_id: id, action: 'add' }] } });
  await user.updateUserGroupPartially({ groupId: group._id, body: { user_data: [{ user_id: id, action: 'remove' }] } });
});

test('application client: OTP login on mobile, profile, e-mails, attributes, password', async () => {
  const { config, client } = storefront();
  const sent = await client.user.loginWithOTP({ body: { country_code: '91', mobile: '9812300077' } });
  assert.equal(sent.success, true);
  assert.equal(typeof sent.request_id, 'string');
  const [verified, headers] = await client.user.verifyMobileOTP(
    { body: { request_id: sent.request_id, otp: lastCode('+919812300077') } },
    { responseHeaders: true },
  );
  assert.equal(verified.user_exists, true);
  assert.equal(verified.user.first_name, 'Riya');
  config.setCookie(sessionCookie(headers));

  const edited = await client.user.updateProfile({ body: { first_name: 'Riya', last_name: 'Shah-Mehta', gender: 'female' } });
  assert.equal(edited.user.last_name, 'Shah-Mehta');
  const added = await client.user.addEmail({ body: { email: 'riya.work@sdkshop.test' } });
  assert.ok(added.user.emails.some((e) => e.email === 'riya.work@sdkshop.test'));
  const removed = await client.user.deleteEmail({ active: true, primary: false, verified: false, email: 'riya.work@sdkshop.test' });
  assert.ok(!removed.user.emails.some((e) => e.email === 'riya.work@sdkshop.test'));
  await client.user.updateUserAttributes({ body: { attributes: { tier: 'gold' } } });
  const attrs = await client.user.getUserAttributes({});
  assert.equal(attrs.attributes.tier, 'gold');
  await client.user.updatePassword({ body: { old_password: 'password-123', new_password: 'password-456' } });
  const reset = await client.user.sendResetPasswordEmail({ body: { email: 'riya@sdkshop.test' } });
  assert.equal(reset.status, 'sent');
  const { client: fresh } = storefront();
  const again = await fresh.user.loginWithEmailAndPassword({ body: { username: 'riya@sdkshop.test', password: 'password-456' } });
  assert.equal(again.user.last_name, 'Shah-Mehta');
});
