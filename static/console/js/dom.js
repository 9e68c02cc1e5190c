// Small DOM and formatting helpers. Text always goes in as text nodes, never as HTML.

/** h('div', {class: 'x', onclick: fn}, 'text', child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function personName(u) {
  const n = `${u?.firstName || ''} ${u?.lastName || ''}`.trim();
  return n || u?.phone || 'Unknown';
}

export function initials(u) {
  const parts = personName(u).split(/\s+/).filter((p) => /\p{L}/u.test(p));
  return (parts.map((p) => p[0]).join('').slice(0, 2) || '#').toUpperCase();
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const shortDayFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });

export const sameDay = (a, b) =>
  a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

/** "14:05" today, "Yesterday", else "3 Nov". */
export function listTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const now = new Date();
  if (sameDay(d, now)) return timeFmt.format(d);
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return 'Yesterday';
  return shortDayFmt.format(d);
}

export const clock = (iso) => timeFmt.format(new Date(iso));

export function dayLabel(d) {
  const now = new Date();
  if (sameDay(d, now)) return 'Today';
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return 'Yesterday';
  return dayFmt.format(d);
}

/** 86399 → "23:59:59" */
export function hms(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

export function fileSize(bytes) {
  if (!Number.isFinite(bytes)) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** A short live-region announcement for screen readers and a visible toast. */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(t);
  setTimeout(() => t.remove(), 6000);
}

export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

// Icons as inline SVG (no icon font, no emoji: both may be missing on an agent's machine).
const ICONS = {
  clip: 'M16.5 6.5 8.6 14.4a2 2 0 0 0 2.8 2.8l8-8a4 4 0 0 0-5.6-5.6l-8.2 8.2a6 6 0 0 0 8.5 8.5l7-7',
  clock: 'M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm0 4v5l3 2',
  doc: 'M6 2h8l5 5v15H6zM14 2v5h5',
  alert: 'M12 3 2 21h20zM12 10v5M12 18v.5',
};

export function icon(name, label) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', `icon icon-${name}`);
  if (label) {
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
  } else svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

/** A button that opens a menu of actions: `items` are `{ label, onclick }`. Escape closes it
 * and gives the focus back to the button; `wrap` is the class of the element holding both. */
export function menuButton({ label, text, cls = '', wrap = 'menu-wrap' }, items) {
  const menu = h('div', { class: 'msg-menu', role: 'menu', 'aria-label': label, hidden: true });
  const toggle = (open) => {
    menu.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (open) menu.querySelector('button')?.focus();
  };
  const button = h('button', { type: 'button', class: `ghost ${cls}`.trim(), 'aria-label': label, 'aria-haspopup': 'menu', 'aria-expanded': 'false', onclick: () => toggle(menu.hidden) }, text);
  for (const it of items) menu.append(h('button', { type: 'button', role: 'menuitem', onclick: () => (toggle(false), it.onclick()) }, it.label));
  menu.addEventListener('keydown', (e) => e.key === 'Escape' && (e.stopPropagation(), toggle(false), button.focus()));
  return h('div', { class: wrap }, button, menu);
}
