// Student exam view (/exam/{exam_id}) — a small demo exam wired to invigil's
// proctoring functions. It doubles as the reference for wiring the platform's
// real exam view (frontend/src/pages/ExamView.tsx); the WIRING notes below say
// what to copy.
//
// WIRING, in order:
//   1. One client per page: connect({ getToken }) (getToken = Supabase
//      session access_token). Show client state somewhere (#conn here).
//   2. On load: call proctoring.startSession {exam_id}. forbidden / not_found /
//      conflict are final (show them, do not retry); 'disconnected' / internal
//      are retried. Reloading or opening a second tab returns the same session.
//   3. Every 10 s, and when the socket comes back online: proctoring.heartbeat
//      {exam_id, current_question, answered_count, network?}. Heartbeats are
//      NOT sent while offline (a pile of stale ones is useless); the first one
//      after reconnecting marks the student active again. rate_limited means
//      "too soon": wait retry_after_ms. conflict means the session is over.
//      current_question is 1-based here (the number the student sees).
//   4. Violations: proctoring.logViolation {exam_id, type, detail, client_ts}
//      as soon as they happen. Calls made while offline are queued by
//      invigil.js and sent after reconnecting, so client_ts (taken at the
//      event) can be well before the server's created_at — the tutor sees both.
//   5. Submit: proctoring.endSession {exam_id}; then stop heartbeats and stop
//      reporting (exiting fullscreen after submitting is not a violation).
//
// Stable hooks for tests: #question (data-index, 0-based), #next, #prev,
// #submit, #status (data-state: starting|active|submitting|submitted|error),
// #conn, #answered (a number), #fullscreen, #done, #message, #violation-count.

import { connect } from '/static/invigil.js';
import {
  pageGetToken, examIdFromLocation, connIndicator, renderWho, tokenIdentity,
  h, setText, errorText, signInHref, storedToken, storedDemoUser,
} from '/static/common.js';
import { mountChatWidget } from '/static/chatwidget.js';

// ------------------------------------------------------------------ the demo exam

const QUESTIONS = [
  { text: 'Which planet is known as the Red Planet?', options: ['Venus', 'Mars', 'Jupiter', 'Mercury'] },
  { text: 'What is 7 × 8?', options: ['54', '56', '63', '64'] },
  { text: 'Which gas do plants take in for photosynthesis?', options: ['Oxygen', 'Nitrogen', 'Carbon dioxide', 'Helium'] },
  { text: 'Which is the largest ocean on Earth?', options: ['Atlantic', 'Indian', 'Arctic', 'Pacific'] },
  { text: 'How many sides does a hexagon have?', options: ['5', '6', '7', '8'] },
];

const HEARTBEAT_MS = 10_000;
const HEARTBEAT_MIN_GAP_MS = 5_100; // the server refuses heartbeats < 5 s apart

const examId = examIdFromLocation();
const $ = (id) => document.getElementById(id);
const els = {
  status: $('status'), question: $('question'), prev: $('prev'), next: $('next'), submit: $('submit'),
  answered: $('answered'), total: $('total'), progress: $('progress'), dots: $('dots'),
  body: $('exam-body'), done: $('done'), doneText: $('done-text'), message: $('message'),
  fullscreen: $('fullscreen'), vcount: $('violation-count'), who: $('who'),
};

setText($('exam-id'), examId);
document.title = `Exam · ${examId} · invigil`;
renderWho(els.who, tokenIdentity());

// Answers survive a reload (kept per exam and user on this device).
const storeKey = `invigil.exam.${examId}.${tokenIdentity()?.id || 'anon'}`;
let saved = {};
try { saved = JSON.parse(localStorage.getItem(storeKey) || '{}') || {}; } catch { saved = {}; }
const answers = saved.answers && typeof saved.answers === 'object' ? saved.answers : {};
let current = Number.isInteger(saved.current) && saved.current >= 0 && saved.current < QUESTIONS.length ? saved.current : 0;

function persist(extra = {}) {
  try {
    localStorage.setItem(storeKey, JSON.stringify({ answers, current, submitted: !!saved.submitted, ...extra }));
  } catch { /* ignore */ }
}

// ------------------------------------------------------------------ phase / status

// starting -> active -> submitting -> submitted; or error (final)
let phase = 'starting';

function setStatus(state, text) {
  els.status.dataset.state = state;
  setText(els.status, text);
}

// ------------------------------------------------------------------ connection (WIRING 1)

