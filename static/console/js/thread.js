// One open conversation: the message thread, the composer (text, attachments, templates), the
// 24-hour window, and the conversation's status, assignee and labels.

import { get, patch, post, del, blob, upload } from './api.js';
import { $, h, icon, personName, clock, dayLabel, sameDay, hms, fileSize, toast, menuButton } from './dom.js';
import { openMergeDialog } from './merge.js';

const PAGE = 30;
const STATUS_RANK = { SCHEDULED: -1, PENDING: 0, SENT: 1, DELIVERED: 2, READ: 3, FAILED: 4 };
const TICKS = { SENT: '✓', DELIVERED: '✓✓', READ: '✓✓', FAILED: '!' };
const STATUS_WORDS = { SCHEDULED: 'Scheduled', PENDING: 'Pending', SENT: 'Sent', DELIVERED: 'Delivered', READ: 'Read', FAILED: 'Failed' };
// Provider error codes an agent can act on (CONTRACT §6; providers.md).
const REASONS = {
  131047: 'the 24-hour window had closed: send a template',
  131026: 'the number cannot receive this message',
  131051: 'unsupported message type',
  131053: 'the media could not be uploaded',
  131048: 'rate limited by WhatsApp (spam limit)',
  131056: 'too many messages to this number',
  63016: 'the 24-hour window had closed: send a template',
  21211: 'invalid phone number',
  21610: 'the customer unsubscribed (STOP)',
  window_closed: 'the 24-hour window had closed by the scheduled time and no fallback template was set',
  fallback_template_unusable: 'the fallback template was deleted or changed after the message was scheduled',
};

// The reactions an agent picks from (issue 22); WhatsApp takes any emoji.
const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

// Agents may edit their messages for 15 minutes (issue 22; the server checks it too).
const EDIT_MS = 15 * 60 * 1000;

const whenFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
/** "Mon 7 Dec, 09:00": a time to come (a snooze's end, a scheduled send). */
const when = (iso) => whenFmt.format(new Date(iso));

const forward = (next, cur) =>
  next === 'FAILED' ? STATUS_RANK[cur] <= STATUS_RANK.SENT : cur !== 'FAILED' && STATUS_RANK[next] > STATUS_RANK[cur];

export class Thread {
  constructor({ live, inbox, me, agents, canListAgents }) {
    this.live = live;
    this.inbox = inbox;
    this.me = me;
    this.agents = agents; // Map id → name
    this.canListAgents = canListAgents;
    this.root = $('#thread');
    this.id = null;
    this.templates = null;
    this.readSent = new Map(); // conversation id → last seq sent in a read mark
  }

  // ---- lifecycle ----

  async open(id) {
    if (this.id === id) return;
    this.close();
    this.id = id;
    this.msgs = new Map(); // key (messageId, or clientId while local) → message
    this.els = new Map(); // key → element
    this.pendingByClient = new Map(); // clientId → key of the local message
    this.oldestId = null;
    this.noMore = false;
    this.typers = new Map();
    this.mode = 'text';
    const view = this.inbox.convs.get(id);
    this.build(view);
    // Subscribe before the REST load: events after the view's lastSeq arrive on the socket,
    // older ones are in the page; a message in both is the same key and shows once.
    this.live.subscribe(id, view?.lastSeq);
    await Promise.all([this.loadLatest(true), this.loadWindow()]);
  }

  close() {
    if (this.id == null) return;
    this.typingOff();
    this.live.unsubscribe(this.id);
    clearInterval(this.windowTimer);
    for (const t of this.typers?.values() || []) clearTimeout(t.timer);
    for (const url of this.urls || []) URL.revokeObjectURL(url);
    this.urls = [];
    this.observer?.disconnect();
    this.id = null;
    this.root.replaceChildren();
  }

  // ---- layout ----

  build(view) {
    const name = view ? personName(view.user) : `Conversation ${this.id}`;
    this.header = h('header', { class: 'thread-head' });
    this.list = h('div', { class: 'messages', role: 'log', 'aria-label': `Messages with ${name}`, 'aria-live': 'polite', tabindex: '0' });
    this.top = h('div', { class: 'top-sentinel', 'aria-hidden': 'true' });
    this.scroller = h('div', { class: 'scroller' }, this.top, this.list);
    this.typingEl = h('p', { class: 'typing', 'aria-live': 'polite' });
    this.composer = h('div', { class: 'composer' });
    this.root.replaceChildren(this.header, this.scroller, this.typingEl, this.composer);
    this.root.hidden = false;
    $('#thread-empty').hidden = true;
    this.renderHeader(view);
    this.renderComposer();
    this.observer = new IntersectionObserver((en) => en.some((e) => e.isIntersecting) && this.loadOlder(), { root: this.scroller });
  }

