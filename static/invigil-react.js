/**
 * invigil-react.js — React bindings for invigil.js (types: invigil-react.d.ts).
 *
 * A plain ES module for a bundler (Vite): React is a peer, imported as
 * 'react' and resolved by the app's bundler. Copy this file, invigil.js and
 * both .d.ts files into the app (say src/lib/invigil/), or point an alias at
 * them; docs/integration.md walks through it.
 *
 * ```jsx
 * <InvigilProvider supabase={supabase} url={import.meta.env.VITE_INVIGIL_URL}>
 *   <App />
 * </InvigilProvider>
 *
 * const sessions = useQuery('proctoring.getExamSessions', { exam_id });  // undefined while loading
 * const beat = useCall('proctoring.heartbeat');                           // (args) => Promise<result>
 * const exam = useProctoring(examId, { currentQuestion, answeredCount });  // start, heartbeats, violations; exam.submit()
 * const chat = useChat(sessionId);                                        // messages (optimistic), send, markRead, setTyping
 * const here = usePresence('exam:' + examId);
 * const board = useLeaderboard('DEMO42');                                 // public: no token needed
 * const state = useConnectionState();                                     // 'connecting' | 'online' | 'offline'
 * ```
 *
 * Everything here is built on useSyncExternalStore, and nothing with a side
 * effect happens during render: the provider's client connects when the
 * first hook subscribes (a commit), and everything that is let go is let go
 * a moment later, so that React StrictMode's double mount (mount, unmount,
 * mount) keeps the same socket, the same subscription and the same
 * proctoring session: exactly one proctoring.startSession per exam view.
 */

import {
  createContext, createElement, useCallback, useContext, useEffect, useMemo, useRef, useState,
  useSyncExternalStore,
} from 'react';
import { connect, InvigilError } from './invigil.js';

// ------------------------------------------------------------------ helpers

/** JSON with object keys sorted, so equal arguments give equal keys. */
function stableKey(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'undefined';
  if (Array.isArray(v)) return '[' + v.map((x) => (x === undefined ? 'null' : stableKey(x))).join(',') + ']';
  return '{' + Object.keys(v).sort().filter((k) => v[k] !== undefined)
    .map((k) => JSON.stringify(k) + ':' + stableKey(v[k])).join(',') + '}';
}

/** A random id for client_msg_id / client_id (crypto.randomUUID where there is one). */
export function randomId() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else setTimeout(() => { throw err; });
}

/** A tiny store: a snapshot and listeners, for useSyncExternalStore. */
class Store {
  constructor(snapshot) {
    this.snapshot = snapshot;
    this.listeners = new Set();
  }
  get() { return this.snapshot; }
  set(patch) {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const l of [...this.listeners]) {
      try { l(); } catch (e) { report(e); }
    }
  }
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

// ------------------------------------------------------------------ the client a provider holds

const SKIPPED = Object.freeze({ status: 'skipped', value: undefined, error: null, change: null });
const LOADING = Object.freeze({ status: 'loading', value: undefined, error: null, change: null });

/**
 * One live subscription shared by every component that asks for the same
 * query with the same arguments. It opens with the first listener and
 * closes keepAliveMs after the last one leaves (unless one comes back).
 */
class QueryEntry {
  constructor(lazy, key, query, args) {
    this.lazy = lazy;
    this.key = key;
    this.query = query;
    this.args = args;
    this.snapshot = LOADING;
    this.listeners = new Set();
    this.unsub = null;
    this.timer = null;
  }

  emit() {
    for (const l of [...this.listeners]) l();
  }

  listen(fn) {
    this.listeners.add(fn);
    clearTimeout(this.timer);
    this.timer = null;
    if (!this.unsub && this.snapshot.status !== 'error') {
      this.unsub = this.lazy.client().subscribe(this.query, this.args,
        (value, change) => { this.snapshot = { status: 'ready', value, error: null, change }; this.emit(); },
        (error) => {
          // The server ended the subscription: keep the last value, say why.
          this.unsub = null;
          this.snapshot = { status: 'error', value: this.snapshot.value, error, change: null };
          this.emit();
        });
    }
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size === 0) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.drop(), this.lazy.keepAliveMs);
      }
    };
  }

  drop() {
    this.timer = null;
    if (this.listeners.size) return;
    this.unsub?.();
    this.unsub = null;
    this.lazy.queries.delete(this.key);
  }
}

