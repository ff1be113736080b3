// Tutor's live proctoring grid for one exam (/proctor/{exam_id}).
//
// Subscriptions:
//   proctoring.getExamSessions {exam_id}            -> the grid and counters
//   proctoring.getViolations   {exam_id, limit:50}  -> the live stream
//   proctoring.getSession      {exam_id, student_id} -> the side panel (while open)
//
// Built for 1,000 students on a laptop at a small cost to the tab:
// - Updates are incremental. invigil.js says what changed (onData's second
//   argument); a delta touches only its students: counters are adjusted, not
//   recounted, and the next render rewrites only the items on screen whose row
//   changed or that moved. Renders are RENDER_GAP_MS apart at least (half
//   a second above AUTO_COMPACT students), and the once-a-second ageing of
//   texts ("5 s ago") joins the next render, so the tab draws a few frames
//   a second however fast data comes.
// - The grid is virtual. #grid is a scroll viewport of fixed height holding a
//   spacer as tall as the whole list; only the items in view, plus MARGIN_PX
//   above and below, are in the DOM, absolutely positioned, each with CSS
//   containment so a change inside one never lays out the others. Items in
//   the margin are brought up to date as they scroll into view.
// - Two layouts: cards, and compact (one dense row per student). Compact is
//   chosen by itself above AUTO_COMPACT students until the tutor picks one.
// - "Needs attention first" (the default sort): disconnected, then unseen
//   violations (a student's violations count as seen once the tutor opens
//   the student, or presses "Mark all seen"; kept per exam in localStorage),
//   then silent (active but no heartbeat for more than SILENT_S seconds);
//   everyone else by name, submitted students last.
//
// Stable hooks for tests: #grid (data-mode cards|compact, data-total = rows in
// the current filter and sort), .card[data-student-id] (classes active /
// disconnected / submitted; data-index = position in that order;
// data-attention = "disconnected new silent" subsets), .card .name,
// .card .status (text = status), .card .violations (text = count),
// .card .last-violation, .card .heartbeat, #stream li, #conn, #filter-all /
// #filter-attention / #filter-disconnected / #filter-violations, #sort,
// #mode-cards / #mode-compact, #ack-all, #detail, #detail-close, #alert,
// #message, #count-active / #count-disconnected / #count-submitted /
// #count-violations. Only the cards in view exist: scroll #grid to reach others.

import { connect } from '/static/invigil.js';
import {
  pageGetToken, examIdFromLocation, connIndicator, renderWho, tokenIdentity,
  h, setText, errorText, fmtClock, fmtAgo, parseTime, signInHref,
  storedToken, storedDemoUser,
} from '/static/common.js';
import { mountTutorChat } from '/static/proctorchat.js';

const AUTO_COMPACT = 60;     // students above which the compact layout is chosen
const SILENT_S = 20;         // no heartbeat for longer than this: silent
// Renders are at least this far apart: small exams feel instant, large ones
// (where ~100 rows change a second) draw at most twice a second.
const RENDER_GAP_MS = 100;
const RENDER_GAP_LARGE_MS = 500;
const MARGIN_PX = 300;       // items kept in the DOM beyond the visible window
const POOL_MAX = 64;         // detached items kept for reuse

const examId = examIdFromLocation();
const $ = (id) => document.getElementById(id);

const els = {
  grid: $('grid'), gridHead: $('grid-head'), empty: $('empty'), stream: $('stream'), message: $('message'),
  alert: $('alert'), alertText: $('alert-text'), alertDismiss: $('alert-dismiss'),
  detail: $('detail'), detailName: $('detail-name'), detailStatus: $('detail-status'),
  detailBody: $('detail-body'), detailClose: $('detail-close'), who: $('who'), sort: $('sort'),
  ackAll: $('ack-all'),
};

setText($('exam-id'), examId);
const baseTitle = `Proctoring · ${examId} · invigil`;
document.title = baseTitle;
renderWho(els.who, tokenIdentity());

const streamEmpty = h('p', { id: 'stream-empty', class: 'muted', style: 'padding: .75rem 1rem; margin: 0' }, 'Waiting for data…');
els.stream.after(streamEmpty);

// ------------------------------------------------------------------ state

// One entry per student in the exam.
//   row   the session row as received (same object while unchanged)
//   hb    last_heartbeat in ms (NaN when none)
//   rank  position by name among all students (ties of the sorts)
//   attn  ATTN_* bits; ver bumps whenever attn changes (so items redraw)
const ATTN_SILENT = 1;
const ATTN_NEW = 2;
const ATTN_DISCONNECTED = 4;

const entries = new Map();        // student_id -> entry
const idToStudent = new Map();    // session _id -> student_id
let sessionsLoaded = false;
const counts = { active: 0, disconnected: 0, submitted: 0, violations: 0, withViolations: 0, attention: 0 };

let ordered = [];                 // entries in the current filter and sort
let orderDirty = true;
let ranksDirty = true;
let countsDirty = true;

let violations = [];
let violationsLoaded = false;
let seenViolations = new Set();
let lastViolationOf = new Map();  // student_id -> newest violation in the stream

let filter = 'all';
let sortBy = 'attention';
let unsubs = [];

