// The "Security" dialog: two-step sign-in with an authenticator app (TOTP). Enrol with
// POST /auth/create-qr-code + POST /auth/totp/confirm (which answers the recovery codes, shown
// once), replace the recovery codes or turn it off with a current code. GET /auth/check-qr-code
// says whether it is on.

import * as api from './api.js';
import { $, h } from './dom.js';

const show = (sel, on) => {
  $(sel).hidden = !on;
};

function state(view) {
  // view: 'loading' | 'off' | 'enrolling' | 'codes' | 'on'
  $('#security-status').textContent = {
    loading: 'Checking…',
    off: 'Two-step sign-in is off: your password alone opens your account.',
    enrolling: 'Two-step sign-in is being set up.',
    codes: 'Two-step sign-in is on.',
    on: 'Two-step sign-in is on: signing in asks for a code from your authenticator app.',
  }[view];
  show('#security-start', view === 'off');
  show('#security-enrol', view === 'enrolling');
  show('#security-confirm', view === 'enrolling');
  show('#security-codes', view === 'codes');
  show('#security-code-row', view === 'enrolling' || view === 'on');
  show('#security-regenerate', view === 'on');
  show('#security-disable', view === 'on');
  $('#security-otp').value = '';
  $('#security-otp').placeholder = view === 'on' ? 'App code or recovery code' : '123456';
}

function fail(ex) {
  const err = $('#security-error');
  err.textContent =
    ex.code === 'invalid_otp'
      ? 'That code did not work. Enter the current code from your app.'
      : ex.status === 429
        ? `Too many attempts; try again in ${ex.retryAfter || 60} seconds.`
        : ex.message;
  err.hidden = false;
}

function showCodes(codes) {
  $('#security-code-list').replaceChildren(...codes.map((c) => h('li', {}, h('code', {}, c))));
  state('codes');
}

async function run(fn) {
  $('#security-error').hidden = true;
  try {
    await fn();
  } catch (ex) {
    fail(ex);
  }
}

const code = () => $('#security-otp').value.trim();

export function bindSecurity() {
  const dialog = $('#security');
  $('#security-open').addEventListener('click', () => {
    state('loading');
    dialog.showModal();
    run(async () => state((await api.get('/auth/check-qr-code')).isGenerated ? 'on' : 'off'));
  });
  $('#security-start').addEventListener('click', () =>
    run(async () => {
      const qr = await api.post('/auth/create-qr-code');
      $('#security-qr').src = qr.qrCode;
      $('#security-secret').textContent = qr.secret;
      state('enrolling');
      $('#security-otp').focus();
    }),
  );
  $('#security-confirm').addEventListener('click', () =>
    run(async () => showCodes((await api.post('/auth/totp/confirm', { otp: code() })).recoveryCodes)),
  );
  $('#security-regenerate').addEventListener('click', () =>
    run(async () => showCodes((await api.post('/auth/totp/recovery-codes', { otp: code() })).recoveryCodes)),
  );
  $('#security-disable').addEventListener('click', () =>
    run(async () => {
      await api.post('/auth/totp/disable', { otp: code() });
      state('off');
    }),
  );
  // Enter in the code field presses the step's button, not the dialog's Close.
  $('#security-otp').addEventListener('keydown', (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    (!$('#security-confirm').hidden ? $('#security-confirm') : $('#security-disable')).click();
  });
}
