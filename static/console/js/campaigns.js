// The "Campaigns" page (admins; README "Campaigns"): the company's campaigns with live counts,
// a form that creates a draft from a template and recipients (typed or loaded from a CSV
// file, uploaded as `text/csv` to POST /campaigns/{id}/recipients, so the server's CSV rules
// apply), and start / pause / resume / cancel.
//
// Live progress comes by polling GET /campaigns every 2 s while the page is open (and the tab
// visible): counts are a campaign's aggregate, not a conversation's event, and the WebSocket
// carries only conversation events; a campaign's thousands of message events would be the
// wrong thing to count from.

import * as api from './api.js';
import { $, h, toast } from './dom.js';
import { placeholderCount, renderTemplate } from './thread.js';

const POLL_MS = 2000;
const COUNTS = ['queued', 'sent', 'delivered', 'read', 'failed', 'skipped'];
const ACTIONS = {
  draft: ['start', 'cancel'],
  scheduled: ['pause', 'cancel'],
  running: ['pause', 'cancel'],
  paused: ['resume', 'cancel'],
};
const LABELS = { start: 'Start', pause: 'Pause', resume: 'Resume', cancel: 'Cancel' };

let timer = null;
let templates = [];
const rows = new Map(); // campaignId → {tr, status}

const dialog = () => $('#campaigns');

function fail(ex) {
  const err = $('#campaign-error');
  const fields = ex.fields ? Object.entries(ex.fields).map(([k, v]) => `${k}: ${v}`).join('; ') : '';
  err.textContent = fields || ex.message;
  err.hidden = false;
}

function selectedTemplate() {
  return templates.find((t) => String(t.templateId) === $('#campaign-template').value);
}

function paramValues() {
  return [...document.querySelectorAll('#campaign-params input')].map((i) => i.value);
}

function renderParams() {
  const t = selectedTemplate();
  const n = t ? placeholderCount(t.content) : 0;
  const box = $('#campaign-params');
  box.replaceChildren(
    ...Array.from({ length: n }, (_, i) =>
      h('label', { for: `campaign-param-${i + 1}` }, `{{${i + 1}}}`,
        h('input', { type: 'text', id: `campaign-param-${i + 1}`, required: true, 'aria-label': `Value of {{${i + 1}}} for everyone`, oninput: preview })),
    ),
  );
  preview();
}

function preview() {
  const t = selectedTemplate();
  $('#campaign-preview').textContent = t ? `Preview: ${renderTemplate(t.content, paramValues())}` : '';
}

async function loadChoices() {
  const [channels, tpls] = await Promise.all([api.get('/channel'), api.get('/template')]);
  templates = tpls;
  $('#campaign-channel').replaceChildren(
    ...channels.map((c) => h('option', { value: c.channelId }, `${c.displayName || c.phoneNumber} (${c.provider})`)),
  );
  $('#campaign-template').replaceChildren(
    ...tpls.map((t) => h('option', { value: t.templateId }, `${t.name} · ${t.language}`)),
  );
  renderParams();
}

function statusBadge(status) {
  return h('span', { class: 'campaign-status', dataset: { status } }, status);
}