const indicator = connIndicator($('conn'), $('banner'));
const client = connect({
  getToken: pageGetToken,
  onState(state) {
    indicator(state);
    if (state === 'online') {
      renderWho(els.who, client.user || tokenIdentity());
      // Back online: tell the server we are here (WIRING 3).
      if (phase === 'active') heartbeatSoon();
    }
    if (phase === 'submitting') {
      setStatus('submitting', state === 'online' ? 'Submitting…' : 'Submitting… (waiting for the connection)');
    }
  },
});

// ------------------------------------------------------------------ session start (WIRING 2)

const FINAL_START_ERRORS = {
  forbidden: 'You are not registered for this exam.',
  not_found: `There is no exam "${examId}".`,
  conflict: 'This exam cannot be started right now.',
  unauthenticated: 'Sign in to take this exam.',
  invalid_argument: 'This exam link is not valid.',
};

async function startSession(attempt = 0) {
  setStatus('starting', attempt ? 'Starting session… (retrying)' : 'Starting session…');
  let session;
  try {
    session = await client.call('proctoring.startSession', { exam_id: examId });
  } catch (e) {
    // conflict is also the answer for a session already submitted (from
    // another tab or device): show it as finished, not as a closed exam.
    if (e.code === 'conflict' && /submitted/i.test(e.message || '')) { finish('You already submitted this exam.'); return; }
    if (e.code in FINAL_START_ERRORS) { fail(e); return; }
    const delay = e.code === 'rate_limited' ? (e.retryAfterMs ?? 2000) : Math.min(10_000, 1000 * 2 ** attempt);
    setTimeout(() => startSession(attempt + 1), delay);
    return;
  }
  if (session?.status === 'submitted') { finish('This exam was already submitted.'); return; }
  phase = 'active';
  setStatus('active', 'In progress');
  mountRoomChat();
  renderNav();
  flushPendingViolations();
  // startSession counts as a heartbeat on the server (a sooner one would be
  // refused as rate_limited), so the first one goes out a little later.
  lastHbAt = Date.now();
  heartbeatSoon();
}

function fail(err) {
  phase = 'error';
  stopHeartbeat();
  pendingViolations.length = 0;
  const text = errorText(err, FINAL_START_ERRORS);
  setStatus('error', `${FINAL_START_ERRORS[err.code] || 'Cannot start the exam'} (${err.code})`);
  els.message.replaceChildren(
    h('strong', null, 'You cannot take this exam.'), ' ', h('span', { id: 'message-text' }, text),
  );
  if (err.code === 'unauthenticated' || err.code === 'forbidden') {
    els.message.append(h('a', { class: 'button', href: signInHref() },
      err.code === 'unauthenticated' ? 'Sign in' : 'Sign in as someone else'));
  }
  els.message.dataset.code = err.code;
  els.message.hidden = false;
  els.body.hidden = true;
  els.fullscreen.hidden = true;
}

// ------------------------------------------------------------------ heartbeat (WIRING 3)

let hbTimer = null;
let hbInFlight = false;
let lastHbAt = 0;

function networkInfo() {
  const c = navigator.connection;
  if (!c) return undefined;
  const n = {};
  if (typeof c.rtt === 'number') n.rtt_ms = c.rtt;
  if (typeof c.downlink === 'number') n.downlink_mbps = c.downlink;
  if (typeof c.effectiveType === 'string') n.effective_type = c.effectiveType;
  return Object.keys(n).length ? n : undefined;
}

function answeredCount() {
  return QUESTIONS.reduce((n, _, i) => n + (Number.isInteger(answers[i]) ? 1 : 0), 0);
}

function scheduleHeartbeat(ms) {
  clearTimeout(hbTimer);
  hbTimer = setTimeout(sendHeartbeat, Math.max(0, ms));
}

// As soon as the server will take one.
function heartbeatSoon() {
  scheduleHeartbeat(lastHbAt + HEARTBEAT_MIN_GAP_MS - Date.now());
}

function stopHeartbeat() {
  clearTimeout(hbTimer);
  hbTimer = null;
}

