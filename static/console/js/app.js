// The console's entry: login, the shell, and the wiring between the REST client, the live
// connection, the inbox and the open conversation.

import * as api from './api.js';
import { $, personName, toast } from './dom.js';
import { Live } from './realtime.js';
import { Inbox } from './inbox.js';
import { Thread } from './thread.js';
import { bindSecurity } from './security.js';
import { bindCampaigns } from './campaigns.js';

const POLL_MS = 4000;
const POLL_HIDDEN_MS = 15000;

const MODE_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  offline: 'Offline — reconnecting; messages are queued',
  polling: 'No live connection — refreshing every few seconds',
};

let live, inbox, thread, pollTimer;
let agentNameOf = (id) => `Agent #${id}`;
const restQueue = new Map(); // clientId → local message, REST sends waiting for the network

function askForCode(ask) {
  $('#login-otp-row').hidden = !ask;
  if (!ask) $('#login-otp').value = '';
}

function showLogin(reason) {
  $('#app-view').hidden = true;
  $('#login-view').hidden = false;
  askForCode(false);
  const err = $('#login-error');
  err.hidden = !reason;
  err.textContent = reason || '';
  $('#login-email').focus();
}

async function onLogin(e) {
  e.preventDefault();
  const email = $('#login-email').value.trim();
  const password = $('#login-password').value;
  const otp = $('#login-otp-row').hidden ? '' : $('#login-otp').value.trim();
  const err = $('#login-error');
  const button = $('#login-submit');
  err.hidden = true;
  if (!email || !password) {
    err.textContent = 'Enter your e-mail and password.';
    err.hidden = false;
    return;
  }
  button.disabled = true;
  button.textContent = 'Signing in…';
  try {
    const user = await api.login(email, password, otp);
    if (user.role !== 'agent' && user.role !== 'admin') {
      await api.logout();
      throw new api.ApiError(403, { message: 'This console is for agents and admins.' });
    }
    $('#login-password').value = '';
    askForCode(false);
    await start(user);
  } catch (ex) {
    if (ex.code === 'mfa_required') {
      askForCode(true);
      $('#login-otp').focus();
    }
    if (ex.code === 'invalid_credentials') askForCode(false);
    err.textContent =
      ex.code === 'invalid_credentials'
        ? 'Wrong e-mail or password.'
        : ex.code === 'mfa_required'
          ? 'Enter the code from your authenticator app to finish signing in.'
          : ex.code === 'invalid_otp'
          ? 'That code did not work. Enter the current code from your app, or a recovery code.'
          : ex.status === 429
          ? `Too many attempts; try again in ${ex.retryAfter || 60} seconds.`
          : ex.message;
    err.hidden = false;
  } finally {
    button.disabled = false;
    button.textContent = 'Sign in';
  }
}

async function start(me) {
  $('#login-view').hidden = true;
  $('#app-view').hidden = false;
  $('#me-name').textContent = `${personName(me)} · ${me.role}`;
  bindCampaigns(me);
  // Names for the assignee picker: admins may list agents; agents know themselves.
  const agents = new Map([[me.userId, personName(me)]]);
  let canListAgents = false;
  if (me.role === 'admin') {
    try {
      for (const a of await api.get('/agent')) if (a.status === 'active') agents.set(a.userId, personName(a));
      canListAgents = true;
    } catch {
      /* the picker then offers me and unassigned */
    }
  }
  const agentName = (id) => agents.get(id) || `Agent #${id}`;
  agentNameOf = agentName;
  live = new Live();
  inbox = new Inbox({ me, agentName, onOpen: openConversation });
  thread = new Thread({ live, inbox, me, agents, canListAgents });
  live.addEventListener('mode', (e) => modeChanged(e.detail));
  live.addEventListener('event', (e) => liveEvent(e.detail));
  live.addEventListener('subscribed', () => thread.markRead());
  live.addEventListener('resumed', () => {
    // The inbox feed has no replay: after a gap, refresh the first page once.
    inbox.poll().catch(() => {});
  });
  live.addEventListener('resync', (e) => {
    if (e.detail.conversationId === thread.id) thread.loadLatest(false).catch(() => {});
  });
  live.addEventListener('ack', (e) => thread.updateLocal(e.detail.clientId, { messageId: e.detail.messageId }));
  live.addEventListener('error', (e) => {
    const f = e.detail;
    if (f.clientId) thread.updateLocal(f.clientId, { local: 'error', error: explain(f) });
    else toast(`Server: ${f.message || f.code}`, 'error');
  });
  modeChanged(live.mode);
  live.start();
  await inbox.reload();
  schedulePoll();
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) {
      thread.markRead();
      schedulePoll(0);
    }
  });
}

function explain(f) {
  if (f.code === 'window_closed') return 'the 24-hour window is closed — send a template';
  return f.message || f.code;
}

function modeChanged(mode) {
  const conn = $('#conn');
  conn.dataset.mode = mode;
  $('#conn-text').textContent = MODE_TEXT[mode] || mode;
  conn.title = mode === 'polling' && live.supported === false ? 'This server does not offer WebSocket (/ws); updates come by polling.' : '';
  if (mode === 'polling') schedulePoll(0);
}

