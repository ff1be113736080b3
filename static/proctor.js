// Tutor's live proctoring grid for one exam (/proctor/{exam_id}).
//
// Subscriptions:
//   proctoring.getExamSessions {exam_id}            -> the grid and counters
//   proctoring.getViolations   {exam_id, limit:50}  -> the live stream
//   proctoring.getSession      {exam_id, student_id} -> the side panel (while open)
//
// Stable hooks for tests: #grid, .card[data-student-id] (classes active /
// disconnected / submitted), .card .status (text = status), .card .violations
// (text = count), #stream li, #conn, #filter-all / #filter-disconnected /
// #filter-violations, #sort, #detail, #detail-close, #alert, #message,
// #count-active / #count-disconnected / #count-submitted / #count-violations.

import { connect } from '/static/invigil.js';
import {
  pageGetToken, examIdFromLocation, connIndicator, renderWho, tokenIdentity,
  h, setText, errorText, fmtClock, fmtAgo, parseTime, secondsSince, signInHref,
  storedToken, storedDemoUser,
} from '/static/common.js';

const examId = examIdFromLocation();
const $ = (id) => document.getElementById(id);

const els = {
  grid: $('grid'), empty: $('empty'), stream: $('stream'), message: $('message'),
  alert: $('alert'), alertText: $('alert-text'), alertDismiss: $('alert-dismiss'),
  detail: $('detail'), detailName: $('detail-name'), detailStatus: $('detail-status'),
  detailBody: $('detail-body'), detailClose: $('detail-close'), who: $('who'), sort: $('sort'),
};

setText($('exam-id'), examId);
const baseTitle = `Proctoring · ${examId} · invigil`;
document.title = baseTitle;
renderWho(els.who, tokenIdentity());

const streamEmpty = h('p', { id: 'stream-empty', class: 'muted', style: 'padding: .75rem 1rem; margin: 0' }, 'Waiting for data…');
els.stream.after(streamEmpty);

// ------------------------------------------------------------------ state

let sessions = [];
let sessionsLoaded = false;
let violations = [];
let violationsLoaded = false;
let seenViolations = new Set();
const prevStatus = new Map();     // student_id -> last status seen
const cards = new Map();          // student_id -> card refs
let filter = 'all';
let sortBy = 'name';
let unsubs = [];

let detailFor = null;             // student_id shown in the side panel
let detailUnsub = null;
let detailHeartbeat = null;       // {el, ts} ticking in the panel

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
  els.message.hidden = true;
  els.message.replaceChildren();
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