  renderHeader(view) {
    if (!view) view = this.inbox.convs.get(this.id);
    const back = h('button', { type: 'button', class: 'ghost back', 'aria-label': 'Back to conversations', onclick: () => document.dispatchEvent(new CustomEvent('console:back')) }, '←');
    if (!view) {
      this.header.replaceChildren(back, h('h2', {}, `Conversation ${this.id}`));
      return;
    }
    const status = h(
      'select',
      { id: 'conv-status', 'aria-label': 'Conversation status', onchange: (e) => this.patch({ status: e.target.value }) },
      ['open', 'pending', 'resolved', 'snoozed'].map((s) => h('option', { value: s, selected: s === view.status }, s[0].toUpperCase() + s.slice(1))),
    );
    const options = [h('option', { value: '' }, 'Unassigned'), h('option', { value: String(this.me.userId) }, `Me (${personName(this.me)})`)];
    for (const [aid, aname] of this.agents) if (aid !== this.me.userId) options.push(h('option', { value: String(aid) }, aname));
    if (view.assigneeId != null && view.assigneeId !== this.me.userId && !this.agents.has(view.assigneeId))
      options.push(h('option', { value: String(view.assigneeId) }, `Agent #${view.assigneeId}`));
    const assign = h('select', { id: 'conv-assignee', 'aria-label': 'Assignee', onchange: (e) => this.patch({ assigneeId: e.target.value ? Number(e.target.value) : null }) }, options);
    assign.value = view.assigneeId == null ? '' : String(view.assigneeId);
    const labelInput = h('input', {
      id: 'label-input',
      type: 'text',
      placeholder: 'Add label',
      'aria-label': 'Add a label',
      maxlength: '64',
      onkeydown: (e) => {
        if (e.key !== 'Enter' || !e.target.value.trim()) return;
        e.preventDefault();
        this.patch({ labels: [...(view.labels || []), e.target.value.trim()] });
      },
    });
    const labels = h(
      'ul',
      { class: 'labels', 'aria-label': 'Labels' },
      (view.labels || []).map((l) =>
        h('li', { class: 'chip label' }, l, h('button', { type: 'button', class: 'chip-x', 'aria-label': `Remove label ${l}`, onclick: () => this.patch({ labels: view.labels.filter((x) => x !== l) }) }, '×')),
      ),
      h('li', {}, labelInput),
    );
    this.windowEl = this.windowEl || h('span', { class: 'window', role: 'timer', 'aria-live': 'off' });
    const snoozed =
      view.status === 'snoozed'
        ? h('span', { class: 'chip snoozed-until', title: 'A customer message reopens it at once' }, `Snoozed until ${view.snoozedUntil ? when(view.snoozedUntil) : 'the customer replies'}`)
        : null;
    // Merged (issue 22): its messages are in the other conversation, one click away.
    const merged =
      view.mergedInto != null
        ? h(
            'span',
            { class: 'chip merged-into' },
            `Merged into #${view.mergedInto}`,
            h('button', { type: 'button', class: 'chip-x', onclick: () => document.dispatchEvent(new CustomEvent('console:open', { detail: view.mergedInto })) }, 'Open'),
          )
        : h(
            'button',
            {
              type: 'button',
              class: 'ghost merge',
              onclick: () =>
                openMergeDialog(view, {
                  onMerged: (target) => {
                    this.inbox.upsert(target);
                    document.dispatchEvent(new CustomEvent('console:open', { detail: target.conversationId }));
                  },
                }),
            },
            'Merge…',
          );
    // `replaceChildren` would write a null out as the text "null": absent parts are dropped.
    this.header.replaceChildren(
      ...[
        back,
        h('div', { class: 'who' }, h('h2', {}, personName(view.user)), h('span', { class: 'muted phone' }, view.user?.phone || '')),
        this.windowEl,
        snoozed,
        h('div', { class: 'controls' }, status, this.snoozeMenu(), merged, assign),
        labels,
      ].filter(Boolean),
    );
  }

  /** Snooze presets (issue 22): the conversation reopens by itself at that time, or when the
   * customer writes. */
  snoozeMenu() {
    const at = (days, hour, weekday) => {
      const d = new Date();
      if (weekday != null) days = ((weekday - d.getDay() + 7) % 7) || 7;
      d.setDate(d.getDate() + days);
      d.setHours(hour, 0, 0, 0);
      return d;
    };
    const snooze = (until) => this.patch({ status: 'snoozed', ...(until ? { snoozedUntil: until.toISOString() } : {}) });
    return menuButton({ label: 'Snooze', text: 'Snooze', cls: 'snooze' }, [
      { label: 'For 1 hour', onclick: () => snooze(new Date(Date.now() + 3600e3)) },
      { label: 'Until tomorrow, 9:00', onclick: () => snooze(at(1, 9)) },
      { label: 'Until Monday, 9:00', onclick: () => snooze(at(0, 9, 1)) },
      { label: 'Until the customer replies', onclick: () => snooze(null) },
    ]);
  }

  async patch(body) {
    try {
      const view = await patch(`/conversation/${this.id}`, body);
      this.inbox.upsert(view);
      this.conversationUpdated(view);
      if (body.labels) $('#label-input')?.focus();
    } catch (e) {
      toast(`Could not update the conversation: ${e.message}`, 'error');
      this.renderHeader();
    }
  }

  conversationUpdated(view) {
    if (view.conversationId !== this.id) return;
    const focused = document.activeElement?.id;
    this.renderHeader(this.inbox.convs.get(this.id) || view);
    if (focused && this.header.querySelector(`#${focused}`)) this.header.querySelector(`#${focused}`).focus();
  }

