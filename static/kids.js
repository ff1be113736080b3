// Kids' live leaderboard, for a classroom projector: /kids/{quiz_code}.
//
// Public: the socket never authenticates (getToken gives null), so nobody
// signs in on the classroom's computer. Two subscriptions:
// leaderboard.getLeaderboard (the top rows, ranked by the server) and
// leaderboard.getQuiz (the title and how many played). Rows glide to their
// new places (FLIP: each row's old position, the DOM reordered, then a
// transform from the old place to the new one, animated away); confetti
// when someone enters the top 3. Text goes in with textContent only.
//
// ?top=N shows N rows (1 to 100, default 10).

import { connect } from '/static/invigil.js';
import { connIndicator, errorText, setText } from '/static/common.js';

const MAX_TOP = 100;
const RETRY_MS = 5_000; // an unknown quiz may be registered soon: look again
const GLIDE_MS = 900;

const quizCode = (() => {
  const m = location.pathname.match(/^\/kids\/([^/]+)\/?$/);
  if (!m) return '';
  try { return decodeURIComponent(m[1]); } catch { return m[1]; }
})();
const shown = (() => {
  const n = Number(new URLSearchParams(location.search).get('top'));
  return Number.isInteger(n) && n >= 1 ? Math.min(n, MAX_TOP) : 10;
})();

const boardEl = document.getElementById('board');
const messageEl = document.getElementById('message');
const moreEl = document.getElementById('more');
const playersEl = document.getElementById('players');
const cheerEl = document.getElementById('cheer');
const confettiEl = document.getElementById('confetti');
const reducedMotion = matchMedia('(prefers-reduced-motion: reduce)');

document.documentElement.style.setProperty('--rows', String(Math.max(shown, 5)));
setText(document.getElementById('code'), quizCode);

// What tests (and a curious teacher in the console) can look at.
const stats = { updates: 0, moved: 0, celebrations: 0, celebrated: [] };
window.__kids = stats;

const state = {
  rows: [],            // the board as last rendered, in order
  els: new Map(),      // _id -> {el, row}
  topIds: null,        // _ids ranked 1 to 3 in the last board; null before the first
  players: 0,
  title: '',
};

function setPage(s, message) {
  document.body.dataset.state = s;
  messageEl.hidden = !message;
  setText(messageEl, message || '');
}

// ---------------------------------------------------------------- rows

const numberFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

function makeRow(id) {
  const el = document.createElement('li');
  el.className = 'row';
  el.dataset.id = id;
  const part = (className, ...children) => {
    const span = document.createElement('span');
    span.className = className;
    span.append(...children);
    return span;
  };
  el.append(part('rank'), part('nick'), part('bar', part('fill')), part('score', part('pts'), part('of')));
  return el;
}

function fillRow(el, row) {
  const [rank, nick, bar, score] = el.children;
  setText(rank, row.rank);
  setText(nick, row.nickname);
  setText(score.children[0], numberFmt.format(row.score));
  setText(score.children[1], `/ ${numberFmt.format(row.max_score)}`);
  bar.firstChild.style.width = `${Math.max(0, Math.min(100, row.percentage))}%`;
  el.dataset.rank = String(row.rank);
  el.title = `${row.percentage}%`;
  el.classList.toggle('podium', row.rank <= 3);
}

// render puts rows on the page in order and lets the rows that moved glide
// from where they were.
function render(rows) {
  const glide = !reducedMotion.matches && state.rows.length > 0;
  const before = new Map();
  if (glide) {
    for (const [id, { el }] of state.els) before.set(id, el.getBoundingClientRect().top);
  }
  const keep = new Set(rows.map((r) => r._id));
  for (const [id, { el }] of state.els) {
    if (!keep.has(id)) {
      el.remove();
      state.els.delete(id);
    }
  }
  rows.forEach((row, i) => {
    let entry = state.els.get(row._id);
    if (!entry) {
      entry = { el: makeRow(row._id), row: null };
      state.els.set(row._id, entry);
      if (glide) {
        entry.el.classList.add('enter');
        // Its transform is the animation's until it ends; then FLIP's again.
        entry.el.addEventListener('animationend', () => entry.el.classList.remove('enter'), { once: true });
      }
    }
    if (entry.row !== row) {
      const up = entry.row && row.rank < entry.row.rank;
      fillRow(entry.el, row);
      entry.row = row;
      if (up && glide) flash(entry.el, 'up');
    }
    if (boardEl.children[i] !== entry.el) boardEl.insertBefore(entry.el, boardEl.children[i] || null);
  });
  state.rows = rows;
  if (!glide) return;
  // Invert: each row that moved jumps back to where it was...
  const moving = [];
  for (const [id, top0] of before) {
    const entry = state.els.get(id);
    if (!entry) continue;
    const dy = top0 - entry.el.getBoundingClientRect().top;
    if (Math.abs(dy) < 1) continue;
    entry.el.style.transition = 'none';
    entry.el.style.transform = `translateY(${dy}px)`;
    moving.push(entry.el);
  }
  if (!moving.length) return;
  stats.moved += moving.length;
  boardEl.getBoundingClientRect(); // one layout with the rows at their old places
  // ...and play: the transform eases back to none.
  requestAnimationFrame(() => {
    for (const el of moving) {
      el.style.transition = `transform ${GLIDE_MS}ms cubic-bezier(.2, .8, .2, 1)`;
      el.style.transform = '';
    }
  });
}