/**
 * The provider's client: an InvigilClient that connects on first use (from
 * an effect or an event handler, never from render) and closes when the
 * provider has been unmounted for a moment. A client passed in is used as
 * is and never closed here.
 */
class LazyClient {
  constructor(make, owned, keepAliveMs) {
    this.make = make;
    this.owned = owned;
    this.keepAliveMs = keepAliveMs;
    this.real = null;
    this.queries = new Map(); // key -> QueryEntry, for this.real
    this.stateListeners = new Set();
    this.offState = null;
    this.holds = 0;
    this.closeTimer = null;
    this.lastToken = undefined; // the last token getToken handed out (Supabase bridge)
  }

  /** The connected client, made on first use. */
  client() {
    if (!this.real) {
      this.real = this.make(this);
      this.offState = this.real.onStateChange((s) => {
        for (const l of [...this.stateListeners]) {
          try { l(s); } catch (e) { report(e); }
        }
      });
    }
    return this.real;
  }

  // The provider's mount holds the client; the last release closes it a
  // moment later, unless a mount (StrictMode's second one) takes it again.
  hold() {
    this.holds++;
    clearTimeout(this.closeTimer);
    this.closeTimer = null;
  }

  release() {
    this.holds--;
    if (this.holds > 0) return;
    clearTimeout(this.closeTimer);
    this.closeTimer = setTimeout(() => {
      this.closeTimer = null;
      if (this.holds > 0 || !this.real) return;
      this.offState?.();
      this.offState = null;
      for (const q of this.queries.values()) clearTimeout(q.timer);
      this.queries.clear();
      disposeProctors(this);
      if (this.owned) this.real.close();
      this.real = null;
    }, 0);
  }

  entry(key, query, args) {
    let e = this.queries.get(key);
    if (!e) {
      this.client(); // an entry belongs to the current client
      e = new QueryEntry(this, key, query, args);
      this.queries.set(key, e);
    }
    return e;
  }

  // InvigilClient, forwarded.
  get state() { return this.real ? this.real.state : 'connecting'; }
  get user() { return this.real ? this.real.user : null; }
  subscribe(query, args, onData, onError) { return this.client().subscribe(query, args, onData, onError); }
  call(fn, args) { return this.client().call(fn, args); }
  reauth() { this.real?.reauth(); }
  onStateChange(fn) {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }
  close() { throw new Error('invigil: the provider closes its client when it unmounts'); }
}

/**
 * getToken over a Supabase client: the session's access token (null when
 * signed out). When invigil refused or expired the token, Supabase is asked
 * for a fresh session first; otherwise Supabase's own refresh keeps the
 * session current (getSession refreshes a token about to expire).
 */
function supabaseGetToken(supabase, lazy) {
  return async ({ reason }) => {
    if (reason === 'rejected' || reason === 'expired') {
      try { await supabase.auth.refreshSession(); } catch { /* offline, or signed out: use what there is */ }
    }
    const { data } = await supabase.auth.getSession();
    const token = data?.session?.access_token ?? null;
    lazy.lastToken = token;
    return token;
  };
}

const Ctx = createContext(null);

/**
 * Holds one invigil client for the tree below. Give it the platform's
 * Supabase client (tokens from supabase.auth.getSession(), re-sent on
 * onAuthStateChange), or a getToken, or a client of your own (`client`).
 */
