// Shared helpers for the invigil demo pages: token handling (localStorage +
// demo sign-in), DOM building (text only, never HTML from data), time
// formatting, error messages and the connection indicator.

import { decodeJwt } from '/static/invigil.js';

export const TOKEN_KEY = 'invigil.token';
export const DEMO_USER_KEY = 'invigil.demo_user';

// ---------------------------------------------------------------- storage

function lsGet(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}
function lsSet(key, value) {
  try {
    if (value == null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch { /* private mode etc. */ }
}

export function storedToken() { return lsGet(TOKEN_KEY); }

export function storedDemoUser() {
  try { return JSON.parse(lsGet(DEMO_USER_KEY) || 'null'); } catch { return null; }
}

export function saveSignIn(token, demoUser) {
  lsSet(TOKEN_KEY, token);
  lsSet(DEMO_USER_KEY, demoUser ? JSON.stringify(demoUser) : null);
}

export function signOut() {
  lsSet(TOKEN_KEY, null);
  lsSet(DEMO_USER_KEY, null);
}

/** True when the token has no readable exp or expires within `marginS` seconds. */
export function tokenExpiring(token, marginS = 0) {
  const exp = decodeJwt(token)?.exp;
  if (typeof exp !== 'number') return false; // let the server judge
  return exp * 1000 - Date.now() <= marginS * 1000;
}

/** Who the stored token says we are: {id, role, name}, or null. */
export function tokenIdentity(token = storedToken()) {
  const p = token && decodeJwt(token);
  if (!p) return null;
  const um = p.user_metadata || {};
  const am = p.app_metadata || {};
  const name = um.full_name || um.name || (p.email ? String(p.email).split('@')[0] : '') || p.sub;
  return { id: p.sub, role: am.role || 'student', name, expired: tokenExpiring(token) };
}

// ---------------------------------------------------------------- demo sign-in

/**
 * POST /demo/token {user_id, role, name} -> token string.
 * Throws Error with .status (HTTP status) or a TypeError on network failure.
 */
export async function fetchDemoToken(user) {
  const res = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: user.user_id, role: user.role, name: user.name }),
  });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try { const b = await res.json(); if (b?.message) msg = b.message; } catch { /* not JSON */ }
    const e = new Error(msg);
    e.status = res.status;
    throw e;
  }
  const body = await res.json();
  if (!body || typeof body.token !== 'string') throw new Error('no token in /demo/token reply');
  return body.token;
}

/**
 * getToken for invigil.js connect(): the stored token; when it is missing,
 * expired, or the client asks for a fresh one, and a demo user was saved by
 * the sign-in page, a new one from /demo/token (demo mode).
 */
export async function pageGetToken({ reason = 'connect', forceRefresh = false } = {}) {
  const stored = storedToken();
  const usable = stored && !tokenExpiring(stored, 30);
  if (usable && !forceRefresh) return stored;
  const demoUser = storedDemoUser();
  if (demoUser) {
    try {
      const t = await fetchDemoToken(demoUser);
      lsSet(TOKEN_KEY, t);
      return t;
    } catch (e) {
      // Network failure (server down): let the client retry with backoff.
      if (!(e && 'status' in e)) throw e;
      // /demo/token is not there (not in demo mode): fall through.
    }
  }
  if (reason === 'rejected') return null;
  return stored && !tokenExpiring(stored) ? stored : null;
}

// ---------------------------------------------------------------- DOM

/**
 * h('div', {class: 'x', dataset: {id: 1}, onclick: fn}, 'text', childNode…)
 * Strings become text nodes; nothing is ever parsed as HTML.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function setText(el, text) {
  const s = text == null ? '' : String(text);
  if (el && el.textContent !== s) el.textContent = s;
}

// ---------------------------------------------------------------- location

/** The exam id: /proctor/{id} or /exam/{id}; else ?exam=; else "demo". */
export function examIdFromLocation() {
  const m = location.pathname.match(/^\/(?:proctor|exam)\/([^/]+)\/?$/);
  if (m) {
    try { return decodeURIComponent(m[1]); } catch { return m[1]; }
  }
  return new URLSearchParams(location.search).get('exam') || 'demo';
}

export function signInHref() {
  return '/signin?next=' + encodeURIComponent(location.pathname + location.search);
}

// ---------------------------------------------------------------- time

export function parseTime(v) {
  if (v == null || v === '') return NaN;
  const t = typeof v === 'number' ? v : Date.parse(v);
  return Number.isFinite(t) ? t : NaN;
}

export function fmtClock(v) {
  const t = parseTime(v);
  if (Number.isNaN(t)) return '—';
  return new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function fmtAgo(v, now = Date.now()) {
  const t = parseTime(v);
  if (Number.isNaN(t)) return 'never';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s ago`;
  const hr = Math.floor(m / 60);
  return `${hr} h ${m % 60} min ago`;
}

export function secondsSince(v, now = Date.now()) {
  const t = parseTime(v);
  return Number.isNaN(t) ? Infinity : (now - t) / 1000;
}

// ---------------------------------------------------------------- errors

const ERROR_TEXT = {
  unauthenticated: 'You are not signed in, or your session has expired.',
  forbidden: 'You do not have access to this.',
  not_found: 'Not found.',
  conflict: 'This cannot be done right now.',
  invalid_argument: 'The request was not valid.',
  rate_limited: 'Too many requests; retrying shortly.',
  too_large: 'The request was too large.',
  internal: 'The server had a problem.',
  disconnected: 'The connection dropped before the server answered.',
  closed: 'The connection was closed.',
};

export function errorText(err, specific = {}) {
  const code = err?.code || 'internal';
  const base = specific[code] || ERROR_TEXT[code] || 'Something went wrong.';
  const detail = err?.message && err.message !== code ? ` (${err.message})` : '';
  return `${base}${detail}`;
}

// ---------------------------------------------------------------- connection UI

/**
 * Drive the #conn indicator (and an optional "connection lost" banner) from
 * client states. Returns the onState function to pass to connect().
 * Text: "Live" | "Connecting…" (first time) | "Reconnecting…" | "Offline".
 */
export function connIndicator(connEl, bannerEl) {
  let everOnline = false;
  return function onState(state) {
    if (state === 'online') everOnline = true;
    let text;
    if (state === 'online') text = 'Live';
    else if (state === 'connecting') text = everOnline ? 'Reconnecting…' : 'Connecting…';
    else text = 'Offline';
    if (connEl) {
      connEl.dataset.state = state;
      setText(connEl, text);
      connEl.title = state === 'online'
        ? 'Connected: updates arrive live'
        : 'Not connected: reconnecting automatically';
    }
    if (bannerEl) bannerEl.hidden = state === 'online' || !everOnline;
    document.body.classList.toggle('stale', state !== 'online' && everOnline);
  };
}

/** Fill a "signed in as" element from an identity {name, role, id}. */
export function renderWho(el, ident) {
  if (!el) return;
  el.replaceChildren();
  if (!ident) {
    el.append(h('a', { href: signInHref(), class: 'who-signin' }, 'Sign in'));
    return;
  }
  el.append(
    h('span', { class: 'who-name' }, ident.name || ident.id || 'unknown'),
    ' ',
    h('span', { class: `role role-${ident.role || 'student'}` }, ident.role || 'student'),
  );
  el.title = ident.id ? `user id: ${ident.id}` : '';
}
