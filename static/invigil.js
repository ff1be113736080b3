/**
 * invigil.js — browser client for the invigil live layer (WebSocket `/ws`).
 *
 * A dependency-free ES module. The pages in this directory use it, and the
 * platform's React app can import it as is (copy it into `src/lib/` or import
 * it from `/static/invigil.js`).
 *
 * ## Connecting
 *
 * ```js
 * import { connect } from '/static/invigil.js';
 *
 * const client = connect({
 *   // url: 'wss://live.example.com/ws',   // default: ws(s)://<location.host>/ws
 *   getToken: async ({ reason, forceRefresh }) => {
 *     // With Supabase: the current access token, or null when signed out.
 *     // forceRefresh is true when the server rejected or expired the last one,
 *     // or when the client refreshes ahead of the token's `exp`.
 *     if (forceRefresh) await supabase.auth.refreshSession();
 *     const { data } = await supabase.auth.getSession();
 *     return data.session?.access_token ?? null;
 *   },
 *   onState: (state) => console.log(state),   // 'connecting' | 'online' | 'offline'
 *   onError: (err) => console.warn(err),      // socket-level errors (no id), optional
 * });
 * ```
 *
 * - `getToken` is called before every (re)connection. A `null` token opens an
 *   unauthenticated socket (only the public leaderboard works there). If it
 *   throws, the client treats the attempt as failed and retries with backoff.
 * - After the socket opens the first frame is `{"type":"auth","token":…}`; the
 *   client waits for `{"type":"authed","user":…}` (then `client.user` is set)
 *   before it sends subscriptions and queued calls, and only then reports `online`.
 * - Reconnects automatically with exponential backoff and full jitter
 *   (250 ms base, 10 s cap, reset once a connection is authenticated), re-auths,
 *   and re-sends every live subscription (the server answers each with a fresh
 *   `data`). A browser `offline` event drops the socket at once; an `online`
 *   event or the page becoming visible reconnects at once (but never sooner
 *   than a server's `retry_after_ms`, below).
 * - Token refresh: shortly before the JWT's `exp` the client asks `getToken`
 *   for a fresh token and sends `{"type":"auth"}` on the open socket. When the
 *   server reports the token expired (`error`, no id, `unauthenticated`), it
 *   does the same at once; subscriptions survive (the server keeps them).
 * - A token refused because its signing key is unknown (`unauthenticated`,
 *   "unknown signing key") is not taken for a sign-out: a key Supabase has just
 *   rotated in can reach the browser before the server may refetch its key set
 *   (at most once per 10 s). The client sends `auth` with the same token once
 *   more after `keyRetryMs` (11 s): on the same socket when it was already
 *   authenticated (it keeps working on its current token meanwhile), else on a
 *   new socket (the server closes one that has not authenticated within 10 s).
 *   Meanwhile the state stays `connecting`. A second refusal is handled as
 *   any refused token: `getToken({forceRefresh: true})` and reconnect.
 * - Overload (`rate_limited` with `retry_after_ms`, CONTRACT §3): the client
 *   never comes back sooner than the server asked.
 *   - A reconnect waits that long plus the usual full-jitter delay, when the
 *     server closed the socket with a close reason carrying
 *     `retry_after_ms=<n>`, or refused the socket (an `error` with no id) or
 *     its `auth` with `rate_limited`.
 *   - A refused call rejects with `.retryAfterMs`; calls queued while not
 *     online are then sent no sooner than that (calls made while online go out
 *     at once, the server judging each, unless queued calls are still waiting:
 *     then they wait behind them, in order).
 *   - A refused `sub` is re-sent after `retry_after_ms`, up to 3 times in a
 *     row, before it ends with `onError`.
 * - Deltas (CONTRACT §3): every `sub` carries `"deltas":true`. For a query
 *   whose result is a list of rows with `_id`, the server may answer changes
 *   with `delta` frames (changed rows whole, removed ids, and the whole id
 *   `order` when it changed); the client keeps each subscription's rows (by
 *   `_id`, in order), applies each delta and hands `onData` the whole result
 *   as a fresh array. Rows that did not change keep their object identity
 *   (also across a whole `data`, when equal), so React and the pages can skip
 *   them. A delta that does not fit what is held (say, a new id without
 *   `order`) makes the client re-subscribe for a fresh `data`.
 * - Liveness is WebSocket ping/pong, answered by the browser itself; this
 *   client runs no heartbeat timers of its own.
 *
 * ## API
 *
 * ```
 * client.subscribe(query, args, onData, onError?) -> unsubscribe()
 *     onData(value, change): the query's whole current result, once at once
 *     and again whenever it changes (for a list, a fresh array each time;
 *     unchanged rows are the same objects as before). `change` says what
 *     changed since the last call:
 *       {full: true}                  a whole `data` (the first one, after a
 *                                     reconnect, whenever the server sent
 *                                     one, and always for a value that is not
 *                                     a list of rows): assume anything changed
 *       {full: false,                 a delta was applied:
 *        upserted: [_id…],            rows that changed or appeared (new objects)
 *        removed: [_id…],             rows that left
 *        reordered: bool}             true when the order is not simply the
 *                                     previous one minus the removed rows
 *                                     (a row appeared, or rows moved)
 *     An error for the subscription ends it: onError(err) (rate_limited
 *     first re-sends it, see Overload above).
 * client.call(fn, args) -> Promise<value>
 *     Rejects with an InvigilError: .code is a contract code (unauthenticated,
 *     forbidden, invalid_argument, not_found, conflict, rate_limited, too_large,
 *     internal) or a client code: 'disconnected' (the socket dropped after the
 *     call was sent, so it may or may not have run; retry only if that is safe),
 *     'closed' (client.close()). .retryAfterMs is set with rate_limited.
 *     Calls made while not online are queued and sent once, in order, after
 *     the next successful (re)connect + auth (no sooner than a rate_limited
 *     answer allows, see Overload above).
 * client.reauth()         fetch a fresh token (getToken) and send it.
 * client.state            'connecting' | 'online' | 'offline'
 * client.user             {id, role, name} from the last `authed`, or null
 * client.onStateChange(fn) -> off()   extra state listeners (see React below)
 * client.close()          stop for good; pending calls reject with 'closed'.
 * ```
 *
 * Options of connect() besides the above: `baseDelayMs` (250), `maxDelayMs`
 * (10000), `refreshLeadMs` (60000), `authTimeoutMs` (15000), `keyRetryMs`
 * (11000), `deltas` (true; false sends plain `sub` frames and gets only
 * whole `data`), `WebSocket` (an implementation, for tests).
 *
 * ## React (useSyncExternalStore)
 *
 * `createQueryStore(client, query, args)` turns a subscription into a small
 * store: `{ subscribe(listener) -> unsubscribe, getSnapshot() }`, where the
 * snapshot is `{ status: 'loading'|'ready'|'error', value, error, change }`
 * (`change` as given to onData) and only changes identity when new data or an
 * error arrives. The subscription to the server is opened by the first
 * listener and closed when the last one leaves. Rows keep their identity while
 * unchanged, so `React.memo` row components re-render only the rows that
 * changed.
 *
 * ```jsx
 * import { useMemo, useSyncExternalStore } from 'react';
 * import { connect, createQueryStore } from './invigil.js';
 *
 * export const invigil = connect({ getToken });   // once, at module level
 *
 * export function useInvigilQuery(query, args) {
 *   const key = JSON.stringify(args);
 *   const store = useMemo(() => createQueryStore(invigil, query, args), [query, key]);
 *   return useSyncExternalStore(store.subscribe, store.getSnapshot);
 * }
 *
 * export function useInvigilState() {
 *   return useSyncExternalStore(invigil.onStateChange, () => invigil.state);
 * }
 *
 * function ProctorDashboard({ examId }) {
 *   const { status, value: sessions, error } =
 *     useInvigilQuery('proctoring.getExamSessions', { exam_id: examId });
 *   const conn = useInvigilState();
 *   if (status === 'error') return <p>{error.code}: {error.message}</p>;
 *   if (status === 'loading') return <p>Loading…</p>;
 *   return <ul>{sessions.map(s => <li key={s._id}>{s.student_name}: {s.status}</li>)}</ul>;
 * }
 * ```
 *
 * The store is tiny; written out by hand it is:
 *
 * ```js
 * function queryStore(client, query, args) {
 *   let snap = { status: 'loading', value: undefined, error: null };
 *   const listeners = new Set();
 *   let unsub = null;
 *   return {
 *     subscribe(listener) {
 *       listeners.add(listener);
 *       unsub ??= client.subscribe(query, args,
 *         (value, change) => { snap = { status: 'ready', value, error: null, change }; listeners.forEach((l) => l()); },
 *         (error) => { snap = { ...snap, status: 'error', error }; listeners.forEach((l) => l()); });
 *       return () => { listeners.delete(listener); if (!listeners.size) { unsub?.(); unsub = null; } };
 *     },
 *     getSnapshot: () => snap,
 *   };
 * }
 * ```
 */