export function InvigilProvider({ supabase, url, getToken, client, options, keepAliveMs = 0, children }) {
  const getTokenRef = useRef(getToken);
  getTokenRef.current = getToken;
  const optionsRef = useRef(options);
  optionsRef.current = options;
  // Made in render, but inert: nothing connects until a hook subscribes.
  const lazy = useMemo(() => new LazyClient(
    client ? () => client : (self) => connect({
      ...optionsRef.current,
      url,
      getToken: supabase ? supabaseGetToken(supabase, self)
        : (req) => (getTokenRef.current ? getTokenRef.current(req) : null),
    }),
    !client,
    keepAliveMs,
  ), [client, url, supabase, keepAliveMs]);

  useEffect(() => {
    lazy.hold();
    return () => lazy.release();
  }, [lazy]);

  // A new session (sign-in, refresh, sign-out) goes to the open socket.
  // Not from inside the callback: supabase-js holds a lock while it runs
  // the callbacks, and getSession() would wait for it.
  useEffect(() => {
    if (!supabase?.auth?.onAuthStateChange) return undefined;
    const { data } = supabase.auth.onAuthStateChange((event, session) => {
      const token = session?.access_token ?? null;
      if (event === 'INITIAL_SESSION' || lazy.lastToken === undefined || token === lazy.lastToken) return;
      setTimeout(() => lazy.reauth(), 0);
    });
    return () => data?.subscription?.unsubscribe();
  }, [supabase, lazy]);

  return createElement(Ctx.Provider, { value: lazy }, children);
}

function useLazy() {
  const lazy = useContext(Ctx);
  if (!lazy) throw new Error('invigil: wrap the app in <InvigilProvider>');
  return lazy;
}

/** The provider's client (connects on first call or subscription). */
export function useInvigil() {
  return useLazy();
}

// ------------------------------------------------------------------ queries and calls

/**
 * A query's state: {status: 'skipped'|'loading'|'ready'|'error', value,
 * error, change}. `args` equal by value keep the same subscription across
 * renders; "skip" subscribes to nothing.
 */
