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
 *   event or the page becoming visible reconnects at once.
 * - Token refresh: shortly before the JWT's `exp` the client asks `getToken`
 *   for a fresh token and sends `{"type":"auth"}` on the open socket. When the
 *   server reports the token expired (`error`, no id, `unauthenticated`), it
 *   does the same at once; subscriptions survive (the server keeps them).
 * - Liveness is WebSocket ping/pong, answered by the browser itself; this
 *   client runs no heartbeat timers of its own.
 *
 * ## API
 *
 * ```
 * client.subscribe(query, args, onData, onError?) -> unsubscribe()
 *     onData(value): the query's whole current result, once at once and again
 *     whenever it changes. An error for the subscription ends it: onError(err).
 * client.call(fn, args) -> Promise<value>
 *     Rejects with an InvigilError: .code is a contract code (unauthenticated,
 *     forbidden, invalid_argument, not_found, conflict, rate_limited, too_large,
 *     internal) or a client code: 'disconnected' (the socket dropped after the
 *     call was sent, so it may or may not have run; retry only if that is safe),
 *     'closed' (client.close()). .retryAfterMs is set with rate_limited.
 *     Calls made while not online are queued and sent once, in order, after
 *     the next successful (re)connect + auth.
 * client.reauth()         fetch a fresh token (getToken) and send it.
 * client.state            'connecting' | 'online' | 'offline'
 * client.user             {id, role, name} from the last `authed`, or null
 * client.onStateChange(fn) -> off()   extra state listeners (see React below)
 * client.close()          stop for good; pending calls reject with 'closed'.
 * ```
 *
 * ## React (useSyncExternalStore)
 *
 * `createQueryStore(client, query, args)` turns a subscription into a small
 * store: `{ subscribe(listener) -> unsubscribe, getSnapshot() }`, where the
 * snapshot is `{ status: 'loading'|'ready'|'error', value, error }` and only
 * changes identity when new data or an error arrives. The subscription to the
 * server is opened by the first listener and closed when the last one leaves.
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
 *         (value) => { snap = { status: 'ready', value, error: null }; listeners.forEach((l) => l()); },
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

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else setTimeout(() => { throw err; });
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
 * @param {typeof WebSocket} [opts.WebSocket]  WebSocket implementation (tests)
 */