let detailFor = null;             // student_id shown in the side panel
let detailUnsub = null;
let detailHeartbeat = null;       // {el, ts} ticking in the panel

// ------------------------------------------------------------------ acknowledged violations

const ACK_KEY = `invigil.ack.${examId}`;
const acks = new Map();           // student_id -> violation_count the tutor has seen
try {
  for (const [k, v] of Object.entries(JSON.parse(localStorage.getItem(ACK_KEY) || '{}') || {})) {
    if (typeof v === 'number') acks.set(k, v);
  }
} catch { /* none stored */ }
let ackSaveTimer = null;

function saveAcks() {
  clearTimeout(ackSaveTimer);
  ackSaveTimer = setTimeout(() => {
    try { localStorage.setItem(ACK_KEY, JSON.stringify(Object.fromEntries(acks))); } catch { /* full or private */ }
  }, 500);
}

function ackStudent(sid) {
  const e = entries.get(sid);
  if (!e) return;
  const n = e.row.violation_count || 0;
  if ((acks.get(sid) ?? 0) === n) return;
  acks.set(sid, n);
  if (updateAttention(e, Date.now())) scheduleRender();
  saveAcks();
}

function ackAll() {
  const now = Date.now();
  let changed = false;
  for (const [sid, e] of entries) {
    acks.set(sid, e.row.violation_count || 0);
    changed = updateAttention(e, now) || changed;
  }
  saveAcks();
  if (changed) scheduleRender();
}

// ------------------------------------------------------------------ connection

const indicator = connIndicator($('conn'), $('banner'));
const client = connect({
  getToken: pageGetToken,
  onState(state) {
    indicator(state);
    if (state === 'online') renderWho(els.who, client.user || tokenIdentity());
  },
});

function startSubs() {
  stopSubs();
  hideMessage();
  const args = { exam_id: examId };
  unsubs = [
    client.subscribe('proctoring.getExamSessions', args, onSessions, subFailed),
    client.subscribe('proctoring.getViolations', { ...args, limit: 50 }, onViolations, subFailed),
  ];
}

function stopSubs() {
  for (const u of unsubs) u();
  unsubs = [];
}

function subFailed(err) {
  stopSubs();
  showMessage(err);
  if (!sessionsLoaded) els.empty.hidden = true;
  if (!violationsLoaded) setText(streamEmpty, 'Not available.');
}

// ------------------------------------------------------------------ messages

function showMessage(err) {
  const who = client.user || tokenIdentity();
  const specific = {
    unauthenticated: 'Sign in as one of this exam\'s tutors (or an admin) to watch it.',
    forbidden: `Only this exam's tutors and admins can watch it${who ? ` — you are signed in as ${who.name} (${who.role})` : ''}.`,
    not_found: `There is no exam "${examId}".`,
  };
  els.message.replaceChildren(
    h('strong', null, err.code === 'not_found' ? 'Exam not found.' : err.code === 'forbidden' ? 'No access.' : 'Cannot show this exam.'),
    ' ',
    h('span', { id: 'message-text' }, errorText(err, specific)),
    ' ',
    (err.code === 'unauthenticated' || err.code === 'forbidden')
      ? h('a', { class: 'button', href: signInHref() }, err.code === 'forbidden' ? 'Sign in as someone else' : 'Sign in') : '',
    h('button', { type: 'button', onclick: () => startSubs() }, 'Retry'),
  );
  els.message.dataset.code = err.code || '';
  els.message.hidden = false;
}

function hideMessage() {
  if (els.message.hidden) return; // called on every update: touch nothing
  els.message.hidden = true;
  els.message.replaceChildren();
}

// Set el.hidden only when it changes (each write restyles the page).
function show(el, visible) {
  if (el.hidden === visible) el.hidden = !visible;
}

// ------------------------------------------------------------------ alerts

let unseen = 0;

function raiseAlert(text, studentIds) {
  unseen += 1;
  document.title = `(${unseen}) ${baseTitle}`;
  setText(els.alertText, unseen > 1 ? `${text} — ${unseen} new alerts` : text);
  els.alert.hidden = false;
  for (const sid of studentIds) flash(sid);
}

// Two classes with the same animation under two names: switching restarts
// it without forcing a layout (as reading offsetWidth between would).
function flash(studentId) {
  const item = rendered.get(studentId);
  if (!item) return;
  const again = item.el.classList.contains('flash');
  item.el.classList.toggle('flash', !again);
  item.el.classList.toggle('flash-again', again);
}

function clearTitle() {
  unseen = 0;
  document.title = baseTitle;
}

function acknowledge() {
  clearTitle();
  els.alert.hidden = true;
}

window.addEventListener('focus', clearTitle);
document.addEventListener('pointerdown', acknowledge, true);
document.addEventListener('keydown', (e) => { if (!e.repeat) acknowledge(); }, true);
els.alertDismiss.addEventListener('click', acknowledge);

// ------------------------------------------------------------------ sessions

function nameOf(s) { return s?.student_name || s?.student_id || 'unknown student'; }

// current_question is 1-based; 0 (or missing) means no heartbeat has reported one yet.
function questionOf(s) { return s?.current_question > 0 ? s.current_question : '—'; }