function flash(studentId) {
  const c = cards.get(studentId);
  if (!c) return;
  c.el.classList.remove('flash');
  void c.el.offsetWidth; // restart the animation
  c.el.classList.add('flash');
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

function onSessions(value) {
  const list = Array.isArray(value) ? value : [];
  const newlyDisconnected = [];
  const seen = new Set();
  for (const s of list) {
    seen.add(s.student_id);
    const prev = prevStatus.get(s.student_id);
    if (sessionsLoaded && s.status === 'disconnected' && prev !== 'disconnected') newlyDisconnected.push(s);
    prevStatus.set(s.student_id, s.status);
  }
  for (const sid of [...prevStatus.keys()]) if (!seen.has(sid)) prevStatus.delete(sid);
  sessions = list;
  sessionsLoaded = true;
  hideMessage();
  render();
  if (newlyDisconnected.length) {
    const names = newlyDisconnected.map(nameOf);
    const text = names.length === 1 ? `${names[0]} disconnected` : `${names.length} students disconnected: ${names.join(', ')}`;
    raiseAlert(text, newlyDisconnected.map((s) => s.student_id));
  }
}

function matches(s) {
  if (filter === 'disconnected') return s.status === 'disconnected';
  if (filter === 'violations') return (s.violation_count || 0) > 0;
  return true;
}

function byName(a, b) {
  return nameOf(a).localeCompare(nameOf(b), undefined, { sensitivity: 'base', numeric: true })
    || String(a.student_id).localeCompare(String(b.student_id));
}

function sorted(list) {
  const out = list.slice();
  if (sortBy === 'violations') {
    out.sort((a, b) => (b.violation_count || 0) - (a.violation_count || 0) || byName(a, b));
  } else if (sortBy === 'heartbeat') {
    const t = (s) => { const v = parseTime(s.last_heartbeat); return Number.isNaN(v) ? -Infinity : v; };
    out.sort((a, b) => t(a) - t(b) || byName(a, b));
  } else {
    out.sort(byName);
  }
  return out;
}

function render() {
  const counts = { active: 0, disconnected: 0, submitted: 0, violations: 0, withViolations: 0 };
  for (const s of sessions) {
    if (s.status in counts) counts[s.status] += 1;
    counts.violations += s.violation_count || 0;
    if ((s.violation_count || 0) > 0) counts.withViolations += 1;
  }
  setText($('count-active'), counts.active);
  setText($('count-disconnected'), counts.disconnected);
  setText($('count-submitted'), counts.submitted);
  setText($('count-violations'), counts.violations);
  $('count-disconnected').parentElement.classList.toggle('nonzero', counts.disconnected > 0);
  setText($('filter-all-n'), sessions.length);
  setText($('filter-disconnected-n'), counts.disconnected);
  setText($('filter-violations-n'), counts.withViolations);

  const ordered = sorted(sessions);
  const keep = new Set();
  for (const s of ordered) {
    keep.add(s.student_id);
    let c = cards.get(s.student_id);
    if (!c) { c = makeCard(s.student_id); cards.set(s.student_id, c); }
    updateCard(c, s);
    c.el.hidden = !matches(s);
  }
  for (const [sid, c] of cards) {
    if (!keep.has(sid)) { c.el.remove(); cards.delete(sid); }
  }
  // Reorder only when needed (moving nodes restarts their animations).
  const want = ordered.map((s) => cards.get(s.student_id).el);
  const have = [...els.grid.children];
  if (want.length !== have.length || want.some((el, i) => el !== have[i])) els.grid.append(...want);

  const visible = ordered.filter(matches).length;
  if (!sessionsLoaded) setText(els.empty, 'Waiting for data…');
  else if (sessions.length === 0) setText(els.empty, 'No students have joined this exam yet.');
  else if (visible === 0) setText(els.empty, filter === 'disconnected' ? 'No disconnected students.' : 'No students with violations.');
  els.empty.hidden = sessionsLoaded && visible > 0;
  tick();
}

function makeCard(studentId) {
  const c = {
    name: h('h3', { class: 'name' }),
    status: h('span', { class: 'status' }),
    question: h('dd', { class: 'question' }),
    answered: h('dd', { class: 'answered' }),
    violations: h('dd', { class: 'violations' }),
    lastViolation: h('div', { class: 'last-violation' }),
    heartbeat: h('div', { class: 'heartbeat' }),
    session: null,
  };
  c.el = h('article', { class: 'card', tabindex: 0, role: 'button', dataset: { studentId } },
    h('div', { class: 'card-head' }, c.name, c.status),
    h('dl', { class: 'facts' },
      h('div', null, h('dt', null, 'Question'), c.question),
      h('div', null, h('dt', null, 'Answered'), c.answered),
      h('div', null, h('dt', null, 'Violations'), c.violations)),
    c.lastViolation,
    c.heartbeat);
  c.el.addEventListener('click', () => openDetail(studentId));
  c.el.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); openDetail(studentId); }
  });
  c.el.addEventListener('animationend', () => c.el.classList.remove('flash'));
  return c;
}

const STATUSES = ['active', 'disconnected', 'submitted'];

function updateCard(c, s) {
  c.session = s;
  const status = String(s.status || 'unknown');
  for (const st of STATUSES) {
    c.el.classList.toggle(st, st === status);
    c.el.classList.toggle(`status-${st}`, st === status);
  }
  c.el.classList.toggle('selected', detailFor === s.student_id);
  c.el.dataset.status = status;
  c.el.title = `${nameOf(s)} (${s.student_id})`;
  setText(c.name, nameOf(s));
  setText(c.status, status);
  c.status.className = `status s-${status}`;
  setText(c.question, questionOf(s));
  setText(c.answered, s.answered_count ?? 0);
  const n = s.violation_count || 0;
  setText(c.violations, n);
  c.violations.classList.toggle('has', n > 0);
}