/** Error thrown/passed by the client. `code` is a contract code or 'disconnected' / 'closed'. */
export class InvigilError extends Error {
  constructor(code, message, retryAfterMs) {
    super(message || code);
    this.name = 'InvigilError';
    this.code = code;
    if (retryAfterMs != null) this.retryAfterMs = retryAfterMs;
  }
}

/** ws(s)://<current host>/ws */
export function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('invigil: pass `url` when not running in a browser');
  return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/ws';
}

/** The payload of a JWT (unverified), or null if it cannot be decoded. */
export function decodeJwt(token) {
  try {
    const part = String(token).split('.')[1];
    if (!part) return null;
    let b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

const OPEN = 1;
const MAX_TIMER_MS = 2 ** 31 - 1;
// A sub refused with rate_limited is re-sent at most this many times in a row.
const SUB_RATE_RETRIES = 3;
// The server's words for a token signed by a key its cached key set lacks.
const UNKNOWN_KEY = /unknown signing key|signing key (?:is )?unknown/i;

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else setTimeout(() => { throw err; });
}

// ---------------------------------------------------------------- rows

/** True when v is a list whose every row is an object with a distinct `_id`. */
function isRowList(v) {
  if (!Array.isArray(v)) return false;
  const ids = new Set();
  for (const r of v) {
    if (!r || typeof r !== 'object' || r._id == null || ids.has(r._id)) return false;
    ids.add(r._id);
  }
  return true;
}

/** Structural equality of JSON values. */
function sameJSON(a, b) {
  if (a === b) return true;
  if (!a || !b || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k) || !sameJSON(a[k], b[k])) return false;
  }
  return true;
}