function tally(row, sign) {
  if (row.status in counts) counts[row.status] += sign;
  const n = row.violation_count || 0;
  counts.violations += sign * n;
  if (n > 0) counts.withViolations += sign;
}

// Recompute a student's attention bits; true when they changed.
function updateAttention(e, now) {
  const s = e.row;
  let a = 0;
  if (s.status === 'disconnected') a |= ATTN_DISCONNECTED;
  if ((s.violation_count || 0) > (acks.get(e.sid) ?? 0)) a |= ATTN_NEW;
  if (s.status === 'active' && !(now - e.hb <= SILENT_S * 1000)) a |= ATTN_SILENT;
  if (a === e.attn) return false;
  counts.attention += (a ? 1 : 0) - (e.attn ? 1 : 0);
  e.attn = a;
  e.ver++;
  orderDirty = true;
  countsDirty = true;
  return true;
}

// Take one student's current row.
function put(row, now, newlyDisconnected) {
  const sid = String(row.student_id);
  idToStudent.set(row._id, sid);
  let e = entries.get(sid);
  if (e && e.row === row) return;
  if (sessionsLoaded && row.status === 'disconnected' && e?.row.status !== 'disconnected') newlyDisconnected.push(row);
  const hb = parseTime(row.last_heartbeat);
  if (!e) {
    e = { sid, row, hb, rank: 0, attn: 0, ver: 0 };
    entries.set(sid, e);
    ranksDirty = true;
    orderDirty = true;
  } else {
    const old = e.row;
    tally(old, -1);
    if (nameOf(old) !== nameOf(row)) ranksDirty = true;
    // A heartbeat moves nobody (unless sorted by heartbeat): no re-sort.
    if (old.status !== row.status || old.violation_count !== row.violation_count
      || (sortBy === 'heartbeat' && hb !== e.hb)) orderDirty = true;
    e.row = row;
    e.hb = hb;
  }
  tally(row, 1);
  if (sid === detailFor) acks.set(sid, row.violation_count || 0); // the tutor is looking at them
  updateAttention(e, now);
  countsDirty = true;
}

function drop(sid) {
  const e = entries.get(sid);
  if (!e) return;
  tally(e.row, -1);
  if (e.attn) counts.attention -= 1;
  entries.delete(sid);
  orderDirty = true;
  countsDirty = true;
}

// Where each session _id is in the value (rows only replaced keep their places).
let rowPos = new Map();
function indexRows(list) {
  rowPos = new Map();
  for (let i = 0; i < list.length; i++) rowPos.set(list[i]._id, i);
}

function onSessions(value, change) {
  const list = Array.isArray(value) ? value : [];
  const now = Date.now();
  const newlyDisconnected = [];
  if (!change || change.full || !sessionsLoaded) {
    // A whole result: take every row (unchanged ones are the same objects
    // and cost nothing) and forget students who left.
    const seen = new Set();
    idToStudent.clear();
    indexRows(list);
    for (const row of list) {
      seen.add(String(row.student_id));
      put(row, now, newlyDisconnected);
    }
    for (const sid of [...entries.keys()]) if (!seen.has(sid)) drop(sid);
  } else {
    // A delta: only the students it names. Removals first, so that a
    // student whose session was replaced keeps the new one.
    for (const id of change.removed) {
      const sid = idToStudent.get(id);
      idToStudent.delete(id);
      if (sid != null) drop(sid);
    }
    if (change.removed.length || change.reordered) indexRows(list);
    for (const id of change.upserted) {
      const row = list[rowPos.get(id)];
      if (row?._id === id) put(row, now, newlyDisconnected);
    }
  }
  const first = !sessionsLoaded;
  sessionsLoaded = true;
  hideMessage();
  pendingDisconnected.push(...newlyDisconnected);
  if (first) render(); else scheduleRender();
}

// Alerts wait for the next render, so that the cards to flash are drawn and
// a burst of events costs one frame.
let pendingDisconnected = [];
let pendingViolations = [];

function raisePendingAlerts() {
  if (pendingDisconnected.length) {
    const list = pendingDisconnected;
    pendingDisconnected = [];
    const names = list.map(nameOf);
    const text = names.length === 1 ? `${names[0]} disconnected` : `${names.length} students disconnected: ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}`;
    raiseAlert(text, list.map((s) => String(s.student_id)));
  }
  if (pendingViolations.length) {
    const fresh = pendingViolations.sort((a, b) => (parseTime(b.created_at) || 0) - (parseTime(a.created_at) || 0));
    pendingViolations = [];
    const v = fresh[0];
    const text = fresh.length === 1
      ? `Violation: ${nameOf(v)} — ${v.type}`
      : `${fresh.length} new violations (latest: ${nameOf(v)} — ${v.type})`;
    // In a large exam a violation a second is normal: the row's badge and
    // its place at the top say it; flashing would only add noise.
    raiseAlert(text, entries.size > AUTO_COMPACT ? [] : [...new Set(fresh.map((x) => String(x.student_id)))]);
  }
}

function matches(e) {
  if (filter === 'disconnected') return e.row.status === 'disconnected';
  if (filter === 'violations') return (e.row.violation_count || 0) > 0;
  if (filter === 'attention') return e.attn !== 0;
  return true;
}