export function useQueryState(query, args) {
  const lazy = useLazy();
  const skip = args === 'skip';
  const key = skip ? null : query + '\u0000' + stableKey(args ?? {});
  // The arguments as first seen under this key (later equal ones are the same).
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const pinned = useMemo(() => (skip ? null : args ?? {}), [key]);
  const subscribe = useCallback((onChange) => {
    if (key === null) return () => {};
    return lazy.entry(key, query, pinned).listen(onChange);
  }, [lazy, key, query, pinned]);
  const getSnapshot = useCallback(
    () => (key === null ? SKIPPED : lazy.queries.get(key)?.snapshot ?? LOADING),
    [lazy, key],
  );
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * A query's current value: undefined while loading (and when skipped);
 * an error ending the subscription is thrown, for an error boundary (as
 * Convex's useQuery does). useQueryState returns it instead.
 */
export function useQuery(query, args) {
  const s = useQueryState(query, args);
  if (s.status === 'error') throw s.error;
  return s.value;
}

/** A stable function calling fn: (args) => Promise<result>. */
export function useCall(fn) {
  const lazy = useLazy();
  return useCallback((args) => lazy.call(fn, args), [lazy, fn]);
}

/** 'connecting' | 'online' | 'offline' */
export function useConnectionState() {
  const lazy = useLazy();
  const subscribe = useCallback((onChange) => {
    lazy.client();
    return lazy.onStateChange(onChange);
  }, [lazy]);
  return useSyncExternalStore(subscribe, () => lazy.state, () => 'connecting');
}

/** The signed-in user ({id, role, name}) once the socket is authenticated, else null. */
export function useInvigilUser() {
  const lazy = useLazy();
  const subscribe = useCallback((onChange) => {
    lazy.client();
    return lazy.onStateChange(onChange);
  }, [lazy]);
  return useSyncExternalStore(subscribe, () => lazy.user, () => null);
}

/** The quiz's live board (public: works signed out). `limit` 1 to 100, default 10. */
export function useLeaderboard(quizCode, { limit } = {}) {
  return useQuery('leaderboard.getLeaderboard',
    quizCode ? (limit ? { quiz_code: quizCode, limit } : { quiz_code: quizCode }) : 'skip');
}

// ------------------------------------------------------------------ proctoring

const HEARTBEAT_MS = 10_000;
const HEARTBEAT_MIN_GAP_MS = 5_100; // the server refuses heartbeats < 5 s apart
const FINAL_START = new Set(['forbidden', 'not_found', 'conflict', 'unauthenticated', 'invalid_argument']);

// One controller per (provider client, exam): shared by every component
// that proctors the exam, released a moment after the last one leaves.
const proctors = new WeakMap(); // LazyClient -> Map<examId, Proctor>

function disposeProctors(lazy) {
  const m = proctors.get(lazy);
  if (!m) return;
  for (const p of m.values()) p.dispose();
  m.clear();
}

function networkInfo() {
  const c = globalThis.navigator?.connection;
  if (!c) return undefined;
  const n = {};
  if (typeof c.rtt === 'number') n.rtt_ms = c.rtt;
  if (typeof c.downlink === 'number') n.downlink_mbps = c.downlink;
  if (typeof c.effectiveType === 'string') n.effective_type = c.effectiveType;
  return Object.keys(n).length ? n : undefined;
}

/**
 * The exam view's proctoring, as static/exam.js does it (WIRING 1-5 there):
 * start the session once, heartbeat every heartbeatMs (and as soon as the
 * server allows after an answer or a reconnect; never while offline),
 * report violations as they happen (queued until the session started;
 * each with a client_id, so a retry stores one), end on submit().
 */
class Proctor {
  constructor(lazy, examId, opts) {
    this.lazy = lazy;
    this.examId = examId;
    this.heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
    this.minGapMs = opts.minGapMs ?? HEARTBEAT_MIN_GAP_MS;
    this.progress = { current_question: opts.currentQuestion ?? 1, answered_count: opts.answeredCount ?? 0 };
    this.store = new Store({
      phase: 'starting', session: null, error: null, recorded: 0, serverTime: null,
    });
    this.holds = 0;
    this.disposeTimer = null;
    this.disposed = false;
    this.hbTimer = null;
    this.hbInFlight = false;
    this.lastHbAt = 0;
    this.pending = []; // violations seen before the session started
    this.lastReported = new Map(); // type -> ms, folds bursts
    this.timers = new Set();
    this.offState = lazy.onStateChange((s) => {
      if (s === 'online' && this.phase === 'active') this.heartbeatSoon();
    });
    this.offListeners = opts.listeners === false ? () => {} : this.listen();
    this.start(0);
  }

  get phase() { return this.store.get().phase; }

  later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); if (!this.disposed) fn(); }, Math.max(0, ms));
    this.timers.add(t);
    return t;
  }

  hold() {
    this.holds++;
    clearTimeout(this.disposeTimer);
    this.disposeTimer = null;
  }

  release() {
    if (--this.holds > 0) return;
    clearTimeout(this.disposeTimer);
    this.disposeTimer = setTimeout(() => {
      if (this.holds > 0) return;
      proctors.get(this.lazy)?.delete(this.examId);
      this.dispose();
    }, 0);
  }

  // Stops heartbeats and listeners. It does not end the session: leaving
  // the page is not submitting (the server shows the student disconnected).
  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    clearTimeout(this.hbTimer);
    clearTimeout(this.disposeTimer);
    this.offState();
    this.offListeners();
  }

  async start(attempt) {
    this.store.set({ phase: 'starting' });
    let session;
    try {
      session = await this.lazy.call('proctoring.startSession', { exam_id: this.examId });
    } catch (e) {
      if (this.disposed) return;
      // conflict is also the answer for a session already submitted
      // (another tab or device): that is finished, not failed.
      if (e.code === 'conflict' && /submitted/i.test(e.message || '')) { this.finish(null); return; }
      if (FINAL_START.has(e.code)) { this.fail(e); return; }
      const delay = e.code === 'rate_limited' ? (e.retryAfterMs ?? 2000) : Math.min(10_000, 1000 * 2 ** attempt);
      this.later(() => this.start(attempt + 1), delay);
      return;
    }
    if (this.disposed) return;
    if (session?.status === 'submitted') { this.finish(session); return; }
    this.store.set({ phase: 'active', session, error: null });
    for (const v of this.pending.splice(0)) this.sendViolation(v, 0);
    // startSession is no heartbeat: the first one can go at once.
    this.sendHeartbeat();
  }

  fail(error) {
    clearTimeout(this.hbTimer);
    this.pending.length = 0;
    this.store.set({ phase: 'error', error });
  }

  finish(session) {
    clearTimeout(this.hbTimer);
    this.pending.length = 0;
    this.store.set({ phase: 'submitted', session: session ?? this.store.get().session });
  }

  setProgress(currentQuestion, answeredCount) {
    const firstAnswer = answeredCount > this.progress.answered_count;
    this.progress = { current_question: currentQuestion, answered_count: answeredCount };
    // Let the tutor see progress promptly, within the server's rate limit.
    if (firstAnswer && this.phase === 'active' && !this.hbInFlight) this.heartbeatSoon();
  }

  scheduleHeartbeat(ms) {
    clearTimeout(this.hbTimer);
    this.hbTimer = this.disposed ? null : setTimeout(() => this.sendHeartbeat(), Math.max(0, ms));
  }

  heartbeatSoon() {
    this.scheduleHeartbeat(this.lastHbAt + this.minGapMs - Date.now());
  }

  async sendHeartbeat() {
    this.hbTimer = null;
    if (this.disposed || this.phase !== 'active' || this.hbInFlight) return;
    // Not while offline: the first one after reconnecting brings the student back.
    if (this.lazy.state !== 'online') { this.scheduleHeartbeat(this.heartbeatMs); return; }
    const args = { exam_id: this.examId, ...this.progress };
    const network = networkInfo();
    if (network) args.network = network;
    this.hbInFlight = true;
    this.lastHbAt = Date.now();
    try {
      const res = await this.lazy.call('proctoring.heartbeat', args);
      if (this.disposed) return;
      this.store.set({ serverTime: res.server_time });
      if (this.phase === 'active') this.scheduleHeartbeat(this.heartbeatMs);
    } catch (e) {
      if (this.disposed || this.phase !== 'active') return;
      if (e.code === 'rate_limited') this.scheduleHeartbeat(e.retryAfterMs ?? this.minGapMs);
      else if (e.code === 'conflict') this.finish(null);
      else if (e.code === 'forbidden' || e.code === 'not_found') this.fail(e);
      else this.scheduleHeartbeat(this.heartbeatMs);
    } finally {
      this.hbInFlight = false;
    }
  }

  report(type, detail) {
    const phase = this.phase;
    if (this.disposed || (phase !== 'starting' && phase !== 'active')) return;
    const now = Date.now();
    if (now - (this.lastReported.get(type) || 0) < 1000) return;
    this.lastReported.set(type, now);
    const args = { exam_id: this.examId, type, client_ts: new Date(now).toISOString(), client_id: randomId() };
    if (detail) args.detail = detail;
    this.store.set({ recorded: this.store.get().recorded + 1 });
    if (phase === 'starting') this.pending.push(args);
    else this.sendViolation(args, 0);
  }

  async sendViolation(args, tries) {
    try {
      await this.lazy.call('proctoring.logViolation', args);
    } catch (e) {
      // A call in flight when the socket dropped may not have arrived: the
      // same client_id again stores it once. Other errors are final.
      if (this.disposed || tries >= 5) return;
      if (e.code === 'disconnected' || e.code === 'internal') this.later(() => this.sendViolation(args, tries + 1), 500 * (tries + 1));
      else if (e.code === 'rate_limited') this.later(() => this.sendViolation(args, tries + 1), e.retryAfterMs ?? 1000);
      else console.warn('invigil: violation not recorded', e);
    }
  }

  async submit() {
    if (this.phase === 'submitted') return this.store.get().session;
    if (this.phase !== 'active') throw new InvigilError('conflict', `cannot submit while ${this.phase}`);
    clearTimeout(this.hbTimer);
    this.store.set({ phase: 'submitting', error: null });
    for (let tries = 0; ; tries++) {
      try {
        const session = await this.lazy.call('proctoring.endSession', { exam_id: this.examId });
        this.finish(session);
        return session;
      } catch (e) {
        // Dropped mid-call: again (ending a submitted session is harmless);
        // the call waits in the client's queue while offline.
        if (['disconnected', 'internal', 'rate_limited'].includes(e.code) && tries < 10 && !this.disposed) {
          await new Promise((r) => setTimeout(r, e.retryAfterMs ?? 1000));
          continue;
        }
        if (e.code === 'conflict') { this.finish(null); return this.store.get().session; }
        this.store.set({ phase: 'active', error: e });
        this.heartbeatSoon();
        throw e;
      }
    }
  }

  // The exam view's violation listeners (static/exam.js): content is never sent.
  listen() {
    const doc = globalThis.document;
    const win = globalThis.window;
    if (!doc || !win) return () => {};
    let lastHiddenAt = 0;
    let blurTimer = null;
    let wasFullscreen = !!doc.fullscreenElement;
    const onVisibility = () => {
      if (doc.visibilityState !== 'hidden') return;
      lastHiddenAt = Date.now();
      clearTimeout(blurTimer); // the blur that comes with it is the same event
      this.report('tab_hidden', 'the exam tab was hidden');
    };
    // Switching tabs fires blur and visibilitychange, in either order: wait and look.
    const onBlur = () => {
      clearTimeout(blurTimer);
      blurTimer = setTimeout(() => {
        if (doc.visibilityState === 'hidden' || Date.now() - lastHiddenAt < 1000) return;
        this.report('window_blur', 'the exam window lost focus');
      }, 200);
    };
    const onFullscreen = () => {
      if (doc.fullscreenElement) wasFullscreen = true;
      else if (wasFullscreen) {
        wasFullscreen = false;
        this.report('fullscreen_exit', 'left fullscreen');
      }
    };
    const onCopy = () => this.report('copy', `copied ${String(doc.getSelection?.() ?? '').length} characters`);
    const onPaste = (e) => this.report('paste', `pasted ${e.clipboardData?.getData('text')?.length ?? 0} characters`);
    const onContextMenu = () => this.report('context_menu', 'opened the context menu');
    const onOffline = () => this.report('network_offline', 'the browser went offline');
    // One abort removes every listener.
    const listening = new AbortController();
    const on = { signal: listening.signal };
    doc.addEventListener('visibilitychange', onVisibility, on);
    win.addEventListener('blur', onBlur, on);
    doc.addEventListener('fullscreenchange', onFullscreen, on);
    doc.addEventListener('copy', onCopy, on);
    doc.addEventListener('paste', onPaste, on);
    doc.addEventListener('contextmenu', onContextMenu, on);
    win.addEventListener('offline', onOffline, on);
    return () => {
      clearTimeout(blurTimer);
      listening.abort();
    };
  }
}