function flash(el, cls) {
  el.classList.remove(cls);
  void el.offsetWidth; // restart the animation
  el.classList.add(cls);
  setTimeout(() => el.classList.remove(cls), 1600);
}

// ---------------------------------------------------------------- header, footer

function renderCounts() {
  setText(playersEl, numberFmt.format(state.players));
  setText(document.getElementById('players-label'), state.players === 1 ? 'player' : 'players');
  const more = Math.max(0, state.players - state.rows.length);
  moreEl.hidden = more === 0;
  setText(moreEl, more === 1 ? '+ 1 more player' : `+ ${numberFmt.format(more)} more players`);
}

function renderTitle(title) {
  state.title = title;
  setText(document.getElementById('title'), title || 'Leaderboard');
  document.title = `${title || quizCode} · Leaderboard`;
}

// ---------------------------------------------------------------- celebration

let cheerTimer = null;

function celebrate(names) {
  stats.celebrations++;
  stats.celebrated.push(...names);
  const who = names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
  setText(document.getElementById('cheer-text'), `${who} ${names.length === 1 ? 'is' : 'are'} in the top 3!`);
  cheerEl.hidden = false;
  flash(cheerEl, 'pop');
  clearTimeout(cheerTimer);
  cheerTimer = setTimeout(() => { cheerEl.hidden = true; }, 4000);
  if (!reducedMotion.matches) confetti();
}

const COLORS = ['#ffd23f', '#ff5d8f', '#3bceac', '#4cc9f0', '#f77f00', '#b5179e', '#ffffff', '#80ed99'];

// confetti drops 160 pieces from above the screen; each removes itself.
function confetti() {
  const burst = document.createElement('div');
  burst.className = 'burst';
  for (let i = 0; i < 160; i++) {
    const p = document.createElement('i');
    const size = 8 + Math.random() * 10;
    p.style.left = `${Math.random() * 100}vw`;
    p.style.width = `${size}px`;
    p.style.height = `${size * (0.4 + Math.random() * 0.8)}px`;
    p.style.background = COLORS[i % COLORS.length];
    p.style.setProperty('--drift', `${(Math.random() - 0.5) * 40}vw`);
    p.style.setProperty('--spin', `${(Math.random() < 0.5 ? -1 : 1) * (360 + Math.random() * 1080)}deg`);
    p.style.animationDuration = `${2.6 + Math.random() * 2}s`;
    p.style.animationDelay = `${Math.random() * 0.5}s`;
    if (i % 3 === 0) p.style.borderRadius = '50%';
    burst.append(p);
  }
  confettiEl.append(burst);
  setTimeout(() => burst.remove(), 5200);
}

// Someone entered the top 3: an _id ranked 1 to 3 now that was not before.
// The first board of the page only sets the scene.
function checkTop(rows) {
  const now = new Set(rows.filter((r) => r.rank <= 3).map((r) => r._id));
  if (state.topIds) {
    const names = rows.filter((r) => now.has(r._id) && !state.topIds.has(r._id)).map((r) => r.nickname);
    if (names.length) celebrate(names);
  }
  state.topIds = now;
}

// ---------------------------------------------------------------- live data

const client = connect({
  getToken: async () => null, // public: never sign in on the projector
  onState: connIndicator(document.getElementById('conn')),
});

function watch(query, args, onData) {
  client.subscribe(query, args, onData, (err) => {
    const missing = err?.code === 'not_found';
    setPage(missing ? 'missing' : 'error', missing
      ? `No quiz with code “${quizCode}” yet. Looking again every ${RETRY_MS / 1000} s…`
      : errorText(err));
    setTimeout(() => watch(query, args, onData), RETRY_MS);
  });
}

if (!quizCode) {
  setPage('missing', 'Open /kids/<quiz code> to show a quiz.');
} else {
  watch('leaderboard.getLeaderboard', { quiz_code: quizCode, limit: shown }, (rows) => {
    stats.updates++;
    render(rows);
    checkTop(rows);
    renderCounts();
    setPage(rows.length ? 'ready' : 'empty', rows.length ? '' : 'Waiting for the first scores…');
  });
  watch('leaderboard.getQuiz', { quiz_code: quizCode }, (quiz) => {
    renderTitle(quiz.title);
    state.players = quiz.players;
    renderCounts();
  });
}