const collator = new Intl.Collator(undefined, { sensitivity: 'base', numeric: true });

function computeRanks() {
  const all = [...entries.values()];
  all.sort((a, b) => collator.compare(nameOf(a.row), nameOf(b.row)) || (a.sid < b.sid ? -1 : a.sid > b.sid ? 1 : 0));
  all.forEach((e, i) => { e.rank = i; });
  ranksDirty = false;
  orderDirty = true;
}

// Submitted students need no attention: they go last.
function weight(e) { return e.row.status === 'submitted' ? -1 : e.attn; }

function hbKey(e) { return Number.isNaN(e.hb) ? -Infinity : e.hb; }

const SORTS = {
  attention: (a, b) => weight(b) - weight(a) || a.rank - b.rank,
  name: (a, b) => a.rank - b.rank,
  violations: (a, b) => (b.row.violation_count || 0) - (a.row.violation_count || 0) || a.rank - b.rank,
  heartbeat: (a, b) => hbKey(a) - hbKey(b) || a.rank - b.rank,
};

function computeOrder() {
  if (ranksDirty) computeRanks();
  const out = [];
  for (const e of entries.values()) if (matches(e)) out.push(e);
  out.sort(SORTS[sortBy] || SORTS.attention);
  ordered = out;
  orderDirty = false;
}

// ------------------------------------------------------------------ rendering

let renderTimer = null;
let lastRender = -Infinity;

function scheduleRender() {
  if (renderTimer) return;
  const gap = entries.size > AUTO_COMPACT ? RENDER_GAP_LARGE_MS : RENDER_GAP_MS;
  const wait = Math.max(0, lastRender + gap - performance.now());
  renderTimer = setTimeout(render, wait);
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = null;
  lastRender = performance.now();
  const now = Date.now();
  const ageing = timeDirty;
  timeDirty = false;
  if (ageing) refreshSilence(now);
  if (countsDirty) renderCounters();
  autoMode();
  if (orderDirty || ranksDirty) computeOrder();
  renderWindow(now);
  if (streamDirty) renderStream();
  raisePendingAlerts();
  if (ageing) {
    // Only the items in view: those in the margin age when they come into
    // view at the next second (at most a second late).
    const [top, bottom] = viewRange();
    for (const it of rendered.values()) {
      const e = entries.get(it.sid);
      if (e && it.index >= top && it.index < bottom) fillTime(it, e, now);
    }
    if (detailHeartbeat) setText(detailHeartbeat.el, `${fmtClock(detailHeartbeat.ts)} (${fmtAgo(detailHeartbeat.ts, now)})`);
  }
  renderEmpty();
}

function renderCounters() {
  countsDirty = false;
  setText($('count-active'), counts.active);
  setText($('count-disconnected'), counts.disconnected);
  setText($('count-submitted'), counts.submitted);
  setText($('count-violations'), counts.violations);
  $('count-disconnected').parentElement.classList.toggle('nonzero', counts.disconnected > 0);
  setText($('filter-all-n'), entries.size);
  setText($('filter-attention-n'), counts.attention);
  setText($('filter-disconnected-n'), counts.disconnected);
  setText($('filter-violations-n'), counts.withViolations);
}

function renderEmpty() {
  const visible = ordered.length;
  if (!sessionsLoaded) setText(els.empty, 'Waiting for data…');
  else if (entries.size === 0) setText(els.empty, 'No students have joined this exam yet.');
  else if (visible === 0) {
    setText(els.empty, {
      disconnected: 'No disconnected students.',
      violations: 'No students with violations.',
      attention: 'Nobody needs attention right now.',
    }[filter] || 'No students.');
  }
  show(els.empty, !(sessionsLoaded && visible > 0));
  if (els.grid.classList.contains('is-empty') !== (visible === 0)) els.grid.classList.toggle('is-empty', visible === 0);
}

// ---- layout: cards or compact, measured from the viewport

let mode = 'cards';
let userMode = null;              // the tutor's choice, once made
try { userMode = ['cards', 'compact'].includes(localStorage.getItem('invigil.proctor.mode')) ? localStorage.getItem('invigil.proctor.mode') : null; } catch { /* none */ }

const geo = { ver: 0, cols: 1, itemW: 0, itemH: 0, gap: 0, lineH: 1, viewH: 0, scrollTop: 0, width: 0 };
const spacer = h('div', { class: 'grid-spacer', 'aria-hidden': 'true' });
els.grid.append(spacer);

function measure() {
  const width = els.grid.clientWidth;
  const viewH = els.grid.clientHeight;
  if (!width) return false;
  const rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
  if (mode === 'compact') {
    geo.gap = 0;
    geo.cols = 1;
    geo.itemW = width;
    geo.itemH = Math.round(2.05 * rem);
  } else {
    geo.gap = Math.round(0.85 * rem);
    geo.cols = Math.max(1, Math.floor((width + geo.gap) / (15.5 * rem + geo.gap)));
    geo.itemW = Math.floor((width - geo.gap * (geo.cols - 1)) / geo.cols);
    geo.itemH = Math.round(10.3 * rem);
  }
  geo.lineH = geo.itemH + geo.gap;
  geo.viewH = viewH;
  geo.width = width;
  geo.scrollTop = els.grid.scrollTop;
  geo.ver++;
  return true;
}