function acquireProctor(lazy, examId, opts) {
  let m = proctors.get(lazy);
  if (!m) proctors.set(lazy, (m = new Map()));
  let p = m.get(examId);
  if (!p || p.disposed) {
    p = new Proctor(lazy, examId, opts);
    m.set(examId, p);
  }
  p.hold();
  return p;
}

const PROCTOR_IDLE = Object.freeze({ phase: 'idle', session: null, error: null, recorded: 0, serverTime: null });

/**
 * Proctor the student's own session of examId (null/undefined: nothing).
 * Returns {phase, session, error, recorded, serverTime, report(type, detail?),
 * submit()}; phase: idle → starting → active → submitting → submitted, or
 * error (final: forbidden, not_found, …). Pass the student's progress each
 * render ({currentQuestion, answeredCount}); it rides on the heartbeats.
 * Unmounting stops heartbeats and listeners; it does not submit.
 */
export function useProctoring(examId, options = {}) {
  const lazy = useLazy();
  const optsRef = useRef(options);
  optsRef.current = options;
  const subscribe = useCallback((onChange) => {
    if (!examId) return () => {};
    const p = acquireProctor(lazy, examId, optsRef.current);
    const off = p.store.listen(onChange);
    return () => { off(); p.release(); };
  }, [lazy, examId]);
  const getSnapshot = useCallback(() => {
    const p = examId ? proctors.get(lazy)?.get(examId) : null;
    return p && !p.disposed ? p.store.get() : PROCTOR_IDLE;
  }, [lazy, examId]);
  const snap = useSyncExternalStore(subscribe, getSnapshot, getSnapshot);

  const { currentQuestion, answeredCount } = options;
  useEffect(() => {
    const p = examId ? proctors.get(lazy)?.get(examId) : null;
    if (p && currentQuestion != null && answeredCount != null) p.setProgress(currentQuestion, answeredCount);
  }, [lazy, examId, currentQuestion, answeredCount]);

  const current = () => (examId ? proctors.get(lazy)?.get(examId) : null);
  const reportViolation = useCallback((type, detail) => current()?.report(type, detail), [lazy, examId]);
  const submit = useCallback(async () => {
    const p = current();
    if (!p) throw new InvigilError('conflict', 'no exam is being proctored');
    return p.submit();
  }, [lazy, examId]);
  return useMemo(() => ({ ...snap, report: reportViolation, submit }), [snap, reportViolation, submit]);
}

