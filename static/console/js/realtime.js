// The WebSocket client of CONTRACT §4, with resume by seq and a queue for sends.
//
// Modes (`mode` event, shown by the connection indicator):
//   connecting  opening a socket (first time or after a drop)
//   live        socket open: every subscription resumed, queued sends flushed
//   offline     socket down; retrying with backoff; sends wait in the queue
//   polling     the server has no /ws (POST /ws/ticket answers 404), or tickets work but the
//               socket keeps failing to open (a proxy without WebSocket upgrades): the app
//               refreshes over REST instead, and this client tries /ws again with backoff.
//               A server that cannot be reached at all is `offline`, not polling.
//
// Exactly once: each conversation keeps the highest seq below which every event was seen
// (`contig`) plus the seqs seen above it. A repeated seq is dropped; a reconnect resubscribes
// with afterSeq = contig, so the server replays exactly what was missed.

import { post, sessionRevoked } from './api.js';

const PING_EVERY_MS = 20_000;
const SILENCE_LIMIT_MS = 50_000;
const MAX_BACKOFF_MS = 10_000;
const FAILURES_BEFORE_POLLING = 3;
const PROBE_WHEN_POLLING_MS = 60_000;

class SeqTracker {
  constructor(contig = 0) {
    this.contig = contig;
    this.above = new Set();
  }
  /** true if `seq` is new (and records it) */
  take(seq) {
    if (seq <= this.contig || this.above.has(seq)) return false;
    this.above.add(seq);
    while (this.above.has(this.contig + 1)) this.above.delete(++this.contig);
    return true;
  }
  /** the server says everything up to `seq` was delivered */
  settle(seq) {
    if (seq <= this.contig) return;
    this.contig = seq;
    for (const s of this.above) if (s <= seq) this.above.delete(s);
    while (this.above.has(this.contig + 1)) this.above.delete(++this.contig);
  }
}

export class Live extends EventTarget {
  constructor() {
    super();
    this.mode = 'connecting';
    this.ws = null;
    this.subs = new Set(); // conversation ids subscribed
    this.seqs = new Map(); // conversation id → SeqTracker
    this.outbox = new Map(); // clientId → send frame, until ack or error
    this.failures = 0; // attempts since the last open socket
    this.socketFailures = 0; // sockets that closed before opening although a ticket was issued
    this.timer = null;
    this.pinger = null;
    this.lastRx = 0;
    this.stopped = true;
    this.supported = null; // unknown until the first ticket answer
    window.addEventListener('online', () => this.mode !== 'live' && this.reconnectNow());
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setMode(mode) {
    if (this.mode === mode) return;
    this.mode = mode;
    this.emit('mode', mode);
  }

  get open() {
    return this.ws?.readyState === WebSocket.OPEN && this.mode === 'live';
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
    this.ws = null;
    this.subs.clear();
    this.seqs.clear();
    this.outbox.clear();
  }

  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    else this.connect();
  }

  async connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.mode !== 'polling') this.setMode('connecting');
    let ticket;
    try {
      ticket = await post('/ws/ticket');
    } catch (e) {
      if (this.stopped) return;
      if (e.status === 404 || e.status === 405) {
        // This server has no real-time endpoint: say so and poll; look again later.
        this.supported = false;
        this.setMode('polling');
        this.timer = setTimeout(() => this.connect(), PROBE_WHEN_POLLING_MS);
      } else if (e.status !== 401) {
        this.retry();
      }
      return;
    }
    if (this.stopped) return;
    this.supported = true;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws?ticket=${encodeURIComponent(ticket.ticket)}`);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.opened();
    };
    ws.onmessage = (m) => this.received(m.data);
    ws.onclose = (ev) => {
      if (!opened) this.socketFailures += 1;
      this.closed(ev);
    };
  }

  opened() {
    this.failures = 0;
    this.socketFailures = 0;
    this.lastRx = Date.now();
    this.frame({ type: 'subscribe_inbox' });
    for (const id of this.subs) this.frame(this.subscribeFrame(id));
    // Sends that never got an ack (queued offline, or in flight when the socket dropped) go
    // again with the same clientId: the server answers the same message, never a second one.
    for (const f of this.outbox.values()) this.frame(f);
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      if (Date.now() - this.lastRx > SILENCE_LIMIT_MS) this.ws?.close(4000, 'silent');
      else this.frame({ type: 'ping' });
    }, PING_EVERY_MS);
    this.setMode('live');
    this.emit('resumed');
  }

  closed(ev) {
    clearInterval(this.pinger);
    this.ws = null;
    if (this.stopped) return;
    if (ev.code === 4001) {
      sessionRevoked();
      return;
    }
    this.retry();
  }

  retry() {
    this.failures += 1;
    const polling = this.socketFailures >= FAILURES_BEFORE_POLLING;
    this.setMode(polling ? 'polling' : 'offline');
    const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** (this.failures - 1));
    this.timer = setTimeout(() => this.connect(), backoff * (0.75 + Math.random() / 2));
  }

  frame(obj) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  tracker(id, base = 0) {
    let t = this.seqs.get(id);
    if (!t) {
      t = new SeqTracker(base);
      this.seqs.set(id, t);
    }
    return t;
  }

  subscribeFrame(id) {
    const t = this.seqs.get(id);
    return t ? { type: 'subscribe', conversationId: id, afterSeq: t.contig } : { type: 'subscribe', conversationId: id };
  }

  /** Follow a conversation. `afterSeq` is the lastSeq of the view the page is about to load
   * over REST: everything up to it comes from REST, everything after it from the socket. */
  subscribe(id, afterSeq) {
    if (afterSeq != null) this.tracker(id, afterSeq).settle(afterSeq);
    this.subs.add(id);
    this.frame(this.subscribeFrame(id));
  }

  unsubscribe(id) {
    if (!this.subs.delete(id)) return;
    this.frame({ type: 'unsubscribe', conversationId: id });
  }

  /** The contiguous seq this page has seen in a conversation (for read marks). */
  seenSeq(id) {
    return this.seqs.get(id)?.contig ?? 0;
  }

  /** Queues a `send` frame; it goes now if the socket is open, else on reconnect. */
  send(frame) {
    this.outbox.set(frame.clientId, frame);
    return this.frame(frame);
  }

  typing(conversationId, on) {
    this.frame({ type: 'typing', conversationId, on });
  }

  read(conversationId, seq) {
    this.frame({ type: 'read', conversationId, seq });
  }

  received(text) {
    this.lastRx = Date.now();
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    switch (f.type) {
      case 'event': {
        if (f.seq != null && !this.tracker(f.conversationId, f.seq - 1).take(f.seq)) return;
        this.emit('event', f);
        break;
      }
      case 'subscribed':
        this.tracker(f.conversationId, f.lastSeq).settle(f.lastSeq);
        this.emit('subscribed', f);
        break;
      case 'resync_required':
        // The missed events are past retention: start live from now and reload over REST.
        this.seqs.delete(f.conversationId);
        if (this.subs.has(f.conversationId)) this.frame({ type: 'subscribe', conversationId: f.conversationId });
        this.emit('resync', f);
        break;
      case 'ack':
        this.outbox.delete(f.clientId);
        this.emit('ack', f);
        break;
      case 'error':
        if (f.clientId) this.outbox.delete(f.clientId);
        this.emit('error', f);
        break;
      default:
        break; // pong and anything newer than this client
    }
  }
}