function setMode(m, byUser) {
  if (byUser) {
    userMode = m;
    try { localStorage.setItem('invigil.proctor.mode', m); } catch { /* ignore */ }
  }
  for (const b of document.querySelectorAll('button[data-mode]')) {
    b.setAttribute('aria-pressed', String(b.dataset.mode === m));
  }
  if (m === mode) return;
  mode = m;
  els.grid.dataset.mode = m;
  document.body.dataset.layout = m;
  els.gridHead.hidden = m !== 'compact';
  for (const item of [...rendered.values()]) item.el.remove();
  rendered.clear();
  pool.length = 0;
  measure();
}

function autoMode() {
  const want = userMode || (entries.size > AUTO_COMPACT ? 'compact' : 'cards');
  if (want !== mode) setMode(want, false);
}

// ---- the items on screen

const rendered = new Map();       // student_id -> item
const pool = [];                  // detached items of the current mode

function makeItem() {
  const it = {
    sid: null, row: null, ver: -1, index: -1, geoVer: -1, timeKey: '',
    name: null, status: null, question: null, answered: null, violations: null,
    attnEl: null, lastViolation: null, heartbeat: null, el: null,
  };
  if (mode === 'compact') {
    it.name = h('span', { class: 'name' });
    it.attnEl = h('span', { class: 'attn' });
    it.status = h('span', { class: 'status' });
    it.question = h('span', { class: 'question num' });
    it.answered = h('span', { class: 'answered num' });
    it.violations = h('span', { class: 'violations num' });
    it.lastViolation = h('span', { class: 'last-violation' });
    it.heartbeat = h('span', { class: 'heartbeat' });
    it.el = h('article', { class: 'card row', tabindex: 0, role: 'button' },
      h('span', { class: 'who' }, it.name, it.attnEl), it.status, it.question, it.answered,
      it.violations, it.lastViolation, it.heartbeat);
  } else {
    it.name = h('h3', { class: 'name' });
    it.attnEl = h('span', { class: 'attn' });
    it.status = h('span', { class: 'status' });
    it.question = h('dd', { class: 'question' });
    it.answered = h('dd', { class: 'answered' });
    it.violations = h('dd', { class: 'violations' });
    it.lastViolation = h('div', { class: 'last-violation' });
    it.heartbeat = h('div', { class: 'heartbeat' });
    it.el = h('article', { class: 'card tile', tabindex: 0, role: 'button' },
      h('div', { class: 'card-head' }, it.name, it.status),
      h('dl', { class: 'facts' },
        h('div', null, h('dt', null, 'Question'), it.question),
        h('div', null, h('dt', null, 'Answered'), it.answered),
        h('div', null, h('dt', null, 'Violations'), it.violations)),
      h('div', { class: 'card-line' }, it.attnEl, it.lastViolation),
      it.heartbeat);
  }
  return it;
}

function acquire(sid) {
  const it = pool.pop() || makeItem();
  it.sid = sid;
  it.row = null;
  it.index = -1;
  it.el.dataset.studentId = sid;
  it.el.classList.remove('flash', 'flash-again');
  els.grid.append(it.el);
  rendered.set(sid, it);
  return it;
}

function release(it) {
  it.el.remove();
  delete it.el.dataset.studentId;
  rendered.delete(it.sid);
  it.sid = null;
  if (pool.length < POOL_MAX) pool.push(it);
}

const STATUSES = ['active', 'disconnected', 'submitted'];

function fill(it, e, now) {
  const s = e.row;
  it.row = s;
  it.ver = e.ver;
  const status = String(s.status || 'unknown');
  const el = it.el;
  for (const st of STATUSES) el.classList.toggle(st, st === status);
  el.classList.toggle('selected', detailFor === e.sid);
  el.classList.toggle('attn-new', (e.attn & ATTN_NEW) !== 0);
  el.classList.toggle('attn-silent', (e.attn & ATTN_SILENT) !== 0);
  if (el.dataset.status !== status) el.dataset.status = status;
  const attention = [
    e.attn & ATTN_DISCONNECTED ? 'disconnected' : '',
    e.attn & ATTN_NEW ? 'new' : '',
    e.attn & ATTN_SILENT ? 'silent' : '',
  ].filter(Boolean).join(' ');
  if (el.dataset.attention !== attention) el.dataset.attention = attention;
  const title = `${nameOf(s)} (${s.student_id})`;
  if (el.title !== title) el.title = title;
  setText(it.name, nameOf(s));
  setText(it.status, status);
  const statusClass = `status s-${status}`;
  if (it.status.className !== statusClass) it.status.className = statusClass;
  setText(it.question, questionOf(s));
  setText(it.answered, s.answered_count ?? 0);
  const n = s.violation_count || 0;
  setText(it.violations, n);
  it.violations.classList.toggle('has', n > 0);
  const fresh = n - (acks.get(e.sid) ?? 0);
  setText(it.attnEl, e.attn & ATTN_NEW ? `${fresh} new` : '');
  it.timeKey = '';
  fillTime(it, e, now);
}