async function sendHeartbeat() {
  hbTimer = null;
  if (phase !== 'active' || hbInFlight) return;
  if (client.state !== 'online') { scheduleHeartbeat(HEARTBEAT_MS); return; } // onState resumes us
  const args = {
    exam_id: examId,
    current_question: current + 1,
    answered_count: answeredCount(),
  };
  const network = networkInfo();
  if (network) args.network = network;
  hbInFlight = true;
  lastHbAt = Date.now();
  try {
    await client.call('proctoring.heartbeat', args);
    if (phase === 'active') scheduleHeartbeat(HEARTBEAT_MS);
  } catch (e) {
    if (phase !== 'active') return;
    if (e.code === 'rate_limited') scheduleHeartbeat(e.retryAfterMs ?? HEARTBEAT_MIN_GAP_MS);
    else if (e.code === 'conflict') finish('Your exam session has ended.');
    else if (e.code === 'forbidden' || e.code === 'not_found') fail(e);
    else scheduleHeartbeat(HEARTBEAT_MS);
  } finally {
    hbInFlight = false;
  }
}

// ------------------------------------------------------------------ violations (WIRING 4)

const pendingViolations = []; // detected before the session started
const lastReported = new Map(); // type -> ms, to fold bursts (e.g. repeated copy)
let recorded = 0;

function reporting() {
  return phase === 'starting' || phase === 'active';
}

function reportViolation(type, detail) {
  if (!reporting()) return;
  const now = Date.now();
  if (now - (lastReported.get(type) || 0) < 1000) return;
  lastReported.set(type, now);
  const args = { exam_id: examId, type, client_ts: new Date(now).toISOString() };
  if (detail) args.detail = detail;
  recorded += 1;
  setText(els.vcount, recorded);
  if (phase === 'starting') pendingViolations.push(args);
  else sendViolation(args);
}

function flushPendingViolations() {
  for (const v of pendingViolations.splice(0)) sendViolation(v);
}

async function sendViolation(args, tries = 0) {
  try {
    await client.call('proctoring.logViolation', args);
  } catch (e) {
    // A call in flight when the socket dropped may not have arrived: send it
    // again (queued by invigil.js while offline). Other errors are final.
    if (tries >= 5) return;
    if (e.code === 'disconnected' || e.code === 'internal') {
      setTimeout(() => sendViolation(args, tries + 1), 500 * (tries + 1));
    } else if (e.code === 'rate_limited') {
      setTimeout(() => sendViolation(args, tries + 1), e.retryAfterMs ?? 1000);
    } else {
      console.warn('invigil: violation not recorded', e);
    }
  }
}

// Tab hidden.
let lastHiddenAt = 0;
let blurTimer = null;
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') {
    lastHiddenAt = Date.now();
    clearTimeout(blurTimer); // the blur that comes with it is the same event
    reportViolation('tab_hidden', 'the exam tab was hidden');
  }
});

// Window blur — but not when the tab is being hidden at the same moment
// (switching tabs fires both, in either order): wait a moment and look.
window.addEventListener('blur', () => {
  clearTimeout(blurTimer);
  blurTimer = setTimeout(() => {
    if (document.visibilityState === 'hidden' || Date.now() - lastHiddenAt < 1000) return;
    reportViolation('window_blur', 'the exam window lost focus');
  }, 200);
});

// Fullscreen exit (only after the student entered it).
let wasFullscreen = false;
function syncFullscreenButton() {
  els.fullscreen.hidden = !document.fullscreenEnabled || !!document.fullscreenElement || !reporting();
}
document.addEventListener('fullscreenchange', () => {
  if (document.fullscreenElement) {
    wasFullscreen = true;
  } else if (wasFullscreen) {
    wasFullscreen = false;
    reportViolation('fullscreen_exit', 'left fullscreen');
  }
  syncFullscreenButton();
});
els.fullscreen.addEventListener('click', async () => {
  try { await document.documentElement.requestFullscreen(); } catch { /* refused */ }
});
syncFullscreenButton();

// Copy / paste / context menu (reported, not blocked; call preventDefault()
// here if the exam's policy is to block them). Content is never sent.
document.addEventListener('copy', () => {
  const n = String(document.getSelection?.() ?? '').length;
  reportViolation('copy', `copied ${n} characters`);
});
document.addEventListener('paste', (e) => {
  const n = e.clipboardData?.getData('text')?.length ?? 0;
  reportViolation('paste', `pasted ${n} characters`);
});
document.addEventListener('contextmenu', () => reportViolation('context_menu', 'opened the context menu'));

// Offline: reported at once; invigil.js drops the socket on the browser's
// offline event, so the call is queued and delivered after reconnecting.
window.addEventListener('offline', () => reportViolation('network_offline', 'the browser went offline'));

// ------------------------------------------------------------------ the questions