// ------------------------------------------------------------------ chat

/** The chats the user may see (chat.listSessions), newest activity first. */
export function useChatSessions(args = {}) {
  return useQuery('chat.listSessions', args);
}

const TYPING_REFRESH_MS = 2_500; // the server clears a typing flag after 6 s
const SEND_RETRIES = 5;

/**
 * One chat: its messages with the user's own unconfirmed ones at the end
 * (optimistic: shown at once with `pending: true`, replaced by the
 * server's copy when the subscription brings it, so each shows once), and
 * the actions. A send whose answer was lost is sent again under the same
 * client_msg_id (the server stores it once); one refused stays with
 * `error` until retry(id) or discard(id).
 */
export function useChat(sessionId, { limit } = {}) {
  const lazy = useLazy();
  const me = useInvigilUser();
  const list = useQueryState('chat.getMessages',
    sessionId ? (limit ? { session_id: sessionId, limit } : { session_id: sessionId }) : 'skip');
  const people = useQueryState('presence.listPresence', sessionId ? { scope: 'chat:' + sessionId } : 'skip');
  const [outbox] = useState(() => new Store({ items: [] }));
  const { items } = useSyncExternalStore(
    useCallback((fn) => outbox.listen(fn), [outbox]), () => outbox.get(), () => outbox.get());
  const typingRef = useRef({ on: false, at: 0 });

  const server = list.value;
  const messages = useMemo(() => {
    if (server === undefined) return undefined;
    const mine = items.filter((m) => m.session_id === sessionId);
    if (!mine.length) return server;
    const stored = new Set(server.map((m) => m.client_msg_id));
    const waiting = mine.filter((m) => !stored.has(m.client_msg_id));
    return waiting.length ? server.concat(waiting) : server;
  }, [server, items, sessionId]);

  // Confirmed sends leave the outbox once the list shows them.
  useEffect(() => {
    if (!server || !outbox.get().items.length) return;
    const stored = new Set(server.map((m) => m.client_msg_id));
    const left = outbox.get().items.filter((m) => !stored.has(m.client_msg_id));
    if (left.length !== outbox.get().items.length) outbox.set({ items: left });
  }, [server, outbox]);

  const update = useCallback((cid, patch) => {
    outbox.set({ items: outbox.get().items.map((m) => (m.client_msg_id === cid ? { ...m, ...patch } : m)) });
  }, [outbox]);

  const deliver = useCallback(async (item) => {
    const args = { session_id: item.session_id, body: item.body, client_msg_id: item.client_msg_id };
    if (item.attachments.length) args.attachments = item.attachments;
    for (let tries = 0; ; tries++) {
      try {
        const m = await lazy.call('chat.sendMessage', args);
        update(item.client_msg_id, { sent: true });
        return m;
      } catch (e) {
        const again = tries < SEND_RETRIES && (e.code === 'disconnected' || e.code === 'internal' || e.code === 'rate_limited');
        if (!again) {
          update(item.client_msg_id, { error: e });
          throw e;
        }
        await new Promise((r) => setTimeout(r, e.retryAfterMs ?? 500 * (tries + 1)));
      }
    }
  }, [lazy, update]);

  const send = useCallback((body, { attachments } = {}) => {
    if (!sessionId) return Promise.reject(new InvigilError('invalid_argument', 'no chat'));
    const user = lazy.user;
    const cid = randomId();
    const item = {
      _id: 'pending:' + cid, session_id: sessionId, client_msg_id: cid,
      sender_id: user?.id ?? '', sender_name: user?.name ?? '', sender_role: user?.role ?? 'student',
      body, attachments: attachments ?? [], created_at: new Date().toISOString(), read_by: [], seq: 0,
      pending: true,
    };
    outbox.set({ items: [...outbox.get().items, item] });
    typingRef.current.on = false; // the server clears the sender's typing flag
    return deliver(item);
  }, [lazy, sessionId, outbox, deliver]);

  const retry = useCallback((cid) => {
    const item = outbox.get().items.find((m) => m.client_msg_id === cid);
    if (!item) return Promise.reject(new InvigilError('not_found', 'no such unsent message'));
    update(cid, { error: undefined });
    return deliver(item);
  }, [outbox, update, deliver]);

  const discard = useCallback((cid) => {
    outbox.set({ items: outbox.get().items.filter((m) => m.client_msg_id !== cid || !m.error) });
  }, [outbox]);

  // Read up to a message (default: the newest), unless the server has it so.
  const markRead = useCallback(async (upToMessageId) => {
    const rows = list.value;
    const target = upToMessageId ?? rows?.[rows.length - 1]?._id;
    if (!sessionId || !target) return null;
    const row = rows?.find((m) => m._id === target);
    const id = lazy.user?.id;
    if (row && id && (row.sender_id === id || row.read_by.includes(id))) return null;
    return lazy.call('chat.markRead', { session_id: sessionId, up_to_message_id: target });
  }, [lazy, sessionId, list.value]);

  // true while the user types (sent at most every 2.5 s), false when they stop.
  const setTyping = useCallback((typing) => {
    if (!sessionId) return;
    const t = typingRef.current;
    const now = Date.now();
    if (typing) {
      if (t.on && now - t.at < TYPING_REFRESH_MS) return;
      t.on = true;
      t.at = now;
    } else {
      if (!t.on) return;
      t.on = false;
    }
    lazy.call('chat.setTyping', { session_id: sessionId, typing }).catch(() => { t.on = false; });
  }, [lazy, sessionId]);

  const typing = useMemo(
    () => (people.value ?? []).filter((p) => p.is_typing && p.user_id !== me?.id),
    [people.value, me?.id],
  );

  return {
    messages, status: list.status, error: list.error, presence: people.value, typing,
    send, retry, discard, markRead, setTyping,
  };
}