// The texts that age: "Last heartbeat 5 s ago", "Last: copy · 1 min ago".
// Compact rows say less, and change less often: "live" while heartbeats
// come (the tutor looks for exceptions), else the age in whole seconds, then
// minutes, then hours; so a grid of healthy students draws nothing once a
// second.
function fillTime(it, e, now) {
  const s = e.row;
  const late = (e.attn & ATTN_SILENT) !== 0 || s.status === 'disconnected';
  let hbText;
  let lvText = '';
  const lv = lastViolationInfo(s);
  if (mode === 'compact') {
    if (s.status === 'submitted') hbText = s.ended_at ? `done ${fmtClock(s.ended_at)}` : 'done';
    else hbText = late ? fmtAge(s.last_heartbeat, now) : 'live';
    if (lv) lvText = `${lv.type || 'violation'}${lv.at ? ` · ${fmtAge(lv.at, now)}` : ''}`;
  } else {
    hbText = s.status === 'submitted' && s.ended_at
      ? `Submitted ${fmtClock(s.ended_at)}`
      : `Last heartbeat ${fmtAgo(s.last_heartbeat, now)}`;
    if (lv) lvText = `Last: ${lv.type || 'violation'}${lv.at ? ` · ${fmtAgo(lv.at, now)}` : ''}`;
  }
  const key = hbText + '\u0000' + lvText + (late ? '!' : '');
  if (key === it.timeKey) return;
  it.timeKey = key;
  setText(it.heartbeat, hbText);
  it.heartbeat.classList.toggle('late', late);
  if (it.heartbeat.dataset.ts !== (s.last_heartbeat || '')) it.heartbeat.dataset.ts = s.last_heartbeat || '';
  setText(it.lastViolation, lvText);
}

// "34 s", "3 min", "2 h": an age that changes at most once a minute after the first.
function fmtAge(v, now) {
  const t = parseTime(v);
  if (Number.isNaN(t)) return 'never';
  const sec = Math.max(0, Math.floor((now - t) / 1000));
  if (sec < 60) return `${sec} s ago`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
  return `${Math.floor(sec / 3600)} h ago`;
}

function place(it, i) {
  it.index = i;
  const line = Math.floor(i / geo.cols);
  const col = i % geo.cols;
  const x = col * (geo.itemW + geo.gap);
  const y = line * geo.lineH;
  it.el.style.transform = `translate(${x}px, ${y}px)`;
  it.el.dataset.index = String(i);
  if (it.geoVer !== geo.ver) {
    it.geoVer = geo.ver;
    it.el.style.width = `${geo.itemW}px`;
    it.el.style.height = `${geo.itemH}px`;
  }
}

// Put the items in view (and MARGIN_PX around) in the DOM; rewrite only
// those whose row or attention changed, move only those whose place did.
function renderWindow(now = Date.now()) {
  if (!geo.width && !measure()) return;
  const n = ordered.length;
  const lines = Math.ceil(n / geo.cols);
  const height = `${Math.max(0, lines * geo.lineH - geo.gap)}px`;
  if (spacer.style.height !== height) spacer.style.height = height;
  if (els.grid.dataset.total !== String(n)) els.grid.dataset.total = String(n);
  const firstLine = Math.max(0, Math.floor((geo.scrollTop - MARGIN_PX) / geo.lineH));
  const lastLine = Math.ceil((geo.scrollTop + geo.viewH + MARGIN_PX) / geo.lineH);
  const from = Math.min(n, firstLine * geo.cols);
  const to = Math.min(n, lastLine * geo.cols);
  const keep = new Set();
  for (let i = from; i < to; i++) keep.add(ordered[i].sid);
  for (const it of [...rendered.values()]) if (!keep.has(it.sid)) release(it);
  // Items in the margin are drawn once, then brought up to date when they
  // scroll into view (this runs before that frame is painted): a change to
  // a row nobody can see costs no frame.
  const [top, bottom] = viewRange();
  for (let i = from; i < to; i++) {
    const e = ordered[i];
    const it = rendered.get(e.sid) || acquire(e.sid);
    if (it.row === null || ((it.row !== e.row || it.ver !== e.ver) && i >= top && i < bottom)) fill(it, e, now);
    if (it.index !== i || it.geoVer !== geo.ver) place(it, i);
  }
}

// The indices of the items in view, [top, bottom).
function viewRange() {
  return [
    Math.floor(geo.scrollTop / geo.lineH) * geo.cols,
    Math.ceil((geo.scrollTop + geo.viewH) / geo.lineH) * geo.cols,
  ];
}

let windowFrame = 0;
function requestWindow() {
  if (windowFrame) return;
  windowFrame = requestAnimationFrame(() => {
    windowFrame = 0;
    if (orderDirty || ranksDirty) render(); else renderWindow();
  });
}

els.grid.addEventListener('scroll', () => {
  geo.scrollTop = els.grid.scrollTop;
  requestWindow();
}, { passive: true });

new ResizeObserver(() => {
  if (measure()) requestWindow();
}).observe(els.grid);