/**
 * The rows of one subscription: `byId` (`_id` -> row), `list` (the rows in
 * order, private: callers get copies) and `pos` (`_id` -> index in `list`).
 * Pure bookkeeping, no I/O: `full` takes a whole `data`, `delta` applies a
 * delta frame; each returns [value, change], or null when the delta does not
 * fit what is held (the caller then asks for a fresh `data`). A delta that
 * only replaces rows (the common case: a heartbeat) costs a copy of the list
 * and one write per row, not a rebuild.
 */
class Rows {
  constructor() {
    this.byId = new Map();
    this.list = [];
    this.pos = new Map();
  }

  full(value) {
    const prev = this.byId;
    const byId = new Map();
    const list = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      let r = value[i];
      const old = prev.get(r._id);
      if (old && sameJSON(old, r)) r = old; // unchanged rows keep their identity
      byId.set(r._id, r);
      list[i] = r;
    }
    this.byId = byId;
    this.setList(list);
    return [list.slice(), { full: true }];
  }

  setList(list) {
    this.list = list;
    this.pos = new Map();
    for (let i = 0; i < list.length; i++) this.pos.set(list[i]._id, i);
  }

  delta(msg) {
    const upsert = Array.isArray(msg.upsert) ? msg.upsert : [];
    const remove = Array.isArray(msg.remove) ? msg.remove : [];
    const hasOrder = Array.isArray(msg.order);
    const { byId } = this;
    const upserted = [];
    let added = false;
    for (const r of upsert) {
      if (!r || typeof r !== 'object' || r._id == null) return null;
      if (!byId.has(r._id)) added = true;
      byId.set(r._id, r);
      upserted.push(r._id);
    }
    const removed = [];
    for (const id of remove) if (byId.delete(id)) removed.push(id);
    if (!upserted.length && !removed.length && !hasOrder) return [null, null]; // nothing to say
    if (added && !hasOrder) return null; // a new row without its place
    if (!removed.length && !hasOrder) {
      // Same rows in the same places: replace the changed ones.
      for (const id of upserted) this.list[this.pos.get(id)] = byId.get(id);
      return [this.list.slice(), { full: false, upserted, removed, reordered: false }];
    }
    let order = this.list.map((r) => r._id);
    if (removed.length) {
      const gone = new Set(removed);
      order = order.filter((id) => !gone.has(id));
    }
    let reordered = false;
    if (hasOrder) {
      // `order` lists every id held, once each.
      const next = msg.order;
      if (next.length !== byId.size) return null;
      const seen = new Set();
      for (const id of next) {
        if (!byId.has(id) || seen.has(id)) return null;
        seen.add(id);
      }
      reordered = next.length !== order.length || next.some((id, i) => id !== order[i]);
      order = next;
    }
    this.setList(order.map((id) => byId.get(id)));
    return [this.list.slice(), { full: false, upserted, removed, reordered }];
  }
}