  // ---- loading ----

  async loadLatest(first) {
    const id = this.id;
    const page = await get(`/message/message-page-list/${id}?limit=${PAGE}`).catch((e) => {
      if (first) this.list.replaceChildren(h('p', { class: 'form-error' }, `Could not load messages: ${e.message}`));
      throw e;
    });
    if (id !== this.id) return;
    for (const m of page.data) this.upsert(m, { quiet: true });
    if (first) {
      this.noMore = page.data.length < PAGE;
      this.oldestId = page.data.length ? page.data[page.data.length - 1].messageId : null;
    }
    this.render({ stick: first ? 'bottom' : 'auto' });
    if (first) this.observer.observe(this.top);
    this.markRead();
  }

  async loadOlder() {
    if (this.noMore || this.loadingOlder || !this.oldestId) return;
    const id = this.id;
    this.loadingOlder = true;
    try {
      const page = await get(`/message/message-page-list/${id}?limit=${PAGE}&before=${this.oldestId}`);
      if (id !== this.id) return;
      for (const m of page.data) this.upsert(m, { quiet: true });
      this.noMore = page.data.length < PAGE;
      if (page.data.length) this.oldestId = page.data[page.data.length - 1].messageId;
      this.render({ stick: 'keep' });
    } catch (e) {
      toast(`Could not load older messages: ${e.message}`, 'error');
    } finally {
      this.loadingOlder = false;
    }
  }

  async loadWindow() {
    const id = this.id;
    try {
      const r = await get(`/conversation/chat-time-report/${id}`);
      if (id !== this.id) return;
      this.windowEnds = Date.now() + r.duration * 1000;
    } catch {
      this.windowEnds = null;
    }
    clearInterval(this.windowTimer);
    this.tickWindow();
    this.windowTimer = setInterval(() => this.tickWindow(), 1000);
  }

  tickWindow() {
    const left = this.windowEnds == null ? null : Math.round((this.windowEnds - Date.now()) / 1000);
    const open = left != null && left > 0;
    if (this.windowEl) {
      this.windowEl.dataset.open = String(open);
      this.windowEl.textContent = left == null ? '' : open ? `Window closes in ${hms(left)}` : '24-hour window closed';
      this.windowEl.title = 'WhatsApp allows free text for 24 hours after the customer’s last message; after that only templates.';
    }
    const want = open ? 'text' : 'template';
    if (left != null && this.windowOpen !== open) {
      this.windowOpen = open;
      // A private note is allowed whatever the window.
      if (this.mode !== want && this.mode !== 'note') {
        this.mode = want;
        this.renderComposer();
      }
    }
  }

  // ---- messages ----

  keyOf(m) {
    return m.messageId || `c:${m.clientId}`;
  }

  /** A message from the server (REST page, event, or a send's answer). */
  upsert(m, { quiet = false } = {}) {
    if (m.conversationId !== this.id) return;
    if (m.clientId && this.pendingByClient.has(m.clientId)) {
      const localKey = this.pendingByClient.get(m.clientId);
      this.pendingByClient.delete(m.clientId);
      this.msgs.delete(localKey);
      this.els.delete(localKey);
    }
    const prev = this.msgs.get(m.messageId);
    if (prev) {
      const status = forward(m.status, prev.status) ? m.status : prev.status;
      m = { ...prev, ...m, status, errorCode: m.errorCode ?? prev.errorCode };
      const same =
        m.status === prev.status &&
        m.content === prev.content &&
        m.editedAt === prev.editedAt &&
        Boolean(m.deleted) === Boolean(prev.deleted) &&
        JSON.stringify(m.reactions || []) === JSON.stringify(prev.reactions || []) &&
        m.attachments?.length === prev.attachments?.length &&
        (m.attachments || []).every((a, i) => a.state === prev.attachments[i].state);
      if (same) {
        this.msgs.set(m.messageId, m);
        return;
      }
    }
    this.msgs.set(m.messageId, m);
    this.els.delete(m.messageId);
    if (!quiet) this.render({ stick: 'auto' });
  }

  addLocal(local) {
    const key = `c:${local.clientId}`;
    this.pendingByClient.set(local.clientId, key);
    this.msgs.set(key, local);
    this.render({ stick: 'bottom' });
    return key;
  }

  updateLocal(clientId, change) {
    const key = this.pendingByClient.get(clientId);
    const m = key && this.msgs.get(key);
    if (!m) return;
    Object.assign(m, change);
    this.els.delete(key);
    this.render({ stick: 'auto' });
  }

  sorted() {
    const all = [...this.msgs.entries()];
    const server = all.filter(([, m]) => m.messageId && !m.local).sort((a, b) => (a[1].messageId < b[1].messageId ? -1 : 1));
    const local = all.filter(([, m]) => m.local).sort((a, b) => a[1].createdAt - b[1].createdAt);
    return [...server, ...local];
  }