// Clicks and keys on any item (one listener for all of them).
function itemOf(target) {
  const el = target?.closest?.('.card[data-student-id]');
  return el && els.grid.contains(el) ? el : null;
}
els.grid.addEventListener('click', (ev) => {
  const el = itemOf(ev.target);
  if (el) openDetail(el.dataset.studentId);
});
els.grid.addEventListener('keydown', (ev) => {
  const el = itemOf(ev.target);
  if (el && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); openDetail(el.dataset.studentId); }
});


// The session's last_violation is {type, created_at}; older servers sent a
// time or a type: fill in from the stream where we can.
function lastViolationInfo(s) {
  const lv = s.last_violation;
  if (lv && typeof lv === 'object') return { type: lv.type, at: lv.created_at ?? lv.client_ts };
  const fromStream = lastViolationOf.get(String(s.student_id));
  if (typeof lv === 'string' && lv) {
    if (!Number.isNaN(parseTime(lv))) return { type: fromStream?.type, at: lv };
    return { type: lv, at: fromStream?.created_at };
  }
  if ((s.violation_count || 0) > 0 && fromStream) return { type: fromStream.type, at: fromStream.created_at };
  return null;
}

// Once a second the next render also finds who went silent and ages the
// texts of the items on screen.
let timeDirty = false;

function refreshSilence(now) {
  for (const e of entries.values()) {
    if (e.row.status === 'active' || e.attn & ATTN_SILENT) updateAttention(e, now);
  }
}

setInterval(() => { timeDirty = true; scheduleRender(); }, 1000);

// ------------------------------------------------------------------ violations stream

const CLOCK_SKEW_S = 2;

function describeDetail(d) {
  if (d == null || d === '') return '';
  return typeof d === 'string' ? d : JSON.stringify(d);
}

function clockNote(v) {
  const server = parseTime(v.created_at);
  const clientT = parseTime(v.client_ts);
  if (Number.isNaN(server) || Number.isNaN(clientT)) return null;
  const diff = (clientT - server) / 1000;
  if (Math.abs(diff) <= CLOCK_SKEW_S) return null;
  const sign = diff > 0 ? '+' : '−';
  return `client clock ${fmtClock(v.client_ts)} (${sign}${Math.round(Math.abs(diff))} s)`;
}

function onViolations(value) {
  const list = (Array.isArray(value) ? value : []).slice()
    .sort((a, b) => (parseTime(b.created_at) || 0) - (parseTime(a.created_at) || 0));
  const fresh = violationsLoaded ? list.filter((v) => !seenViolations.has(v._id)) : [];
  if (seenViolations.size > 5000) seenViolations = new Set();
  for (const v of list) seenViolations.add(v._id);
  violations = list;
  violationsLoaded = true;
  lastViolationOf = new Map();
  for (const v of list) if (!lastViolationOf.has(String(v.student_id))) lastViolationOf.set(String(v.student_id), v);
  for (const v of fresh) freshIds.add(v._id);
  pendingViolations.push(...fresh);
  streamDirty = true;
  scheduleRender();
}

let streamDirty = false;
let freshIds = new Set();         // violations that arrived since the stream was drawn

const streamItems = new Map();    // violation _id -> {v, li}

function streamItem(v, isNew) {
  const note = clockNote(v);
  const detail = describeDetail(v.detail);
  const li = h('li', {
    class: isNew ? 'new' : null,
    dataset: { id: v._id ?? '', type: v.type ?? '', studentId: v.student_id ?? '' },
    title: 'Show this student',
  },
    h('div', null, h('span', { class: 'vtype' }, v.type ?? 'unknown'), ' ', h('span', { class: 'who' }, nameOf(v))),
    h('time', { class: 'server-time', datetime: v.created_at ?? '', title: 'server time' }, fmtClock(v.created_at)),
    note ? h('span', { class: 'client-time' }, note) : null,
    detail ? h('span', { class: 'vdetail' }, detail) : null);
  li.addEventListener('click', () => { if (v.student_id) openDetail(String(v.student_id)); });
  li.style.cursor = 'pointer';
  return li;
}

// Keyed: a violation already listed keeps its <li>; new ones are inserted.
function renderStream() {
  streamDirty = false;
  const want = violations.map((v) => {
    let it = streamItems.get(v._id);
    if (!it || it.v !== v) {
      const li = streamItem(v, freshIds.has(v._id));
      if (it) it.li.replaceWith(li);
      it = { v, li };
      streamItems.set(v._id, it);
    }
    return it.li;
  });
  const wantSet = new Set(want);
  for (const [id, it] of streamItems) {
    if (!wantSet.has(it.li)) { it.li.remove(); streamItems.delete(id); }
  }
  const kids = els.stream.children;
  for (let i = 0; i < want.length; i++) {
    if (kids[i] !== want[i]) els.stream.insertBefore(want[i], kids[i] ?? null);
  }
  freshIds = new Set();
  show(streamEmpty, want.length === 0);
  setText(streamEmpty, violationsLoaded ? 'No violations so far.' : 'Waiting for data…');
  // Items on screen that show a violation from the stream may change.
  for (const it of rendered.values()) it.timeKey = '';
}

// ------------------------------------------------------------------ side panel

function markSelected(sid, on) {
  rendered.get(sid)?.el.classList.toggle('selected', on);
}