function render(list) {
  const body = $('#campaign-table tbody');
  $('#campaign-empty').hidden = list.length > 0;
  const seen = new Set();
  for (const c of list) {
    seen.add(c.campaignId);
    let row = rows.get(c.campaignId);
    if (!row) {
      const tr = h('tr', { dataset: { campaignId: c.campaignId } });
      row = { tr, status: null };
      rows.set(c.campaignId, row);
    }
    const total = COUNTS.reduce((n, k) => n + c.counts[k], 0);
    const done = total - c.counts.queued;
    const cells = [
      h('td', {}, c.name),
      h('td', {}, statusBadge(c.status)),
      h('td', {}, h('progress', { max: total || 1, value: done, 'aria-label': `${done} of ${total} processed` }), ` ${done}/${total}`),
      ...COUNTS.map((k) => h('td', { class: 'num', dataset: { count: k } }, String(c.counts[k]))),
    ];
    // Buttons are rebuilt only when the status changes, so a poll never takes a click's focus.
    if (row.status !== c.status) {
      row.actions = h('td', {}, h('div', { class: 'actions' },
        ...(ACTIONS[c.status] || []).map((a) =>
          h('button', { type: 'button', class: a === 'start' || a === 'resume' ? 'primary' : '', 'aria-label': `${LABELS[a]} ${c.name}`, onclick: (e) => act(c.campaignId, a, e.currentTarget) }, LABELS[a]),
        ),
      ));
      row.status = c.status;
    }
    row.tr.replaceChildren(...cells, row.actions);
    body.append(row.tr); // keeps the server's order (newest first)
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  $('#campaigns-updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

async function refresh() {
  render(await api.get('/campaigns'));
}

async function act(id, action, button) {
  button.disabled = true;
  try {
    const c = await api.post(`/campaigns/${id}/${action}`);
    await refresh();
    toast(`${c.name}: ${c.status}`);
  } catch (ex) {
    button.disabled = false;
    toast(`Could not ${action} the campaign: ${ex.message}`, 'error');
  }
}

function schedule() {
  clearTimeout(timer);
  if (!dialog().open) return;
  timer = setTimeout(async () => {
    if (!document.hidden) await refresh().catch(() => {});
    schedule();
  }, POLL_MS);
}

async function create(e) {
  e.preventDefault();
  $('#campaign-error').hidden = true;
  const name = $('#campaign-name').value.trim();
  const csv = $('#campaign-recipients').value.trim();
  if (!name || !csv) {
    fail({ message: !name ? 'Give the campaign a name.' : 'Add at least one recipient.' });
    return;
  }
  const rate = $('#campaign-rate').value;
  const body = {
    name,
    channelId: Number($('#campaign-channel').value),
    templateId: Number($('#campaign-template').value),
    params: paramValues(),
  };
  if (rate) body.ratePerSecond = Number(rate);
  const button = $('#campaign-create');
  button.disabled = true;
  try {
    const c = await api.post('/campaigns', body);
    const added = await api.postCsv(`/campaigns/${c.campaignId}/recipients`, `${csv}\n`);
    const bad = added.invalid.map((l) => `line ${l.line}: ${l.error}`).join('; ');
    toast(`${c.name}: ${added.added} recipients${added.duplicates ? `, ${added.duplicates} duplicates dropped` : ''}${bad ? `; skipped ${bad}` : ''}`, bad ? 'error' : 'info');
    $('#campaign-form').reset();
    renderParams();
    await refresh();
  } catch (ex) {
    fail(ex);
  } finally {
    button.disabled = false;
  }
}

export function bindCampaigns(me) {
  const open = $('#campaigns-open');
  open.hidden = me.role !== 'admin';
  if (open.dataset.bound) return;
  open.dataset.bound = '1';
  open.addEventListener('click', async () => {
    $('#campaign-error').hidden = true;
    dialog().showModal();
    try {
      await Promise.all([loadChoices(), refresh()]);
    } catch (ex) {
      fail(ex);
    }
    schedule();
  });
  $('#campaigns-close').addEventListener('click', () => dialog().close());
  dialog().addEventListener('close', () => clearTimeout(timer));
  $('#campaign-template').addEventListener('change', renderParams);
  $('#campaign-form').addEventListener('submit', create);
  $('#campaign-csv').addEventListener('change', async (e) => {
    const file = e.target.files?.[0];
    if (file) $('#campaign-recipients').value = (await file.text()).trim();
  });
  api.onSessionEnd(() => {
    clearTimeout(timer);
    rows.clear();
    $('#campaign-table tbody').replaceChildren();
    if (dialog().open) dialog().close();
  });
}