  render({ stick }) {
    const s = this.scroller;
    const nearBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    const fromBottom = s.scrollHeight - s.scrollTop;
    const nodes = [];
    let day = null;
    if (this.noMore && this.msgs.size) nodes.push(h('p', { class: 'start' }, 'Start of the conversation'));
    for (const [key, m] of this.sorted()) {
      const d = new Date(m.datetime);
      if (!day || !sameDay(day, d)) {
        day = d;
        nodes.push(h('div', { class: 'day', role: 'separator' }, h('span', {}, dayLabel(d))));
      }
      let el = this.els.get(key);
      if (!el) {
        el = this.bubble(m);
        this.els.set(key, el);
      }
      nodes.push(el);
    }
    this.list.replaceChildren(...nodes);
    if (stick === 'bottom' || (stick === 'auto' && nearBottom)) s.scrollTop = s.scrollHeight;
    else if (stick === 'keep') s.scrollTop = s.scrollHeight - fromBottom;
  }

  bubble(m) {
    const out = m.direction === 'SENT';
    const note = Boolean(m.private);
    const status = m.status || 'PENDING';
    const localState = m.local; // 'sending' | 'queued' | 'error'
    let meta;
    if (out && !note) {
      const word = localState === 'queued' ? 'Queued (offline)' : localState === 'error' ? 'Not sent' : STATUS_WORDS[status];
      const mark = localState === 'error' ? '!' : localState || status === 'PENDING' || status === 'SCHEDULED' ? icon('clock') : TICKS[status];
      meta = h('span', { class: `tick tick-${localState || status.toLowerCase()}`, title: word, 'aria-label': word }, mark);
    }
    const failure =
      out && status === 'FAILED'
        ? h('p', { class: 'fail' }, `Failed${m.errorCode ? `: ${REASONS[m.errorCode] || `error ${m.errorCode}`}` : ''}`)
        : localState === 'error'
          ? h('p', { class: 'fail' }, `Not sent: ${m.error}`, ' ', h('button', { type: 'button', class: 'link', onclick: () => this.retry(m) }, 'Retry'))
          : null;
    // A scheduled send (issue 22): its time, and Cancel until it goes.
    const scheduled =
      out && status === 'SCHEDULED' && m.sendAt && !m.deleted
        ? h(
            'p',
            { class: 'scheduled' },
            icon('clock'),
            ` Scheduled for ${when(m.sendAt)}`,
            m.messageId && !localState
              ? h('button', { type: 'button', class: 'link', 'aria-label': 'Cancel the scheduled message', onclick: () => this.remove(m) }, 'Cancel')
              : null,
          )
        : null;
    return h(
      'article',
      {
        class: `msg ${out ? 'out' : 'in'}${note ? ' note' : ''}`,
        dataset: { status: localState ? `local-${localState}` : status, messageId: m.messageId || '', clientId: m.clientId || '' },
        'aria-label': note
          ? `Private note by ${this.agents.get(m.senderId) || (m.senderId === this.me.userId ? 'you' : `agent #${m.senderId}`)} at ${clock(m.datetime)}`
          : `${out ? 'You' : 'Customer'} at ${clock(m.datetime)}${out ? `, ${localState || STATUS_WORDS[status]}` : ''}`,
      },
      h(
        'div',
        { class: 'bubble' },
        this.actions(m),
        this.reactMenu(m),
        (m.attachments || []).map((a) => this.attachment(a)),
        m.deleted
          ? h('p', { class: 'text deleted' }, note ? 'This note was deleted' : status === 'SCHEDULED' ? 'Scheduled message cancelled' : 'This message was deleted')
          : m.content
            ? h('p', { class: 'text' }, m.content)
            : null,
        h(
          'span',
          { class: 'meta' },
          note ? h('span', { class: 'tpl note-tag' }, 'Private note') : null,
          m.editedAt && !m.deleted ? h('span', { class: 'edited', title: `Edited ${clock(m.editedAt)}` }, 'edited') : null,
          m.templateId ? h('span', { class: 'tpl' }, 'template') : null,
          h('time', { datetime: m.datetime }, clock(m.datetime)),
          meta,
        ),
        scheduled,
        failure,
        this.reactions(m),
      ),
    );
  }

  // ---- reactions (issue 22) ----

  /** The reactions under a message, one chip per emoji with who reacted in its title. */
  reactions(m) {
    if (!m.reactions?.length || m.deleted) return null;
    const groups = new Map();
    for (const r of m.reactions) groups.set(r.emoji, [...(groups.get(r.emoji) || []), r.by]);
    const who = (by) =>
      by === 'customer' ? this.inbox.convs.get(this.id)?.user?.firstName || 'Customer' : by === this.me.userId ? 'You' : this.agents.get(by) || `Agent #${by}`;
    return h(
      'ul',
      { class: 'reactions', 'aria-label': 'Reactions' },
      [...groups].map(([emoji, bys]) =>
        h('li', { class: `reaction${bys.includes(this.me.userId) ? ' mine' : ''}`, title: bys.map(who).join(', '), 'aria-label': `${emoji} by ${bys.map(who).join(', ')}` }, emoji, bys.length > 1 ? h('span', { class: 'count' }, String(bys.length)) : null),
      ),
    );
  }

  /** React on hover: a menu of emojis; picking the one you have removes it. */
  reactMenu(m) {
    if (!m.messageId || m.local || m.deleted) return null;
    const mine = (m.reactions || []).find((r) => r.by === this.me.userId)?.emoji;
    const items = REACTIONS.map((e) => ({ label: e === mine ? `${e} (remove)` : e, onclick: () => this.react(m, e === mine ? '' : e) }));
    return menuButton({ label: 'React', text: '☺', cls: 'msg-actions react', wrap: 'msg-tools react-tools' }, items);
  }