function liveEvent(f) {
  const viewing = thread.id === f.conversationId && !document.hidden;
  switch (f.event) {
    case 'message.created':
      inbox.messageCreated(f.data, { viewing });
      break;
    case 'message.updated':
      inbox.messageUpdated(f.data);
      break;
    case 'conversation.created':
    case 'conversation.updated':
      inbox.upsert(f.data);
      thread.conversationUpdated(f.data);
      break;
    case 'mention': {
      // A private note @-mentions this agent (issue 22): say who and where.
      const conv = inbox.convs.get(f.data.conversationId);
      const where = conv ? ` in the conversation with ${personName(conv.user)}` : '';
      toast(`${f.data.byName || agentNameOf(f.data.byId)} mentioned you${where}: ${f.data.content || ''}`, 'mention');
      break;
    }
    default:
      break;
  }
  thread.event(f);
}

function openConversation(id) {
  inbox.setOpen(id);
  document.body.classList.add('show-thread');
  thread.open(id).catch((e) => toast(`Could not open the conversation: ${e.message}`, 'error'));
  // To the composer, unless the agent has meanwhile gone to type elsewhere (the search box).
  setTimeout(() => {
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName)) return;
    $('#composer-input, #template-select')?.focus();
  }, 50);
}

// ---- sending: WebSocket when live (or queued for it), REST when this server has no /ws ----

document.addEventListener('console:send', (e) => {
  const m = e.detail;
  const r = m.request;
  if (live.supported !== false && live.mode !== 'polling') {
    const sent = live.send({
      type: 'send',
      conversationId: m.conversationId,
      clientId: m.clientId,
      text: r.text ?? null,
      attachmentIds: r.attachment ? [r.attachment.attachmentId] : [],
      templateId: r.templateId ?? null,
      params: r.params ?? [],
      private: Boolean(r.private),
      sendAt: r.sendAt ?? null,
      fallbackTemplateId: r.fallbackTemplateId ?? null,
    });
    thread.updateLocal(m.clientId, { local: sent ? 'sending' : 'queued' });
    return;
  }
  restSend(m);
});

async function restSend(m) {
  const r = m.request;
  const body = { conversationId: m.conversationId, clientId: m.clientId };
  if (r.templateId) Object.assign(body, { type: 'template', templateId: r.templateId, params: r.params });
  else if (r.attachment) Object.assign(body, { type: r.attachment.documentType?.toLowerCase() || 'document', attachmentId: r.attachment.attachmentId, text: r.text || undefined });
  else Object.assign(body, { type: 'text', text: r.text });
  if (r.private) body.private = true;
  if (r.sendAt) Object.assign(body, { sendAt: r.sendAt, fallbackTemplateId: r.fallbackTemplateId ?? undefined, params: r.templateId ? body.params : r.params });
  try {
    const msg = await api.post('/message', body);
    restQueue.delete(m.clientId);
    thread.upsert(msg);
    inbox.messageCreated(msg, { viewing: true });
  } catch (ex) {
    if (ex.offline) {
      restQueue.set(m.clientId, m);
      thread.updateLocal(m.clientId, { local: 'queued' });
      modeChanged('offline');
    } else {
      restQueue.delete(m.clientId);
      thread.updateLocal(m.clientId, { local: 'error', error: explain(ex) });
    }
  }
}

// Messages queued for the socket move to REST if the server turns out to have no /ws.
function flushToRest() {
  for (const f of live.outbox.values()) {
    const key = thread.pendingByClient?.get(f.clientId);
    const m = key && thread.msgs.get(key);
    live.outbox.delete(f.clientId);
    if (m) restSend(m);
  }
  for (const m of restQueue.values()) restSend(m);
}

// ---- REST polling (only while there is no live connection) ----

function schedulePoll(delay) {
  clearTimeout(pollTimer);
  if (!live) return;
  pollTimer = setTimeout(poll, delay ?? (document.hidden ? POLL_HIDDEN_MS : POLL_MS));
}

async function poll() {
  const active = live && live.mode === 'polling';
  try {
    if (active) {
      await inbox.poll();
      if (thread.id != null) await thread.loadLatest(false);
      if ($('#conn').dataset.mode === 'offline') modeChanged(live.mode);
      flushToRest();
    }
  } catch (e) {
    if (e.offline) modeChanged('offline');
  } finally {
    // Keep ticking in every mode: polling starts by itself when the socket gives up.
    if (live) schedulePoll();
  }
}

// ---- shell ----

function bindShell() {
  $('#login-form').addEventListener('submit', onLogin);
  $('#logout').addEventListener('click', () => api.logout().catch(() => {}));
  bindSecurity();
  api.onSessionEnd((reason) => {
    clearTimeout(pollTimer);
    thread?.close();
    live?.stop();
    live = inbox = thread = null;
    restQueue.clear();
    document.body.classList.remove('show-thread');
    if ($('#security').open) $('#security').close();
    showLogin(reason === 'logout' ? '' : 'Your session ended. Please sign in again.');
  });
  document.addEventListener('console:back', back);
  document.addEventListener('console:open', (e) => thread && openConversation(e.detail));
  document.addEventListener('keydown', (e) => {
    if (!thread || $('#security').open || $('#campaigns').open) return;
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName);
    if (e.key === '/' && !typing) {
      e.preventDefault();
      $('#search').focus();
    } else if (e.key === 'Escape' && document.activeElement?.id !== 'search') {
      back();
    }
  });
}

function back() {
  document.body.classList.remove('show-thread');
  const row = document.querySelector('.conv[aria-selected="true"]') || document.querySelector('.conv');
  row?.focus();
}

bindShell();
showLogin('');