// ------------------------------------------------------------------ presence

/**
 * Be present in scope ("global", "exam:<id>", "chat:<id>") and see who is:
 * the rows of presence.listPresence, undefined while loading. Presence
 * belongs to the socket: entered now and again after every reconnect; a
 * new scope moves it (presence.setScope); the scope is left when the
 * socket closes (the contract has no "leave" of its own).
 */
export function usePresence(scope, { displayName } = {}) {
  const lazy = useLazy();
  const state = useQueryState('presence.listPresence', scope ? { scope } : 'skip');
  const entered = useRef(null); // the scope this hook entered on the current socket
  useEffect(() => {
    if (!scope) return undefined;
    const args = displayName ? { scope, display_name: displayName } : { scope };
    const enter = (fn) => {
      entered.current = scope;
      lazy.call(fn, args).catch((e) => {
        if (e.code !== 'disconnected' && e.code !== 'closed') console.warn(`invigil: presence in ${scope}:`, e);
      });
    };
    lazy.client();
    if (lazy.state === 'online') enter(entered.current && entered.current !== scope ? 'presence.setScope' : 'presence.touchPresence');
    // A new socket carries no presence: enter again.
    const off = lazy.onStateChange((s) => { if (s === 'online') enter('presence.touchPresence'); });
    return off;
  }, [lazy, scope, displayName]);
  if (state.status === 'error') throw state.error;
  return state.value;
}