function openDetail(studentId) {
  if (detailFor === studentId && !els.detail.hidden) return;
  closeDetail();
  detailFor = studentId;
  markSelected(studentId, true);
  ackStudent(studentId);
  const s = entries.get(studentId)?.row;
  setText(els.detailName, s ? nameOf(s) : studentId);
  setText(els.detailStatus, '');
  els.detailStatus.hidden = true;
  els.detailBody.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  els.detail.dataset.studentId = studentId;
  els.detail.hidden = false;
  detailUnsub = client.subscribe('proctoring.getSession', { exam_id: examId, student_id: studentId },
    (value) => { if (detailFor === studentId) renderDetail(value); },
    (err) => {
      detailUnsub = null;
      if (detailFor !== studentId) return;
      els.detailBody.replaceChildren(h('p', { class: 'error-text' }, errorText(err, {
        not_found: 'This student has no session in this exam.',
        forbidden: 'You cannot see this student\'s session.',
      })));
    });
}

function closeDetail() {
  if (detailUnsub) { detailUnsub(); detailUnsub = null; }
  if (detailFor) markSelected(detailFor, false);
  detailFor = null;
  detailHeartbeat = null;
  els.detail.hidden = true;
  delete els.detail.dataset.studentId;
}

function kv(label, value) {
  return [h('dt', null, label), value instanceof Node ? h('dd', null, value) : h('dd', null, value ?? '—')];
}

function renderDetail(s) {
  if (!s || typeof s !== 'object') {
    els.detailBody.replaceChildren(h('p', { class: 'muted' }, 'No session.'));
    return;
  }
  setText(els.detailName, nameOf(s));
  const status = String(s.status || 'unknown');
  setText(els.detailStatus, status);
  els.detailStatus.className = `status s-${status}`;
  els.detailStatus.hidden = false;

  const hbEl = h('span', { class: 'detail-heartbeat' });
  detailHeartbeat = { el: hbEl, ts: s.last_heartbeat };

  const list = (Array.isArray(s.violations) ? s.violations : []).slice()
    .sort((a, b) => (parseTime(b.created_at) || 0) - (parseTime(a.created_at) || 0));

  els.detailBody.replaceChildren(
    h('dl', { class: 'kv' },
      kv('Student', `${nameOf(s)} (${s.student_id ?? '?'})`),
      kv('Status', status),
      kv('Current question', questionOf(s)),
      kv('Answered', s.answered_count ?? 0),
      kv('Violations', s.violation_count ?? list.length),
      kv('Last heartbeat', hbEl),
      kv('Started', s.started_at ? `${fmtClock(s.started_at)}` : '—'),
      kv('Ended', s.ended_at ? `${fmtClock(s.ended_at)}` : '—')),
    h('h3', null, `Violations (${list.length})`),
    list.length
      ? h('ol', { id: 'detail-violations' }, list.map((v) => {
        const note = clockNote(v);
        const detail = describeDetail(v.detail);
        return h('li', { dataset: { id: v._id ?? '', type: v.type ?? '' } },
          h('span', { class: 'vtype' }, v.type ?? 'unknown'),
          h('span', { class: 't' }, fmtClock(v.created_at), note ? ` · ${note}` : ''),
          detail ? h('span', { class: 'd' }, detail) : null);
      }))
      : h('p', { class: 'muted' }, 'No violations.'),
  );
  const now = Date.now();
  setText(hbEl, `${fmtClock(s.last_heartbeat)} (${fmtAgo(s.last_heartbeat, now)})`);
}

els.detailClose.addEventListener('click', closeDetail);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !els.detail.hidden) closeDetail(); });

// ------------------------------------------------------------------ toolbar

for (const btn of document.querySelectorAll('[data-filter]')) {
  btn.addEventListener('click', () => {
    filter = btn.dataset.filter;
    for (const b of document.querySelectorAll('[data-filter]')) b.setAttribute('aria-pressed', String(b === btn));
    orderDirty = true;
    els.grid.scrollTop = 0;
    geo.scrollTop = 0;
    render();
  });
}

els.sort.value = sortBy;
els.sort.addEventListener('change', () => {
  sortBy = els.sort.value;
  orderDirty = true;
  render();
});

for (const btn of document.querySelectorAll('button[data-mode]')) {
  btn.addEventListener('click', () => {
    setMode(btn.dataset.mode, true);
    render();
  });
}

els.ackAll.addEventListener('click', ackAll);

// ------------------------------------------------------------------ go

setMode(userMode || 'cards', false);
measure();
renderStream();
render();
if (!storedToken() && !storedDemoUser()) {
  // No credentials at all: say so instead of opening a socket that can only fail.
  client.close();
  setText($('conn'), 'Not signed in');
  subFailed({ code: 'unauthenticated', message: '' });
} else {
  startSubs();
}

// ------------------------------------------------------------------ questions (chat, issue 8)

// The exam's chat rooms, once the server said who we are (proctorchat.js).
const stopChatMount = client.onStateChange((state) => {
  if (state !== 'online' || !client.user) return;
  stopChatMount();
  if (client.user.role === 'tutor' || client.user.role === 'admin') {
    mountTutorChat({ client, examId, me: client.user, anchor: $('questions-anchor') });
  }
});