  async react(m, emoji) {
    try {
      this.upsert(await post(`/message/${m.messageId}/reaction`, { emoji }));
    } catch (e) {
      toast(`Could not react: ${e.message}`, 'error');
    }
  }

  // ---- edit and delete (issue 22) ----

  /** The ⋯ menu of a message this agent may edit (own text or note, 15 minutes) or delete
   * (own or, for admins, any note or message not sent yet). */
  actions(m) {
    if (!m.messageId || m.local || m.deleted || m.direction !== 'SENT') return null;
    const own = m.senderId === this.me.userId;
    const canEdit = own && !m.templateId && !(m.attachments || []).length && Date.now() - new Date(m.datetime) < EDIT_MS;
    const canDelete = (own || this.me.role === 'admin') && (m.private || m.status === 'PENDING' || m.status === 'SCHEDULED');
    if (!canEdit && !canDelete) return null;
    const items = [];
    if (canEdit) items.push({ label: 'Edit', onclick: () => this.startEdit(m) });
    if (canDelete) items.push({ label: 'Delete', onclick: () => this.remove(m) });
    return menuButton({ label: 'Message actions', text: '⋯', cls: 'msg-actions', wrap: 'msg-tools' }, items);
  }

  startEdit(m) {
    const el = this.els.get(m.messageId);
    const text = el?.querySelector('.text');
    if (!text) return;
    const box = h('textarea', { class: 'edit-box', 'aria-label': 'Edit message', maxlength: '4096', rows: '2' });
    box.value = m.content || '';
    const done = () => {
      this.els.delete(m.messageId);
      this.render({ stick: 'keep' });
    };
    const save = async () => {
      const value = box.value.trim();
      if (!value || value === m.content) return done();
      try {
        this.upsert(await patch(`/message/${m.messageId}`, { text: value }));
      } catch (e) {
        toast(`Could not edit the message: ${e.message}`, 'error');
        done();
      }
    };
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        save();
      } else if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        done();
      }
    });
    text.replaceWith(
      h('div', { class: 'edit' }, box, h('div', { class: 'edit-actions' },
        h('button', { type: 'button', class: 'ghost', onclick: done }, 'Cancel'),
        h('button', { type: 'button', class: 'primary', onclick: save }, 'Save'))),
    );
    box.focus();
  }

  async remove(m) {
    try {
      this.upsert(await del(`/message/${m.messageId}`));
    } catch (e) {
      toast(e.code === 'already_sending' ? 'Too late: the message is being sent' : `Could not delete the message: ${e.message}`, 'error');
    }
  }

  attachment(a) {
    if (a.local) {
      return h('div', { class: 'att att-doc' }, icon('clip'), ` ${a.filename} (${fileSize(a.filesize)})`);
    }
    const label = `${a.filename || a.type.toLowerCase()} (${fileSize(a.filesize)})`;
    if (a.state === 'pending') return h('div', { class: 'att att-doc muted' }, icon('clock'), ` ${label} — downloading from the provider…`);
    const src = `/media/${a.attachmentId}`;
    if (a.type === 'IMAGE') {
      const img = h('img', { class: 'thumb', alt: a.filename || 'image', loading: 'lazy', width: '240', height: '160' });
      const box = h('a', { class: 'att att-img', href: '#', 'aria-label': `Open image ${label}` }, img);
      this.media(src, (url) => {
        img.src = url;
        box.href = url;
        box.target = '_blank';
        img.removeAttribute('height');
      }, box, label);
      return box;
    }
    if (a.type === 'AUDIO' || a.type === 'VIDEO') {
      const player = h(a.type === 'AUDIO' ? 'audio' : 'video', { controls: true, preload: 'none', 'aria-label': label });
      const box = h('div', { class: `att att-${a.type.toLowerCase()}` }, player, h('span', { class: 'muted' }, label));
      this.media(src, (url) => (player.src = url), box, label);
      return box;
    }
    const link = h('a', { class: 'att att-doc', href: '#', download: a.filename || 'document' }, icon('doc'), ` ${label}`);
    link.addEventListener('click', (e) => {
      if (link.dataset.ready) return;
      e.preventDefault();
      this.media(src, (url) => {
        link.href = url;
        link.dataset.ready = '1';
        link.click();
      }, link, label);
    }, { once: false });
    return link;
  }

  /** GET /media/{id} with the bearer into a blob URL; a server without media says so. */
  media(src, use, box, label) {
    blob(src)
      .then((b) => {
        const url = URL.createObjectURL(b);
        (this.urls ||= []).push(url);
        use(url);
      })
      .catch((e) => {
        box.replaceWith(h('div', { class: 'att att-doc muted' }, icon('clip'), ` ${label} — ${e.status === 404 ? 'not available on this server' : `could not load (${e.message})`}`));
      });
  }

  // ---- live events ----

  event(f) {
    if (f.conversationId !== this.id) return;
    if (f.event === 'message.created' || f.event === 'message.updated') {
      this.upsert(f.data);
      if (f.event === 'message.created' && f.data.direction === 'RECEIVED') {
        this.typingFrom(f.data.senderId, false);
        this.loadWindow();
      }
      this.markRead();
    } else if (f.event === 'typing') {
      const d = f.data || {};
      if (d.userId !== this.me.userId) this.typingFrom(d.userId, d.on !== false, d);
    }
  }

  typingFrom(userId, on, d = {}) {
    const key = userId ?? 'someone';
    clearTimeout(this.typers.get(key)?.timer);
    if (on) {
      const name = this.agents.get(userId) || [d.firstName, d.lastName].filter(Boolean).join(' ') || d.name || (userId ? `Agent #${userId}` : 'Someone');
      this.typers.set(key, { name, timer: setTimeout(() => this.typingFrom(userId, false), 8000) });
    } else {
      this.typers.delete(key);
    }
    const names = [...this.typers.values()].map((t) => t.name);
    this.typingEl.textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
  }

  /** CONTRACT §4 `read` with the seq seen so far, at once (an agent who glances at a
   * conversation has read it), at most once per seq and conversation. */
  markRead() {
    const id = this.id;
    if (id == null || document.hidden || !this.live.open) return;
    const seq = this.live.seenSeq(id);
    if (seq > 0 && seq > (this.readSent.get(id) ?? 0)) {
      this.readSent.set(id, seq);
      this.live.read(id, seq);
    }
  }

  // ---- composer ----

  renderComposer() {
    if (this.mode === 'template') return this.renderTemplatePicker();
    const note = this.mode === 'note';
    const input = h('textarea', {
      id: 'composer-input',
      rows: '1',
      placeholder: note ? 'Private note: only agents see it (@Name mentions an agent)…' : 'Type a message…',
      title: 'Enter sends; Shift+Enter starts a new line',
      'aria-label': 'Message',
      'aria-describedby': 'composer-hint',
      maxlength: '4096',
    });
    const picker = h('ul', { id: 'canned-picker', class: 'canned-picker', role: 'listbox', 'aria-label': 'Canned responses', hidden: true });
    input.setAttribute('aria-controls', 'canned-picker');
    input.addEventListener('keydown', (e) => {
      if (!picker.hidden && this.cannedKey(e, input, picker)) return;
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.sendText(input);
      }
    });
    input.addEventListener('input', () => this.cannedFilter(input, picker));
    const noteToggle = h(
      'button',
      {
        type: 'button',
        class: `ghost note-toggle${note ? ' on' : ''}`,
        'aria-pressed': String(note),
        title: 'A private note is seen by agents only and never sent to the customer',
        onclick: () => this.switchMode(note ? (this.windowOpen === false ? 'template' : 'text') : 'note'),
      },
      'Private note',
    );
    this.composer.classList.toggle('note-mode', note);
    input.addEventListener('input', () => {
      input.style.height = 'auto';
      input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
      this.typingOn();
    });
    input.addEventListener('blur', () => this.typingOff());
    const file = h('input', { type: 'file', id: 'composer-file', class: 'visually-hidden', accept: 'image/*,audio/*,video/*,application/pdf,.doc,.docx,.xls,.xlsx,.ppt,.pptx', 'aria-label': 'Attach a file' });
    file.addEventListener('change', () => file.files[0] && this.sendFile(file.files[0], input).finally(() => (file.value = '')));
    this.progress = h('progress', { class: 'upload', max: '1', value: '0', hidden: true, 'aria-label': 'Upload progress' });
    this.composer.replaceChildren(
      h('span', { id: 'composer-hint', class: 'visually-hidden' }, 'Enter sends; Shift+Enter starts a new line; / picks a canned response'),
      picker,
      this.progress,
      h(
        'div',
        { class: 'compose-row' },
        file,
        h('label', { class: 'ghost icon', for: 'composer-file', title: 'Attach a file' }, icon('clip'), h('span', { class: 'visually-hidden' }, 'Attach')),
        input,
        noteToggle,
        note ? null : h('button', { type: 'button', class: 'ghost', onclick: () => this.switchMode('template') }, 'Template'),
        note ? null : h('button', { type: 'button', class: 'ghost', title: 'Send this message later', onclick: () => this.openSchedule(input) }, 'Schedule'),
        h('button', { type: 'button', class: 'primary', onclick: () => this.sendText(input) }, note ? 'Add note' : 'Send'),
      ),
    );
  }

  // ---- canned responses (issue 22): `/shortCode` in an otherwise empty composer ----

  async cannedFilter(input, picker) {
    const m = /^\/([\w-]*)$/u.exec(input.value);
    if (!m) {
      picker.hidden = true;
      return;
    }
    if (!this.canned) {
      try {
        this.canned = await get('/canned');
      } catch {
        this.canned = [];
      }
    }
    const prefix = m[1].toLowerCase();
    const hits = this.canned.filter((c) => c.shortCode.startsWith(prefix)).slice(0, 8);
    picker.replaceChildren(
      ...hits.map((c, i) =>
        h(
          'li',
          { role: 'option', id: `canned-${c.cannedId}`, 'aria-selected': String(i === 0), dataset: { id: String(c.cannedId) }, onmousedown: (e) => {
            e.preventDefault();
            this.cannedInsert(c, input, picker);
          } },
          h('strong', {}, `/${c.shortCode}`),
          ' ',
          h('span', { class: 'muted' }, c.content),
        ),
      ),
    );
    picker.hidden = hits.length === 0 || input.value !== `/${m[1]}`;
    input.setAttribute('aria-expanded', String(!picker.hidden));
  }

  /** Arrow keys move, Enter or Tab inserts, Escape closes; true when the key was the picker's. */
  cannedKey(e, input, picker) {
    const items = [...picker.querySelectorAll('li')];
    const at = items.findIndex((li) => li.getAttribute('aria-selected') === 'true');
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = (at + (e.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
      items.forEach((li, i) => li.setAttribute('aria-selected', String(i === next)));
      input.setAttribute('aria-activedescendant', items[next].id);
      return true;
    }
    if (e.key === 'Enter' || e.key === 'Tab') {
      e.preventDefault();
      const c = this.canned.find((x) => String(x.cannedId) === items[Math.max(at, 0)]?.dataset.id);
      if (c) this.cannedInsert(c, input, picker);
      return true;
    }
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      picker.hidden = true;
      return true;
    }
    return false;
  }

  cannedInsert(c, input, picker) {
    const user = this.inbox.convs.get(this.id)?.user || {};
    input.value = fillCanned(c.content, { contact: user, agent: this.me });
    picker.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    input.dispatchEvent(new Event('input'));
    input.focus();
  }

  switchMode(mode) {
    this.mode = mode;
    this.composer.classList.toggle('note-mode', mode === 'note');
    this.renderComposer();
    (mode === 'template' ? $('#template-select') : $('#composer-input'))?.focus();
  }

  async renderTemplatePicker() {
    const closed = this.windowOpen === false;
    const head = h(
      'p',
      { class: 'tpl-note' },
      closed ? 'The 24-hour window is closed: only an approved template can be sent.' : 'Send an approved template.',
      closed ? null : h('button', { type: 'button', class: 'link', onclick: () => this.switchMode('text') }, 'Back to free text'),
      h('button', { type: 'button', class: 'link', onclick: () => this.switchMode('note') }, 'Write a private note'),
    );
    const select = h('select', { id: 'template-select', 'aria-label': 'Template' }, h('option', { value: '' }, 'Loading templates…'));
    const fields = h('div', { class: 'tpl-fields' });
    const preview = h('p', { class: 'tpl-preview', 'aria-live': 'polite' });
    const send = h('button', { type: 'button', class: 'primary', id: 'template-send', disabled: true }, 'Send template');
    this.composer.replaceChildren(h('div', { class: 'template-picker', role: 'group', 'aria-label': 'Template picker' }, head, h('div', { class: 'compose-row' }, h('label', { for: 'template-select' }, 'Template'), select, send), fields, preview));
    try {
      this.templates ||= await get('/template');
    } catch (e) {
      select.replaceChildren(h('option', { value: '' }, `Could not load templates: ${e.message}`));
      return;
    }
    if (this.mode !== 'template') return;
    select.replaceChildren(
      h('option', { value: '' }, this.templates.length ? 'Choose a template…' : 'No templates: an admin creates them'),
      ...this.templates.map((t) => h('option', { value: String(t.templateId) }, `${t.name} (${t.language}, ${String(t.category).toLowerCase()})`)),
    );
    const inputs = [];
    const update = () => {
      const t = this.templates.find((x) => String(x.templateId) === select.value);
      preview.textContent = t ? renderTemplate(t.content, inputs.map((i) => i.value)) : '';
      send.disabled = !t || inputs.some((i) => !i.value.trim());
    };
    select.addEventListener('change', () => {
      const t = this.templates.find((x) => String(x.templateId) === select.value);
      inputs.length = 0;
      const n = t ? placeholderCount(t.content) : 0;
      fields.replaceChildren(
        ...Array.from({ length: n }, (_, i) => {
          const input = h('input', { type: 'text', id: `tpl-param-${i + 1}`, required: true, 'aria-label': `Parameter {{${i + 1}}}` });
          input.addEventListener('input', update);
          input.addEventListener('keydown', (e) => e.key === 'Enter' && !send.disabled && send.click());
          inputs.push(input);
          return h('label', { class: 'tpl-param', for: `tpl-param-${i + 1}` }, `{{${i + 1}}}`, input);
        }),
      );
      update();
    });
    send.addEventListener('click', () => {
      const t = this.templates.find((x) => String(x.templateId) === select.value);
      if (!t) return;
      const params = inputs.map((i) => i.value.trim());
      this.dispatch({ templateId: t.templateId, params, preview: renderTemplate(t.content, params) });
      select.value = '';
      fields.replaceChildren();
      update();
    });
  }

  // ---- scheduled sends (issue 22) ----

  /** The Schedule dialog: when the typed message goes out, and the template sent instead if
   * the 24-hour window has closed by then. */
  async openSchedule(input) {
    const text = input.value.trim();
    if (!text) {
      toast('Type the message to schedule first', 'error');
      input.focus();
      return;
    }
    const dialog = $('#schedule');
    const at = $('#schedule-at');
    const select = $('#schedule-fallback');
    const fields = $('#schedule-params');
    const error = $('#schedule-error');
    const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
    const soon = new Date(Date.now() + 3600e3);
    soon.setMinutes(0, 0, 0);
    at.value = local(soon);
    at.min = local(new Date());
    error.hidden = true;
    fields.replaceChildren();
    select.replaceChildren(h('option', { value: '' }, 'None: fail if the window has closed'));
    dialog.showModal();
    try {
      this.templates ||= await get('/template');
    } catch {
      this.templates = [];
    }
    select.append(...this.templates.map((t) => h('option', { value: String(t.templateId) }, `${t.name} (${t.language})`)));
    select.onchange = () => {
      const t = this.templates.find((x) => String(x.templateId) === select.value);
      fields.replaceChildren(
        ...Array.from({ length: t ? placeholderCount(t.content) : 0 }, (_, i) =>
          h('label', { class: 'tpl-param' }, `{{${i + 1}}}`, h('input', { type: 'text', required: true, 'aria-label': `Fallback parameter {{${i + 1}}}` })),
        ),
      );
    };
    $('#schedule-confirm').onclick = () => {
      const time = new Date(at.value);
      const params = [...fields.querySelectorAll('input')].map((i) => i.value.trim());
      const problem = Number.isNaN(time.getTime()) || time <= new Date() ? 'Pick a time in the future' : params.some((p) => !p) ? 'Fill in the template’s parameters' : null;
      if (problem) {
        error.textContent = problem;
        error.hidden = false;
        return;
      }
      dialog.close();
      input.value = '';
      input.style.height = 'auto';
      this.typingOff();
      const fallbackTemplateId = select.value ? Number(select.value) : null;
      this.dispatch({ text, sendAt: time.toISOString(), fallbackTemplateId, params: fallbackTemplateId ? params : undefined });
    };
  }

  sendText(input) {
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    input.style.height = 'auto';
    this.typingOff();
    this.dispatch({ text, private: this.mode === 'note' });
  }

  async sendFile(file, input) {
    this.progress.hidden = false;
    this.progress.value = 0;
    try {
      const saved = await upload(file, (p) => (this.progress.value = p));
      const caption = input.value.trim();
      input.value = '';
      this.dispatch({ text: caption || null, attachment: { ...saved, filename: saved.name || file.name, filesize: saved.size ?? file.size } });
    } catch (e) {
      toast(e.status === 404 ? 'Attachments are not available on this server yet' : `Upload failed: ${e.message}`, 'error');
    } finally {
      this.progress.hidden = true;
    }
  }

  /** Optimistic send: the bubble shows at once with its clientId, then is replaced by the
   * server's message (ack / message.created / REST answer carry the same clientId). */
  dispatch({ text, templateId, params, preview, attachment, private: isPrivate = false, sendAt = null, fallbackTemplateId = null }) {
    const clientId = crypto.randomUUID();
    const local = {
      local: this.live.mode === 'live' || this.live.mode === 'polling' ? 'sending' : 'queued',
      clientId,
      conversationId: this.id,
      direction: 'SENT',
      content: templateId ? preview : text,
      datetime: new Date().toISOString(),
      createdAt: performance.now(),
      status: sendAt ? 'SCHEDULED' : 'PENDING',
      sendAt,
      templateId,
      private: isPrivate,
      senderId: this.me.userId,
      attachments: attachment ? [{ local: true, filename: attachment.filename, filesize: attachment.filesize }] : [],
      request: { text, templateId, params, attachment, private: isPrivate, sendAt, fallbackTemplateId },
    };
    this.addLocal(local);
    document.dispatchEvent(new CustomEvent('console:send', { detail: local }));
  }

  retry(m) {
    document.dispatchEvent(new CustomEvent('console:send', { detail: m }));
    this.updateLocal(m.clientId, { local: 'sending', error: null });
  }

  typingOn() {
    if (!this.live.open || this.id == null) return;
    const now = Date.now();
    if (!this.typingSince || now - this.typingSince > 3000) {
      this.typingSince = now;
      this.live.typing(this.id, true);
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.typingOff(), 4000);
  }

  typingOff() {
    clearTimeout(this.typingTimer);
    if (this.typingSince && this.id != null) this.live.typing(this.id, false);
    this.typingSince = 0;
  }
}

/** A canned response's placeholders filled from the conversation's contact and the agent. */
export function fillCanned(content, { contact, agent }) {
  const values = {
    'contact.firstName': contact?.firstName || '',
    'contact.lastName': contact?.lastName || '',
    'contact.phone': contact?.phone || '',
    'agent.firstName': agent?.firstName || '',
  };
  return content.replace(/\{\{\s*(contact\.firstName|contact\.lastName|contact\.phone|agent\.firstName)\s*\}\}/g, (_, k) => values[k]);
}

export function placeholderCount(content) {
  let max = 0;
  for (const m of content.matchAll(/\{\{\s*(\d+)\s*\}\}/g)) max = Math.max(max, Number(m[1]));
  return max;
}

export function renderTemplate(content, params) {
  return content.replace(/\{\{\s*(\d+)\s*\}\}/g, (all, n) => (params[n - 1] ? params[n - 1] : all));
}