export function connect(opts = {}) {
  const url = opts.url || defaultUrl();
  const getToken = opts.getToken || (async () => null);
  const baseDelayMs = opts.baseDelayMs ?? 250;
  const maxDelayMs = opts.maxDelayMs ?? 10000;
  const refreshLeadMs = opts.refreshLeadMs ?? 60000;
  const authTimeoutMs = opts.authTimeoutMs ?? 15000;
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

  let retryTimer = null;
  let authTimer = null;
  let refreshTimer = null;

  let nextId = 1;
  const subs = new Map();     // id -> {query, args, onData, onError, sentGen}
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

  async function fetchToken(reason, force) {
    const t = await getToken({ reason, forceRefresh: !!force });
    return typeof t === 'string' && t ? t : null;
  }

  function scheduleReconnect() {
    if (closed || retryTimer) return;
    const delay = Math.random() * Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
    attempt = Math.min(attempt + 1, 30);
    retryTimer = setTimeout(() => { retryTimer = null; open(); }, delay);
  }

  function connectNow() {
    if (closed || ws || opening) return;
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
    try {
      t = await fetchToken(forceRefresh ? 'rejected' : user ? 'reconnect' : 'connect', forceRefresh);
    } catch (e) {
      if (myGen !== gen || closed) return;
      opening = false;
      setState('offline');
      scheduleReconnect();
      return;
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
    sock.onclose = () => {
      if (sock !== ws) return;
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
    for (const [id, s] of subs) {
      if (s.sentGen === gen) continue;
      if (send({ type: 'sub', id, query: s.query, args: s.args })) s.sentGen = gen;
    }
    const q = queue;
    queue = [];
    for (const c of q) {
      inflight.set(c.id, c);
      send({ type: 'call', id: c.id, fn: c.fn, args: c.args });
    }
    setState('online');
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

  function onMessage(msg) {
    switch (msg.type) {
      case 'authed': {
        clearTimeout(authTimer);
        authTimer = null;
        awaitingAuth = false;
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
        if (s) {
          try { s.onData(msg.value); } catch (e) { report(e); }
        }
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
          if (c) { inflight.delete(msg.id); c.reject(err); break; }
          const s = subs.get(msg.id);
          if (s) {
            subs.delete(msg.id);
            if (s.onError) {
              try { s.onError(err); } catch (e) { report(e); }
            } else {
              console.warn(`invigil: subscription ${s.query} ended:`, err);
            }
          }
          break;
        }
        socketError(err);
        break;
      }
      default:
        // pong, delta (never requested) and anything newer: ignore.
        break;
    }
  }

  function socketError(err) {
    if (err.code === 'unauthenticated' && token) {
      if (awaitingAuth && !authedOnSocket) {
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
    }
    if (opts.onError) {
      try { opts.onError(err); } catch (e) { report(e); }
    }
  }

  // Forget the current socket at once (without waiting for a close handshake).
  function dropSocket(reason) {
    const sock = ws;
    if (!sock) return;
    sock.onopen = sock.onmessage = sock.onclose = sock.onerror = null;
    try { sock.close(4000, reason); } catch { /* ignore */ }
    socketGone();
  }

  function socketGone() {
    ws = null;
    ready = false;
    authedOnSocket = false;
    awaitingAuth = false;
    clearTimeout(authTimer);
    authTimer = null;
    clearTimeout(refreshTimer);
    refreshTimer = null;
    authSeq++;
    const err = () => closed
      ? new InvigilError('closed', 'client closed')
      : new InvigilError('disconnected', 'connection lost before the call was answered');
    const calls = [...inflight.values()];
    inflight.clear();
    for (const c of calls) c.reject(err());
    if (closed) return;
    setState('offline');
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
      const id = 'q' + nextId++;
      const s = { query, args: args ?? {}, onData, onError, sentGen: 0 };
      if (closed) {
        queueMicrotask(() => onError?.(new InvigilError('closed', 'client closed')));
        return () => {};
      }
      subs.set(id, s);
      if (ready && send({ type: 'sub', id, query, args: s.args })) s.sentGen = gen;
      return function unsubscribe() {
        if (subs.get(id) !== s) return;
        subs.delete(id);
        if (s.sentGen === gen && ws && ws.readyState === OPEN) send({ type: 'unsub', id });
      };
    },

    call(fn, args) {
      return new Promise((resolve, reject) => {
        if (closed) { reject(new InvigilError('closed', 'client closed')); return; }
        const c = { id: 'c' + nextId++, fn, args: args ?? {}, resolve, reject };
        if (ready && ws && ws.readyState === OPEN) {
          inflight.set(c.id, c);
          send({ type: 'call', id: c.id, fn, args: c.args });
        } else {
          queue.push(c);
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
 * Snapshot: `{ status: 'loading'|'ready'|'error', value, error }`.
 */
export function createQueryStore(client, query, args) {
  let snapshot = { status: 'loading', value: undefined, error: null };
  const listeners = new Set();
  let unsub = null;
  const emit = () => { for (const l of [...listeners]) l(); };
  return {
    subscribe(listener) {
      listeners.add(listener);
      if (!unsub) {
        unsub = client.subscribe(query, args,
          (value) => { snapshot = { status: 'ready', value, error: null }; emit(); },
          (error) => { snapshot = { status: 'error', value: snapshot.value, error }; emit(); });
      }
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0 && unsub) { unsub(); unsub = null; }
      };
    },
    getSnapshot() { return snapshot; },
  };
}
