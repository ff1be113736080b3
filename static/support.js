// The support agents' console (/support): the queue of waiting chats, live
// (each with how long it has waited, ticking), one's own chats with their
// unread counts and who is online, the other agents' chats (read only) and
// the recently ended ones; the chosen chat on the right (chat.js).
//
// Subscriptions:
//   chat.listSessions {scope: "support", status: "waiting"}          -> #queue
//   chat.listSessions {scope: "support", status: "active"}           -> #mine, #others
//   chat.listSessions {scope: "support", status: "ended", limit: 20} -> #ended (one's own)
//   presence.listPresence {scope: "chat:<id>"}  for the chats listed in #queue and #mine (dots)
// and, for the open chat, what chat.js subscribes.
//
// Claiming (chat.assignAgent) is a race among agents: the loser is told
// another agent took it. Any agent reads any support chat; only the one who
// claimed it writes (chat.js shows why the composer is closed).
//
// Stable hooks for tests: #queue li[data-session-id] (.wait: waiting time,
// .dot[data-online]), #mine li[data-session-id] (.unread, .dot), #others,
// #ended, #queue-count, #mine-count, #conversation[data-session-id],
// #conv-name, #conv-status, #claim, #end-chat, #toast, #message, #conn.

import { connect } from '/static/invigil.js';
import {
  pageGetToken, connIndicator, renderWho, tokenIdentity, h, setText, errorText, signInHref,
  storedToken, storedDemoUser, parseTime,
} from '/static/common.js';
import { createChatView, unreadCount } from '/static/chat.js';

const $ = (id) => document.getElementById(id);
const els = {
  queue: $('queue'), mine: $('mine'), others: $('others'), ended: $('ended'),
  queueCount: $('queue-count'), mineCount: $('mine-count'), othersCount: $('others-count'),
  queueEmpty: $('queue-empty'), mineEmpty: $('mine-empty'),
  conv: $('conversation'), head: $('conv-head'), name: $('conv-name'), status: $('conv-status'),
  waited: $('conv-waited'), claim: $('claim'), end: $('end-chat'), body: $('conv-body'),
  placeholder: $('conv-placeholder'), message: $('message'), toast: $('toast'), who: $('who'),
};
const baseTitle = 'Support · invigil';
renderWho(els.who, tokenIdentity());

// ------------------------------------------------------------------ state

let me = null;                      // {id, name, role} once the server said
let waiting = [];
let active = [];
let ended = [];
let selected = null;                // session id shown on the right
const views = new Map();            // session id -> chat view (kept while listed: sends finish)
const online = new Map();           // session id -> {unsub, online: bool|undefined, student}

// ------------------------------------------------------------------ connection

const indicator = connIndicator($('conn'), $('banner'));
const client = connect({
  getToken: pageGetToken,
  onState(state) {
    indicator(state);
    if (state === 'online' && client.user && !me) start(client.user);
  },
});

function start(user) {
  renderWho(els.who, user);
  if (user.role !== 'agent' && user.role !== 'admin') {
    showMessage('forbidden', `The support console is for agents. You are signed in as ${user.name} (${user.role}).`);
    client.close();
    return;
  }
  me = user;
  const fail = (err) => showMessage(err.code, errorText(err));
  client.subscribe('chat.listSessions', { scope: 'support', status: 'waiting' }, (v) => { waiting = v; render(); }, fail);
  client.subscribe('chat.listSessions', { scope: 'support', status: 'active' }, (v) => { active = v; render(); }, fail);
  client.subscribe('chat.listSessions', { scope: 'support', status: 'ended', limit: 20 }, (v) => { ended = v; render(); }, fail);
}

function showMessage(code, text) {
  els.message.replaceChildren(h('strong', null, code === 'forbidden' ? 'No access.' : 'Cannot show the console.'), ' ',
    h('span', { id: 'message-text' }, text), ' ',
    h('a', { class: 'button', href: signInHref() }, 'Sign in as an agent'));
  els.message.dataset.code = code || '';
  els.message.hidden = false;
}

let toastTimer = null;
function toast(text) {
  setText(els.toast, text);
  els.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { els.toast.hidden = true; }, 4000);
}

// ------------------------------------------------------------------ lists

function byId(id) {
  return waiting.find((r) => r._id === id) || active.find((r) => r._id === id) || ended.find((r) => r._id === id) || null;
}

function mineOf() { return active.filter((r) => r.assigned_to === me.id); }