/**
 * Open a client. See the module comment for the full API.
 * @param {object} opts
 * @param {string} [opts.url]  ws URL; default ws(s)://<location.host>/ws
 * @param {(info:{reason:string, forceRefresh:boolean}) => Promise<string|null>} [opts.getToken]
 * @param {(state:'connecting'|'online'|'offline') => void} [opts.onState]
 * @param {(err:InvigilError) => void} [opts.onError]  socket-level errors
 * @param {number} [opts.baseDelayMs=250]   reconnect backoff base
 * @param {number} [opts.maxDelayMs=10000]  reconnect backoff cap
 * @param {number} [opts.refreshLeadMs=60000]  refresh this long before `exp`
 * @param {number} [opts.authTimeoutMs=15000]  give up on an unanswered `auth`
 * @param {number} [opts.keyRetryMs=11000]  retry a token whose signing key was unknown
 * @param {boolean} [opts.deltas=true]  ask for deltas (`"deltas":true` on every sub)
 * @param {typeof WebSocket} [opts.WebSocket]  WebSocket implementation (tests)
 */
export function connect(opts = {}) {
  const url = opts.url || defaultUrl();
  const getToken = opts.getToken || (async () => null);
  const baseDelayMs = opts.baseDelayMs ?? 250;
  const maxDelayMs = opts.maxDelayMs ?? 10000;
  const refreshLeadMs = opts.refreshLeadMs ?? 60000;
  const authTimeoutMs = opts.authTimeoutMs ?? 15000;
  const keyRetryMs = opts.keyRetryMs ?? 11000;
  const deltas = opts.deltas ?? true;
  const WS = opts.WebSocket || globalThis.WebSocket;

  const stateListeners = new Set();
  if (typeof opts.onState === 'function') stateListeners.add(opts.onState);

  let state = 'connecting';
  let user = null;
  let closed = false;

  let ws = null;            // current socket (also while CONNECTING)
  let gen = 0;              // bumps for every connection attempt
  let opening = false;      // between starting an attempt and having a socket
  let ready = false;        // authed (or token-less) and not paused: frames may flow
  let authedOnSocket = false;
  let awaitingAuth = false;
  let token = null;         // the token sent on the current socket
  let forceRefresh = false; // the last token was rejected/expired
  let attempt = 0;          // backoff exponent
  let authSeq = 0;
  let keyRetried = null;    // a token already retried after "unknown signing key"
  let heldToken = null;     // that token, to send on the next socket without asking getToken
  let reconnectAfter = 0;   // Date.now() before which no reconnect starts (retry_after_ms)
  let callsAfter = 0;       // Date.now() before which queued calls are not sent

  let retryTimer = null;
  let authTimer = null;
  let refreshTimer = null;
  let keyRetryTimer = null;
  let flushTimer = null;

  let nextId = 1;
  const subs = new Map();     // id -> {id, query, args, onData, onError, sentGen, rows, resync, rateTries}
  const inflight = new Map(); // id -> {resolve, reject}
  let queue = [];             // calls waiting for `ready`: {id, fn, args, resolve, reject}

  function setState(s) {
    if (s === state) return;
    state = s;
    for (const fn of [...stateListeners]) {
      try { fn(s); } catch (e) { report(e); }
    }
  }

  function send(obj) {
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  function sendSub(s) {
    const frame = { type: 'sub', id: s.id, query: s.query, args: s.args };
    if (deltas) frame.deltas = true;
    if (send(frame)) s.sentGen = gen;
  }

  async function fetchToken(reason, force) {
    const t = await getToken({ reason, forceRefresh: !!force });
    return typeof t === 'string' && t ? t : null;
  }

  // The server asked for at least ms before the next attempt.
  function holdReconnect(ms) {
    if (!(ms > 0)) return;
    reconnectAfter = Math.max(reconnectAfter, Date.now() + Math.min(ms, MAX_TIMER_MS));
  }

  // Full jitter over the backoff, after whatever the server asked to wait.
  function scheduleReconnect() {
    if (closed || retryTimer) return;
    const floor = Math.max(0, reconnectAfter - Date.now());
    const delay = floor + Math.random() * Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
    attempt = Math.min(attempt + 1, 30);
    retryTimer = setTimeout(() => { retryTimer = null; open(); }, delay);
  }

  function connectNow() {
    if (closed || ws || opening) return;
    if (Date.now() < reconnectAfter) return; // the scheduled attempt honours the server's wait
    clearTimeout(retryTimer);
    retryTimer = null;
    attempt = 0;
    open();
  }

  async function open() {
    if (closed) return;
    clearTimeout(retryTimer);
    retryTimer = null;
    const myGen = ++gen;
    opening = true;
    setState('connecting');
    let t;
    if (heldToken) {
      t = heldToken;
      heldToken = null;
    } else {
      try {
        t = await fetchToken(forceRefresh ? 'rejected' : user ? 'reconnect' : 'connect', forceRefresh);
      } catch (e) {
        if (myGen !== gen || closed) return;
        opening = false;
        setState('offline');
        scheduleReconnect();
        return;
      }
    }
    if (myGen !== gen || closed) return;
    let sock;
    try {
      sock = new WS(url);
    } catch (e) {
      opening = false;
      setState('offline');
      scheduleReconnect();
      return;
    }
    opening = false;
    ws = sock;
    token = t;
    ready = false;
    authedOnSocket = false;
    awaitingAuth = false;
    sock.onopen = () => {
      if (sock !== ws) return;
      if (token) sendAuth(token);
      else becomeReady();
    };
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg && typeof msg === 'object') onMessage(msg);
    };
    sock.onclose = (ev) => {
      if (sock !== ws) return;
      // An overloaded server may say when to come back: "… retry_after_ms=3000".
      const m = /retry_after_ms=(\d+)/.exec(String(ev?.reason ?? ''));
      if (m) holdReconnect(Number(m[1]));
      socketGone();
    };
    sock.onerror = () => { /* a close event follows */ };
  }

  function sendAuth(t) {
    awaitingAuth = true;
    clearTimeout(authTimer);
    authTimer = setTimeout(() => {
      authTimer = null;
      if (awaitingAuth) dropSocket('auth timeout');
    }, authTimeoutMs);
    send({ type: 'auth', token: t });
  }

  // Send every subscription this socket has not seen yet, then queued calls.
  function becomeReady() {
    ready = true;
    attempt = 0;
    forceRefresh = false;
    for (const s of subs.values()) {
      if (s.sentGen === gen || s.rateTimer) continue;
      sendSub(s);
    }
    flushQueue();
    setState('online');
  }

  // Queued calls go out in order once online, no sooner than a rate limit allows.
  function flushQueue() {
    if (flushTimer || !ready || !queue.length) return;
    const wait = callsAfter - Date.now();
    if (wait > 0) {
      flushTimer = setTimeout(() => { flushTimer = null; flushQueue(); }, Math.min(wait, MAX_TIMER_MS));
      return;
    }
    const q = queue;
    queue = [];
    for (const c of q) {
      inflight.set(c.id, c);
      send({ type: 'call', id: c.id, fn: c.fn, args: c.args });
    }
  }

  function scheduleRefresh(t) {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    const exp = decodeJwt(t)?.exp;
    if (typeof exp !== 'number') return;
    const left = exp * 1000 - Date.now();
    if (left <= 0) return; // the server will say so
    const lead = Math.min(refreshLeadMs, left / 4);
    const delay = Math.min(MAX_TIMER_MS, Math.max(1000, left - lead));
    refreshTimer = setTimeout(() => { refreshTimer = null; reauthOnSocket('refresh', true); }, delay);
  }

  async function reauthOnSocket(reason, force) {
    const sock = ws;
    const seq = ++authSeq;
    if (!sock || sock.readyState !== OPEN) return;
    let t;
    try {
      t = await fetchToken(reason, force);
    } catch (e) {
      if (sock !== ws || seq !== authSeq) return;
      if (!ready) dropSocket('token unavailable'); // paused: reconnect with backoff
      else refreshTimer = setTimeout(() => reauthOnSocket(reason, force), 10000);
      return;
    }
    if (sock !== ws || seq !== authSeq || closed) return;
    if (!t) {
      // Signed out (or no way to get a token): start over without one.
      if (token) { token = null; dropSocket('signed out'); }
      return;
    }
    if (t === token && reason === 'refresh') {
      // getToken has nothing newer yet; ask again a little later.
      const exp = decodeJwt(t)?.exp;
      const left = typeof exp === 'number' ? exp * 1000 - Date.now() : 0;
      if (left > 5000) {
        refreshTimer = setTimeout(() => { refreshTimer = null; reauthOnSocket('refresh', true); },
          Math.min(15000, left / 2));
      }
      return;
    }
    token = t;
    sendAuth(t);
  }

  function deliver(s, value, change) {
    try { s.onData(value, change); } catch (e) { report(e); }
  }

  function onData(s, value) {
    s.resync = false;
    s.rateTries = 0;
    if (isRowList(value)) {
      s.rows ??= new Rows();
      const [v, change] = s.rows.full(value);
      deliver(s, v, change);
    } else {
      s.rows = null;
      deliver(s, value, { full: true });
    }
  }

  function onDelta(s, msg) {
    if (s.resync) return; // a fresh data is on its way
    const out = s.rows ? s.rows.delta(msg) : null;
    if (!out) { resubscribe(s); return; }
    const [value, change] = out;
    if (change) deliver(s, value, change);
  }

  // The rows held no longer match the server's: drop them and ask for a
  // whole `data` under a new id (an id in use cannot be subscribed again).
  function resubscribe(s) {
    console.warn(`invigil: ${s.query}: a delta did not fit the rows held; re-subscribing`);
    s.rows = null;
    s.resync = true;
    if (s.sentGen === gen) send({ type: 'unsub', id: s.id }); // also while paused: the server keeps paused subs
    subs.delete(s.id);
    s.id = 'q' + nextId++;
    subs.set(s.id, s);
    s.sentGen = 0;
    if (ready) sendSub(s);
  }

  function onMessage(msg) {
    switch (msg.type) {
      case 'authed': {
        clearTimeout(authTimer);
        authTimer = null;
        awaitingAuth = false;
        keyRetried = null;
        user = msg.user ?? null;
        authedOnSocket = true;
        scheduleRefresh(token);
        // First auth on this socket: send everything. Re-auth after a pause:
        // the server re-sends existing subscriptions itself; send only what
        // was added meanwhile, plus queued calls.
        becomeReady();
        break;
      }
      case 'data': {
        const s = subs.get(msg.id);
        if (s) onData(s, msg.value);
        break;
      }
      case 'delta': {
        const s = subs.get(msg.id);
        if (s) onDelta(s, msg);
        break;
      }
      case 'result': {
        const c = inflight.get(msg.id);
        if (c) { inflight.delete(msg.id); c.resolve(msg.value); }
        break;
      }
      case 'error': {
        const err = new InvigilError(msg.code || 'internal', msg.message, msg.retry_after_ms);
        if (msg.id != null) {
          const c = inflight.get(msg.id);
          if (c) {
            inflight.delete(msg.id);
            if (err.code === 'rate_limited' && err.retryAfterMs > 0) {
              callsAfter = Math.max(callsAfter, Date.now() + err.retryAfterMs);
            }
            c.reject(err);
            break;
          }
          const s = subs.get(msg.id);
          if (s) subError(s, err);
          break;
        }
        socketError(err);
        break;
      }
      default:
        // pong and anything newer: ignore.
        break;
    }
  }

  function subError(s, err) {
    if (err.code === 'rate_limited' && err.retryAfterMs > 0 && s.rateTries < SUB_RATE_RETRIES) {
      // The server ended it for now; ask again when it said to.
      s.rateTries++;
      s.sentGen = 0;
      clearTimeout(s.rateTimer);
      s.rateTimer = setTimeout(() => {
        s.rateTimer = null;
        if (subs.get(s.id) === s && ready && s.sentGen !== gen) sendSub(s);
      }, Math.min(err.retryAfterMs, MAX_TIMER_MS));
      return;
    }
    subs.delete(s.id);
    if (s.onError) {
      try { s.onError(err); } catch (e) { report(e); }
    } else {
      console.warn(`invigil: subscription ${s.query} ended:`, err);
    }
  }

  function socketError(err) {
    if (err.code === 'unauthenticated' && token) {
      if (awaitingAuth && keyRetried !== token && UNKNOWN_KEY.test(err.message)) {
        retryUnknownKey();
      } else if (awaitingAuth && !authedOnSocket) {
        // The token we just sent was refused: start over, asking for a new one.
        forceRefresh = true;
        dropSocket('token rejected');
      } else {
        // Token expired (or a refreshed one was refused): the socket is paused
        // with its subscriptions; resume it with a fresh token.
        const wasAwaiting = awaitingAuth;
        awaitingAuth = false;
        ready = false;
        setState('connecting');
        if (wasAwaiting) {
          forceRefresh = true;
          dropSocket('token rejected');
        } else {
          reauthOnSocket('expired', true);
        }
      }
    } else if (err.code === 'rate_limited') {
      // The server is shedding load. Refused before we were in: come back later.
      holdReconnect(err.retryAfterMs ?? 0);
      if (awaitingAuth && !authedOnSocket) dropSocket('rate limited');
      else if (awaitingAuth) {
        awaitingAuth = false;
        clearTimeout(authTimer);
        const sock = ws, t = token;
        keyRetryTimer = setTimeout(() => { if (sock === ws && t === token) sendAuth(t); }, err.retryAfterMs ?? 1000);
      }
    }
    if (opts.onError) {
      try { opts.onError(err); } catch (e) { report(e); }
    }
  }

  // A token from a key the server has not fetched yet: send it once more
  // after the server may refetch its key set.
  function retryUnknownKey() {
    keyRetried = token;
    awaitingAuth = false;
    clearTimeout(authTimer);
    authTimer = null;
    if (authedOnSocket) {
      // The socket stays on its current token (or paused) meanwhile.
      const sock = ws, t = token;
      clearTimeout(keyRetryTimer);
      keyRetryTimer = setTimeout(() => {
        keyRetryTimer = null;
        if (sock === ws && t === token && !closed) sendAuth(t);
      }, keyRetryMs);
      return;
    }
    // Never authenticated: the server closes such a socket after 10 s, so
    // come back on a new one with the same token.
    heldToken = token;
    holdReconnect(keyRetryMs);
    dropSocket('signing key not known yet', 'connecting');
  }

  // Forget the current socket at once (without waiting for a close handshake).
  function dropSocket(reason, nextState = 'offline') {
    const sock = ws;
    if (!sock) return;
    sock.onopen = sock.onmessage = sock.onclose = sock.onerror = null;
    try { sock.close(4000, reason); } catch { /* ignore */ }
    socketGone(nextState);
  }

  function socketGone(nextState = 'offline') {
    ws = null;
    ready = false;
    authedOnSocket = false;
    awaitingAuth = false;
    clearTimeout(authTimer);
    authTimer = null;
    clearTimeout(refreshTimer);
    refreshTimer = null;
    clearTimeout(keyRetryTimer);
    keyRetryTimer = null;
    clearTimeout(flushTimer);
    flushTimer = null;
    authSeq++;
    const err = () => closed
      ? new InvigilError('closed', 'client closed')
      : new InvigilError('disconnected', 'connection lost before the call was answered');
    const calls = [...inflight.values()];
    inflight.clear();
    for (const c of calls) c.reject(err());
    if (closed) return;
    setState(nextState);
    scheduleReconnect();
  }

  // Browser hints.
  const onOffline = () => { if (ws) dropSocket('browser offline'); };
  const onOnline = () => connectNow();
  const onVisible = () => { if (globalThis.document?.visibilityState === 'visible') connectNow(); };
  globalThis.addEventListener?.('offline', onOffline);
  globalThis.addEventListener?.('online', onOnline);
  globalThis.document?.addEventListener?.('visibilitychange', onVisible);

  const client = {
    get state() { return state; },
    get user() { return user; },

    subscribe(query, args, onData, onError) {
      if (typeof onData !== 'function') throw new TypeError('invigil: subscribe needs onData');
      const s = {
        id: 'q' + nextId++, query, args: args ?? {}, onData, onError,
        sentGen: 0, rows: null, resync: false, rateTries: 0, rateTimer: null,
      };
      if (closed) {
        queueMicrotask(() => onError?.(new InvigilError('closed', 'client closed')));
        return () => {};
      }
      subs.set(s.id, s);
      if (ready) sendSub(s);
      return function unsubscribe() {
        clearTimeout(s.rateTimer);
        s.rateTimer = null;
        if (subs.get(s.id) !== s) return;
        subs.delete(s.id);
        if (s.sentGen === gen && ws && ws.readyState === OPEN) send({ type: 'unsub', id: s.id });
      };
    },

    call(fn, args) {
      return new Promise((resolve, reject) => {
        if (closed) { reject(new InvigilError('closed', 'client closed')); return; }
        const c = { id: 'c' + nextId++, fn, args: args ?? {}, resolve, reject };
        if (ready && ws && ws.readyState === OPEN && !queue.length) {
          inflight.set(c.id, c);
          send({ type: 'call', id: c.id, fn, args: c.args });
        } else {
          queue.push(c); // behind the calls queued before it
        }
      });
    },

    reauth() {
      if (closed) return;
      if (ws && ws.readyState === OPEN) reauthOnSocket('manual', true);
      else if (!ws) connectNow();
    },

    onStateChange(fn) {
      stateListeners.add(fn);
      return () => stateListeners.delete(fn);
    },

    close() {
      if (closed) return;
      closed = true;
      clearTimeout(retryTimer);
      retryTimer = null;
      globalThis.removeEventListener?.('offline', onOffline);
      globalThis.removeEventListener?.('online', onOnline);
      globalThis.document?.removeEventListener?.('visibilitychange', onVisible);
      dropSocket('client closed');
      gen++;
      const err = () => new InvigilError('closed', 'client closed');
      for (const c of queue) c.reject(err());
      queue = [];
      for (const s of subs.values()) clearTimeout(s.rateTimer);
      subs.clear();
      setState('offline');
    },
  };

  open();
  return client;
}

/**
 * A subscription as a store for React's useSyncExternalStore (or anything
 * similar): `{ subscribe(listener) -> unsubscribe, getSnapshot() }`.
 * Snapshot: `{ status: 'loading'|'ready'|'error', value, error, change }`.
 */
export function createQueryStore(client, query, args) {
  let snapshot = { status: 'loading', value: undefined, error: null, change: null };
  const listeners = new Set();
  let unsub = null;
  const emit = () => { for (const l of [...listeners]) l(); };
  return {
    subscribe(listener) {
      listeners.add(listener);
      if (!unsub) {
        unsub = client.subscribe(query, args,
          (value, change) => { snapshot = { status: 'ready', value, error: null, change }; emit(); },
          (error) => { snapshot = { status: 'error', value: snapshot.value, error, change: null }; emit(); });
      }
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0 && unsub) { unsub(); unsub = null; }
      };
    },
    getSnapshot() { return snapshot; },
  };
}