// The session's last_violation may be a time, a type, or a violation row;
// fill in from the stream where we can.
function lastViolationInfo(s) {
  const lv = s.last_violation;
  const fromStream = violations.find((v) => v.student_id === s.student_id);
  if (lv && typeof lv === 'object') return { type: lv.type, at: lv.created_at ?? lv.client_ts };
  if (typeof lv === 'string' && lv) {
    if (!Number.isNaN(parseTime(lv))) return { type: fromStream?.type, at: lv };
    return { type: lv, at: fromStream?.created_at };
  }
  if ((s.violation_count || 0) > 0 && fromStream) return { type: fromStream.type, at: fromStream.created_at };
  return null;
}

function tick() {
  const now = Date.now();
  for (const c of cards.values()) {
    const s = c.session;
    if (!s) continue;
    const hb = s.last_heartbeat;
    const hbText = s.status === 'submitted' && s.ended_at
      ? `Submitted ${fmtClock(s.ended_at)}`
      : `Last heartbeat ${fmtAgo(hb, now)}`;
    setText(c.heartbeat, hbText);
    c.heartbeat.classList.toggle('late', s.status !== 'submitted' && secondsSince(hb, now) > 20);
    c.heartbeat.dataset.ts = hb || '';
    const lv = lastViolationInfo(s);
    setText(c.lastViolation, lv
      ? `Last: ${lv.type || 'violation'}${lv.at ? ` · ${fmtAgo(lv.at, now)}` : ''}`
      : '');
  }
  if (detailHeartbeat) setText(detailHeartbeat.el, `${fmtClock(detailHeartbeat.ts)} (${fmtAgo(detailHeartbeat.ts, now)})`);
}
setInterval(tick, 1000);

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
  renderStream(new Set(fresh.map((v) => v._id)));
  tick();
  if (fresh.length) {
    const v = fresh[0];
    const text = fresh.length === 1
      ? `Violation: ${nameOf(v)} — ${v.type}`
      : `${fresh.length} new violations (latest: ${nameOf(v)} — ${v.type})`;
    raiseAlert(text, [...new Set(fresh.map((x) => x.student_id))]);
  }
}

function renderStream(freshIds) {
  const items = violations.map((v) => {
    const note = clockNote(v);
    const detail = describeDetail(v.detail);
    const li = h('li', {
      class: freshIds.has(v._id) ? 'new' : null,
      dataset: { id: v._id ?? '', type: v.type ?? '', studentId: v.student_id ?? '' },
      title: 'Show this student',
    },
      h('div', null, h('span', { class: 'vtype' }, v.type ?? 'unknown'), ' ', h('span', { class: 'who' }, nameOf(v))),
      h('time', { class: 'server-time', datetime: v.created_at ?? '', title: 'server time' }, fmtClock(v.created_at)),
      note ? h('span', { class: 'client-time' }, note) : null,
      detail ? h('span', { class: 'vdetail' }, detail) : null);
    li.addEventListener('click', () => { if (v.student_id) openDetail(v.student_id); });
    li.style.cursor = 'pointer';
    return li;
  });
  els.stream.replaceChildren(...items);
  streamEmpty.hidden = items.length > 0;
  setText(streamEmpty, violationsLoaded ? 'No violations so far.' : 'Waiting for data…');
}

// ------------------------------------------------------------------ side panel

function openDetail(studentId) {
  if (detailFor === studentId && !els.detail.hidden) return;
  closeDetail();
  detailFor = studentId;
  cards.get(studentId)?.el.classList.add('selected');
  const s = sessions.find((x) => x.student_id === studentId);
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
  if (detailFor) cards.get(detailFor)?.el.classList.remove('selected');
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
  tick();
}

els.detailClose.addEventListener('click', closeDetail);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !els.detail.hidden) closeDetail(); });

// ------------------------------------------------------------------ toolbar

for (const btn of document.querySelectorAll('[data-filter]')) {
  btn.addEventListener('click', () => {
    filter = btn.dataset.filter;
    for (const b of document.querySelectorAll('[data-filter]')) b.setAttribute('aria-pressed', String(b === btn));
    render();
  });
}

els.sort.addEventListener('change', () => {
  sortBy = els.sort.value;
  render();
});

// ------------------------------------------------------------------ go

renderStream(new Set());
if (!storedToken() && !storedDemoUser()) {
  // No credentials at all: say so instead of opening a socket that can only fail.
  client.close();
  setText($('conn'), 'Not signed in');
  subFailed({ code: 'unauthenticated', message: '' });
} else {
  startSubs();
}