function renderQuestion() {
  const q = QUESTIONS[current];
  els.question.dataset.index = String(current);
  els.question.replaceChildren(
    h('div', { class: 'qnum' }, `Question ${current + 1} of ${QUESTIONS.length}`),
    h('h2', { id: 'question-text' }, q.text),
    h('div', { class: 'options', role: 'radiogroup', 'aria-labelledby': 'question-text' },
      q.options.map((opt, j) => {
        const input = h('input', { type: 'radio', name: `q${current}`, value: String(j) });
        input.checked = answers[current] === j;
        input.disabled = !reporting();
        input.addEventListener('change', () => choose(j));
        return h('label', { class: answers[current] === j ? 'option chosen' : 'option' }, input, h('span', null, opt));
      })),
  );
  renderNav();
}

function renderNav() {
  const n = answeredCount();
  setText(els.answered, n);
  setText(els.total, QUESTIONS.length);
  els.progress.style.width = `${(100 * n) / QUESTIONS.length}%`;
  els.prev.disabled = current === 0;
  els.next.disabled = current === QUESTIONS.length - 1;
  els.submit.disabled = phase !== 'active';
  els.dots.replaceChildren(...QUESTIONS.map((_, i) => h('button', {
    type: 'button',
    class: [Number.isInteger(answers[i]) ? 'answered' : '', i === current ? 'current' : ''].join(' ').trim() || null,
    'aria-label': `Question ${i + 1}${Number.isInteger(answers[i]) ? ' (answered)' : ''}`,
    onclick: () => go(i),
  }, String(i + 1))));
}

function go(i) {
  if (i < 0 || i >= QUESTIONS.length || i === current) return;
  current = i;
  persist();
  renderQuestion();
}

function choose(j) {
  const firstAnswer = !Number.isInteger(answers[current]);
  answers[current] = j;
  persist();
  renderQuestion();
  // Let the tutor see progress promptly, within the server's rate limit.
  if (firstAnswer && phase === 'active' && !hbInFlight) heartbeatSoon();
}

els.prev.addEventListener('click', () => go(current - 1));
els.next.addEventListener('click', () => go(current + 1));

// ------------------------------------------------------------------ submit (WIRING 5)

async function submit() {
  if (phase !== 'active') return;
  phase = 'submitting';
  stopHeartbeat();
  els.submit.disabled = true;
  setStatus('submitting', client.state === 'online' ? 'Submitting…' : 'Submitting… (waiting for the connection)');
  for (let tries = 0; ; tries++) {
    try {
      await client.call('proctoring.endSession', { exam_id: examId });
      finish();
      return;
    } catch (e) {
      // Dropped mid-call: try again (endSession on a submitted session is
      // harmless); the call waits in the queue while offline.
      if ((e.code === 'disconnected' || e.code === 'internal' || e.code === 'rate_limited') && tries < 10) {
        await new Promise((r) => setTimeout(r, e.retryAfterMs ?? 1000));
        continue;
      }
      phase = 'active';
      setStatus('error', `Not submitted: ${errorText(e)}`);
      renderNav();
      heartbeatSoon();
      return;
    }
  }
}
els.submit.addEventListener('click', submit);

function finish(text) {
  phase = 'submitted';
  stopHeartbeat();
  pendingViolations.length = 0;
  saved.submitted = true;
  persist();
  setStatus('submitted', 'Submitted');
  if (text) setText(els.doneText, text);
  els.body.hidden = true;
  els.done.hidden = false;
  els.fullscreen.hidden = true;
  if (document.fullscreenElement) document.exitFullscreen?.().catch(() => {});
}

// Demo convenience: forget the local "submitted" flag and answers.
$('reset').addEventListener('click', () => {
  try { localStorage.removeItem(storeKey); } catch { /* ignore */ }
  location.reload();
});

// ------------------------------------------------------------------ questions to the tutor (chat, issue 8)

// The exam room: the student asks, the exam's tutors answer (chatwidget.js).
let roomChat = null;
function mountRoomChat() {
  if (roomChat || !client.user) return;
  roomChat = mountChatWidget({ client, me: client.user, scope: 'exam', examId, title: 'Ask your tutor' });
}

// ------------------------------------------------------------------ go

renderQuestion();
if (!storedToken() && !storedDemoUser()) {
  // No credentials at all: say so instead of opening a socket that can only fail.
  client.close();
  setText($('conn'), 'Not signed in');
  fail({ code: 'unauthenticated', message: '' });
} else if (saved.submitted) {
  // Submitted earlier on this device: do not re-open the session by reloading.
  finish();
} else {
  startSession();
}