function waitedText(since, now = Date.now()) {
  const t = parseTime(since);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

function dot(id) {
  const st = online.get(id)?.online;
  return h('span', {
    class: `dot ${st ? 'online' : 'offline'}`, dataset: { online: String(!!st) },
    title: st ? 'Online' : 'Not here', 'aria-label': st ? 'online' : 'offline',
  });
}

function item(row, extra) {
  const li = h('li', { dataset: { sessionId: row._id }, class: row._id === selected ? 'selected' : null },
    h('button', { type: 'button', class: 'chat-item', onclick: () => select(row._id) },
      h('span', { class: 'line' }, dot(row._id), h('span', { class: 'name' }, row.student_name), extra),
      h('span', { class: 'preview' }, row.last_message ?? 'No message yet')));
  return li;
}

function render() {
  if (!me) return;
  // The queue, oldest first: who waited longest is served first.
  const queue = [...waiting].sort((a, b) => a.created_at.localeCompare(b.created_at));
  els.queue.replaceChildren(...queue.map((r) => item(r, h('span', { class: 'wait', dataset: { since: r.created_at } }, waitedText(r.created_at)))));
  const mine = mineOf();
  els.mine.replaceChildren(...mine.map((r) => {
    const n = r._id === selected && document.visibilityState === 'visible' ? 0 : unreadCount(r, me.id);
    return item(r, h('span', { class: 'unread', hidden: n === 0, 'aria-label': `${n} unread` }, String(n)));
  }));
  const others = active.filter((r) => r.assigned_to !== me.id);
  els.others.replaceChildren(...others.map((r) => item(r, h('span', { class: 'muted small' }, r.assigned_name || r.assigned_to))));
  els.ended.replaceChildren(...ended.filter((r) => r.assigned_to === me.id).slice(0, 10).map((r) => item(r, null)));
  setText(els.queueCount, queue.length);
  setText(els.mineCount, mine.length);
  setText(els.othersCount, others.length);
  els.queueEmpty.hidden = queue.length > 0;
  els.mineEmpty.hidden = mine.length > 0;
  const unread = mine.reduce((n, r) => n + unreadCount(r, me.id), 0);
  document.title = (queue.length || unread ? `(${queue.length}${unread ? ` · ${unread} unread` : ''}) ` : '') + baseTitle;
  watchPresence([...queue, ...mine]);
  dropGoneViews();
  renderHead();
}

// Presence dots: one small subscription per chat listed (at most 40).
function watchPresence(rows) {
  const want = new Map(rows.slice(0, 40).map((r) => [r._id, r]));
  for (const [id, w] of online) {
    if (!want.has(id)) { w.unsub(); online.delete(id); }
  }
  for (const [id, r] of want) {
    if (online.has(id)) continue;
    const w = { online: undefined, unsub: null };
    online.set(id, w);
    w.unsub = client.subscribe('presence.listPresence', { scope: `chat:${id}` }, (people) => {
      const st = people.some((p) => p.user_id === r.student_id && p.online);
      if (st !== w.online) {
        w.online = st;
        for (const d of document.querySelectorAll(`li[data-session-id="${CSS.escape(id)}"] .dot`)) {
          d.className = `dot ${st ? 'online' : 'offline'}`;
          d.dataset.online = String(st);
          d.title = st ? 'Online' : 'Not here';
        }
      }
    }, () => {});
  }
}

function dropGoneViews() {
  for (const [id, v] of views) {
    if (id !== selected && !byId(id)) { v.destroy(); views.delete(id); }
  }
}

// ------------------------------------------------------------------ the conversation

function writable(row) {
  if (row.status === 'ended') return { ok: false, reason: 'This chat has ended.' };
  if (row.status === 'waiting') return { ok: false, reason: 'Claim this chat to answer it.' };
  if (row.assigned_to !== me.id && me.role !== 'admin') {
    return { ok: false, reason: `${row.assigned_name || row.assigned_to} is answering this chat.` };
  }
  return { ok: true };
}

function select(id) {
  const row = byId(id);
  if (!row) return;
  if (selected && views.has(selected)) views.get(selected).show(false);
  selected = id;
  let v = views.get(id);
  if (!v) {
    v = createChatView({ client, session: row, me, writable, emptyText: 'No messages yet.' });
    views.set(id, v);
  }
  els.placeholder.hidden = true;
  els.body.replaceChildren(v.el);
  v.show(true);
  if (writable(row).ok) v.focus();
  render();
}

function renderHead() {
  const row = selected ? byId(selected) : null;
  els.head.hidden = !row;
  els.conv.dataset.sessionId = row?._id || '';
  if (!row) return;
  views.get(row._id)?.update(row);
  setText(els.name, row.student_name);
  setText(els.status, row.status === 'active' && row.assigned_to !== me.id ? `active · ${row.assigned_name || row.assigned_to}` : row.status);
  els.status.className = `status c-${row.status}`;
  els.claim.hidden = row.status !== 'waiting';
  els.end.hidden = row.status === 'ended' || !(row.status === 'waiting' || row.assigned_to === me.id || me.role === 'admin');
  tickWaited();
}

function tickWaited() {
  const row = selected ? byId(selected) : null;
  setText(els.waited, row?.status === 'waiting' ? `waiting ${waitedText(row.created_at)}` : '');
}

els.claim.addEventListener('click', async () => {
  const id = selected;
  els.claim.disabled = true;
  try {
    await client.call('chat.assignAgent', { session_id: id });
    views.get(id)?.focus();
  } catch (e) {
    toast(e.code === 'conflict' ? 'Another agent took this chat.' : errorText(e));
  } finally {
    els.claim.disabled = false;
  }
});

els.end.addEventListener('click', async () => {
  const id = selected;
  if (!id || !confirm('End this chat? Its transcript is archived and the student can start a new one.')) return;
  try {
    await client.call('chat.endChat', { session_id: id });
  } catch (e) {
    toast(errorText(e));
  }
});

// Waiting times tick every second (text only).
setInterval(() => {
  const now = Date.now();
  for (const el of els.queue.querySelectorAll('.wait')) setText(el, waitedText(el.dataset.since, now));
  tickWaited();
}, 1000);

document.addEventListener('visibilitychange', () => { if (me) render(); });

if (!storedToken() && !storedDemoUser()) {
  client.close();
  setText($('conn'), 'Not signed in');
  showMessage('unauthenticated', 'Sign in as an agent to answer support chats.');
}
