// The conversation list: filters, search, keyset infinite scroll and live merging.

import { get } from './api.js';
import { $, h, personName, initials, listTime, debounce, toast } from './dom.js';

const PAGE = 30;

export class Inbox {
  constructor({ me, agentName, onOpen }) {
    this.me = me;
    this.agentName = agentName;
    this.onOpen = onOpen;
    this.convs = new Map(); // id → ConversationView (every one this page knows)
    this.shown = []; // ids in the list, newest lastUpdateTime first
    this.filter = { who: 'all', status: '', unread: false, q: '', team: '' };
    this.teams = new Map(); // teamId → name (issue 22)
    this.done = false;
    this.loading = null;
    this.openId = null;
    this.total = 0;
    this.list = $('#conv-list');
    this.more = $('#conv-more');
    this.bind();
  }

  bind() {
    for (const b of document.querySelectorAll('[data-who]')) {
      b.addEventListener('click', () => {
        this.filter.who = b.dataset.who;
        for (const o of document.querySelectorAll('[data-who]'))
          o.setAttribute('aria-checked', String(o === b));
        this.reload();
      });
    }
    $('#filter-status').addEventListener('change', (e) => {
      this.filter.status = e.target.value;
      this.reload();
    });
    $('#filter-unread').addEventListener('change', (e) => {
      this.filter.unread = e.target.checked;
      this.reload();
    });
    const team = $('#filter-team');
    team.addEventListener('change', (e) => {
      this.filter.team = e.target.value;
      this.reload();
    });
    team.addEventListener('focus', () => this.loadTeams());
    const search = $('#search');
    const run = debounce(() => {
      this.filter.q = search.value.trim();
      this.reload();
      this.searchMessages(this.filter.q);
    }, 300);
    search.addEventListener('input', run);
    search.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowDown') {
        e.preventDefault();
        this.focusRow(0);
      } else if (e.key === 'Escape') {
        search.value = '';
        run();
      }
    });
    this.list.addEventListener('keydown', (e) => this.keys(e));
    new IntersectionObserver((entries) => {
      if (entries.some((en) => en.isIntersecting)) this.loadMore();
    }, { root: this.list.parentElement }).observe(this.more);
  }

  keys(e) {
    const rows = [...this.list.querySelectorAll('.conv')];
    const i = rows.indexOf(document.activeElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = e.key === 'ArrowDown' ? Math.min(rows.length - 1, i + 1) : i - 1;
      if (next < 0) $('#search').focus();
      else this.focusRow(next);
    } else if (e.key === 'Home') {
      e.preventDefault();
      this.focusRow(0);
    } else if (e.key === 'End') {
      e.preventDefault();
      this.focusRow(rows.length - 1);
    } else if ((e.key === 'Enter' || e.key === ' ') && i >= 0) {
      e.preventDefault();
      this.onOpen(Number(rows[i].dataset.id));
    }
  }

  focusRow(i) {
    const rows = [...this.list.querySelectorAll('.conv')];
    const row = rows[Math.max(0, i)];
    if (!row) return;
    for (const r of rows) r.tabIndex = r === row ? 0 : -1;
    row.focus();
    row.scrollIntoView({ block: 'nearest' });
  }

  query(beforeUpdate, limit = PAGE) {
    const p = new URLSearchParams({ limit: String(limit) });
    const f = this.filter;
    if (f.who === 'mine') p.set('assigneeId', String(this.me.userId));
    if (f.who === 'unassigned') p.set('assigneeId', 'none');
    if (f.status) p.set('status', f.status);
    if (f.unread) p.set('unread', 'true');
    if (f.q) p.set('q', f.q);
    if (f.team) p.set('teamId', f.team);
    if (beforeUpdate) p.set('beforeUpdate', beforeUpdate);
    return `/conversation/conversation-page-list?${p}`;
  }

  matches(c) {
    const f = this.filter;
    if (f.who === 'mine' && c.assigneeId !== this.me.userId) return false;
    if (f.who === 'unassigned' && c.assigneeId != null) return false;
    if (f.status && c.status !== f.status) return false;
    if (f.unread && !(c.unreadCount > 0)) return false;
    if (f.team === 'none' ? c.teamId != null : f.team && String(c.teamId) !== f.team) return false;
    if (f.q) {
      const q = f.q.toLowerCase();
      const digits = q.replace(/\D/g, '');
      const byName = personName(c.user).toLowerCase().includes(q);
      const byPhone = digits && (c.user?.phone || '').includes(digits);
      if (!byName && !byPhone) return false;
    }
    return true;
  }

  async reload() {
    this.loadTeams();
    this.refreshCounts();
    this.done = false;
    this.shown = [];
    const gen = (this.gen = (this.gen || 0) + 1);
    this.list.replaceChildren(h('li', { class: 'loading', role: 'presentation' }, 'Loading…'));
    try {
      const page = await get(this.query());
      if (gen !== this.gen) return;
      this.total = page.totalCount;
      this.absorb(page.data, true);
      this.done = page.data.length < PAGE;
    } catch (e) {
      if (gen === this.gen) this.list.replaceChildren(h('li', { class: 'loading', role: 'presentation' }, `Could not load conversations: ${e.message}`));
      return;
    }
    this.render();
  }

  /** Keyset paging by lastUpdateTime. The server's cursor is strict (<), so the cursor is
   * 1 ms past the last row and rows already shown are skipped: rows that share a millisecond
   * are not lost. */
  async loadMore() {
    if (this.done || this.loading || !this.shown.length) return;
    const last = this.convs.get(this.shown[this.shown.length - 1]);
    const cursor = new Date(new Date(last.lastUpdateTime).getTime() + 1).toISOString();
    const gen = this.gen;
    this.loading = get(this.query(cursor));
    try {
      const page = await this.loading;
      if (gen !== this.gen) return;
      const before = this.shown.length;
      this.absorb(page.data, false);
      this.done = page.data.length < PAGE || this.shown.length === before;
      this.render();
    } catch (e) {
      toast(`Could not load more conversations: ${e.message}`, 'error');
    } finally {
      this.loading = null;
    }
  }

  absorb(views, fresh) {
    if (fresh) this.shown = [];
    for (const v of views) {
      this.convs.set(v.conversationId, v);
      if (!this.shown.includes(v.conversationId)) this.shown.push(v.conversationId);
    }
    this.sort();
  }

  sort() {
    const t = (id) => this.convs.get(id)?.lastUpdateTime || '';
    this.shown.sort((a, b) => (t(b) < t(a) ? -1 : t(b) > t(a) ? 1 : b - a));
  }

  /** REST polling: merge the first page; rows newer than its last that it lacks left the filter. */
  async poll() {
    this.refreshCounts();
    const gen = this.gen;
    const page = await get(this.query());
    if (gen !== this.gen) return;
    this.total = page.totalCount;
    const ids = new Set(page.data.map((v) => v.conversationId));
    const oldest = page.data.length === PAGE ? page.data[page.data.length - 1].lastUpdateTime : '';
    this.shown = this.shown.filter((id) => ids.has(id) || (this.convs.get(id)?.lastUpdateTime || '') < oldest);
    this.absorb(page.data, false);
    this.render();
  }

  /** A conversation view from the server (PATCH answer, conversation.updated/created event). */
  upsert(view) {
    const prev = this.convs.get(view.conversationId);
    if (prev && (prev.lastSeq ?? 0) > (view.lastSeq ?? 0)) return; // an older view
    this.convs.set(view.conversationId, { ...prev, ...view });
    this.place(view.conversationId);
  }

  /** The company's teams for the filter and the rows' team chips (issue 22); the filter is
   * shown once there is a team. */
  async loadTeams() {
    let teams;
    try {
      teams = await get('/team');
    } catch {
      return; // the filter keeps what it had
    }
    this.teams = new Map(teams.map((t) => [t.teamId, t.name]));
    const select = $('#filter-team');
    const keep = this.filter.team;
    select.replaceChildren(
      h('option', { value: '' }, 'Any team'),
      ...teams.map((t) => h('option', { value: String(t.teamId) }, t.name)),
      h('option', { value: 'none' }, 'No team'),
    );
    select.value = keep && [...select.options].some((o) => o.value === keep) ? keep : '';
    select.hidden = teams.length === 0 && !keep;
    this.render();
  }

  /** The tabs' counters (GET /conversation/counts): for the chosen status, or all statuses,
   * within the chosen team. */
  async refreshCounts() {
    const p = new URLSearchParams();
    if (this.filter.team) p.set('teamId', this.filter.team);
    const gen = (this.countGen = (this.countGen || 0) + 1);
    let counts;
    try {
      counts = await get(`/conversation/counts?${p}`);
    } catch {
      return;
    }
    if (gen !== this.countGen) return;
    const status = this.filter.status;
    for (const who of ['mine', 'unassigned', 'all']) {
      const c = counts[who] || {};
      const n = status ? c[status] || 0 : Object.values(c).reduce((a, b) => a + b, 0);
      const el = document.querySelector(`[data-count="${who}"]`);
      if (el) el.textContent = String(n);
    }
  }

  /** At most one counters refresh every 300 ms, however busy the inbox (a debounce would
   * never fire while events keep coming). */
  countsSoon() {
    if (this.countsTimer) return;
    this.countsTimer = setTimeout(() => {
      this.countsTimer = null;
      this.refreshCounts();
    }, 300);
  }

  place(id) {
    const c = this.convs.get(id);
    const inList = this.shown.includes(id);
    if (this.matches(c)) {
      if (!inList) {
        this.shown.push(id);
        this.total += 1;
      }
    } else if (inList) {
      this.shown = this.shown.filter((x) => x !== id);
      this.total = Math.max(0, this.total - 1);
    }
    this.sort();
    this.render();
  }

  /** message.created from the inbox feed or a conversation subscription. */
  messageCreated(m, { viewing }) {
    const c = this.convs.get(m.conversationId);
    if (!c) {
      this.refreshSoon();
      return;
    }
    const newer = !c.lastMessage || m.messageId > c.lastMessage.messageId;
    if (!newer) return; // a replay of something this view already counts
    c.lastMessage = m;
    c.lastUpdateTime = m.datetime > (c.lastUpdateTime || '') ? m.datetime : c.lastUpdateTime;
    if (m.direction === 'RECEIVED' && !viewing) c.unreadCount = (c.unreadCount || 0) + 1;
    this.place(m.conversationId);
  }

  /** message.updated: a status change of the last message shows in its preview. */
  messageUpdated(m) {
    const c = this.convs.get(m.conversationId);
    if (c?.lastMessage?.messageId === m.messageId) {
      c.lastMessage = m;
      this.render();
    }
  }

  refreshSoon = debounce(() => this.poll().catch(() => {}), 500);

  setOpen(id) {
    this.openId = id;
    for (const r of this.list.querySelectorAll('.conv')) r.setAttribute('aria-selected', String(Number(r.dataset.id) === id));
  }

  render() {
    const focusedId = document.activeElement?.closest?.('.conv')?.dataset.id;
    const rows = this.shown.map((id) => this.row(this.convs.get(id)));
    if (!rows.length) rows.push(h('li', { class: 'loading', role: 'presentation' }, 'No conversations'));
    this.list.replaceChildren(...rows);
    const focusable = this.list.querySelector(`.conv[data-id="${focusedId}"]`) || this.list.querySelector('.conv[aria-selected="true"]') || this.list.querySelector('.conv');
    if (focusable) focusable.tabIndex = 0;
    if (focusedId && focusable?.dataset.id === focusedId) focusable.focus({ preventScroll: true });
    $('#inbox-count').textContent = `${this.total} conversation${this.total === 1 ? '' : 's'}`;
    // Whatever changed the list may have changed the tabs' counters too.
    this.countsSoon();
  }

  assigneeLabel(c) {
    if (c.assigneeId == null) return 'Unassigned';
    if (c.assigneeId === this.me.userId) return 'Me';
    return this.agentName(c.assigneeId);
  }

  row(c) {
    const m = c.lastMessage;
    let preview = '';
    if (m) {
      const body = m.content || (m.attachments?.length ? `[${m.attachments[0].type.toLowerCase()}] ${m.attachments[0].filename || ''}` : '');
      preview = m.direction === 'SENT' ? `You: ${body}` : body;
    }
    const name = personName(c.user);
    const unread = c.unreadCount > 0;
    return h(
      'li',
      {
        class: `conv${unread ? ' unread' : ''}`,
        role: 'option',
        tabindex: '-1',
        'aria-selected': String(c.conversationId === this.openId),
        'aria-label': `${name}${unread ? `, ${c.unreadCount} unread` : ''}, ${c.status}, ${this.assigneeLabel(c)}`,
        dataset: { id: c.conversationId },
        onclick: () => this.onOpen(c.conversationId),
      },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(c.user)),
      h(
        'span',
        { class: 'conv-main' },
        h('span', { class: 'conv-top' }, h('span', { class: 'conv-name' }, name), h('time', { class: 'conv-time', datetime: c.lastUpdateTime || '' }, listTime(c.lastUpdateTime))),
        h('span', { class: 'conv-phone' }, c.user?.phone || ''),
        h(
          'span',
          { class: 'conv-bottom' },
          h('span', { class: 'conv-preview' }, preview),
          unread ? h('span', { class: 'badge', 'aria-hidden': 'true' }, c.unreadCount > 99 ? '99+' : String(c.unreadCount)) : null,
        ),
        h(
          'span',
          { class: 'conv-meta' },
          h('span', { class: `chip status-${c.status}` }, c.status),
          h('span', { class: 'assignee' }, this.assigneeLabel(c)),
          c.teamId != null ? h('span', { class: 'chip team' }, this.teams.get(c.teamId) || `Team #${c.teamId}`) : null,
          ...(c.labels || []).map((l) => h('span', { class: 'chip label' }, l)),
        ),
      ),
    );
  }

  async searchMessages(term) {
    const box = $('#search-results');
    // Only the newest search may fill the box: an older answer arriving late (after the
    // box was cleared) is dropped.
    const seq = (this.searchSeq = (this.searchSeq || 0) + 1);
    if (!term) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    try {
      const page = await get(`/message/message-search/${encodeURIComponent(term)}?limit=20`);
      if (seq !== this.searchSeq || term !== this.filter.q) return;
      box.hidden = false;
      box.replaceChildren(
        h('h2', {}, `Messages matching “${term}” (${page.totalCount})`),
        page.data.length
          ? h(
              'ul',
              {},
              page.data.map((m) => {
                const c = this.convs.get(m.conversationId);
                return h(
                  'li',
                  {},
                  h(
                    'button',
                    { type: 'button', class: 'hit', onclick: () => this.onOpen(m.conversationId) },
                    h('span', { class: 'hit-who' }, c ? personName(c.user) : `Conversation ${m.conversationId}`, ' · ', listTime(m.datetime)),
                    h('span', { class: 'hit-text' }, m.content || ''),
                  ),
                );
              }),
            )
          : h('p', { class: 'muted' }, 'No messages found'),
      );
    } catch (e) {
      if (seq !== this.searchSeq) return;
      box.hidden = false;
      box.replaceChildren(h('p', { class: 'form-error' }, `Search failed: ${e.message}`));
    }
  }
}
