// One chat conversation, shared by the agent console (/support), the
// student's chat widget (exam room, support) and the tutor's panel on
// /proctor/{exam_id}. Built on invigil.js; text only (common.js h()).
//
// Subscriptions while the view lives:
//   chat.getMessages     {session_id, limit: 100}  -> the messages (deltas)
//   presence.listPresence {scope: chat:<id>}        -> who is here, who types
//
// Behaviour:
// - Optimistic send: a message shows at once, marked pending, with its own
//   client_msg_id; it is confirmed when the server's row with that id shows
//   in getMessages. A call lost with the socket ('disconnected') is sent
//   again with the same client_msg_id once the client is back online (the
//   server stores it once); calls made while offline wait in invigil.js's
//   queue. Pending messages are kept in localStorage, so a reload sends them
//   too. rate_limited waits retry_after_ms; other errors mark the message
//   failed, with Retry and Discard.
// - Ticks on one's own messages: pending (clock), sent (✓), read (✓✓, once
//   read_by names someone).
// - markRead up to the newest message of the others while the view is shown
//   and the page visible.
// - Typing: chat.setTyping true on input (again every TYPING_REFRESH_MS while
//   typing), false after TYPING_IDLE_MS without a keystroke; the others'
//   flags show as "<name> is typing…". Presence: the socket enters the
//   chat's scope when the view is first shown (presence.touchPresence: an
//   agent stays present in each chat they opened), again after every
//   reconnect (a new socket carries nothing).
//
// Stable hooks for tests: .chat-view[data-session-id], .chat-log .msg
// (data-client-msg-id, data-id once stored, classes mine / theirs /
// pending / failed), .msg .tick (data-state: pending | sent | read |
// failed), .chat-typing (text), .chat-people .person (data-user-id,
// data-online), .chat-composer textarea, .chat-send, .chat-note.

import { h, setText, errorText, fmtClock } from '/static/common.js';

const TYPING_REFRESH_MS = 2500; // under INVIGIL_TYPING_TTL (6 s by default)
const TYPING_IDLE_MS = 3000;
const MAX_BODY = 4000;
const PAGE = 100;

function newClientMsgId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return 'm-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 10);
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function storageKey(sessionId, userId) { return `invigil.chat.pending.${sessionId}.${userId}`; }

function loadPending(key) {
  try {
    const v = JSON.parse(localStorage.getItem(key) || '[]');
    return Array.isArray(v) ? v.filter((p) => p && typeof p.client_msg_id === 'string' && typeof p.body === 'string') : [];
  } catch { return []; }
}

function savePending(key, list) {
  try {
    if (list.length) localStorage.setItem(key, JSON.stringify(list));
    else localStorage.removeItem(key);
  } catch { /* private mode */ }
}

/** Who is typing, as a sentence ("" when nobody). */
export function typingText(names) {
  if (!names.length) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

/** Unread messages for userId in a chat row (message_count and read_up_to). */
export function unreadCount(row, userId) {
  if (!row) return 0;
  const mark = row.read_up_to?.[userId] ?? 0;
  if (row.last_sender_id === userId) return 0; // they wrote last: seen
  return Math.max(0, (row.message_count || 0) - mark);
}

/**
 * createChatView({client, session, me, writable, emptyText}) -> view
 *   session: the chat row (listSessions / startChat); view.update(row) takes newer ones.
 *   me: {id, name, role}.
 *   writable(row) -> {ok: bool, reason: string}: whether the composer is open.
 * view: {el, update(row), show(visible), send(text), destroy()}
 */
export function createChatView({ client, session, me, writable = () => ({ ok: true }), emptyText = 'No messages yet.' }) {
  let row = session;
  const sid = session._id;
  const key = storageKey(sid, me.id);
  let messages = [];            // the server's, in order
  let loaded = false;
  const byClientId = new Map(); // client_msg_id -> server message (mine)
  const pending = new Map();    // client_msg_id -> {client_msg_id, body, at, state, error}
  let people = [];
  let visible = false;
  let destroyed = false;
  let lastMarked = 0;           // the seq this view last marked read
  let marking = false;
  const drawn = new WeakMap();  // message row -> its item
  let entered = false;          // the socket entered the chat's presence scope

  // ---------------------------------------------------------------- DOM
  const peopleEl = h('div', { class: 'chat-people', 'aria-label': 'People in this chat' });
  const log = h('ol', { class: 'chat-log', 'aria-live': 'polite', 'aria-label': 'Messages' });
  const empty = h('p', { class: 'chat-empty muted' }, 'Loading…');
  const typingEl = h('div', { class: 'chat-typing', 'aria-live': 'polite' });
  const input = h('textarea', { rows: '2', maxlength: String(MAX_BODY), placeholder: 'Write a message…', 'aria-label': 'Message' });
  const sendBtn = h('button', { type: 'submit', class: 'primary chat-send' }, 'Send');
  const counter = h('span', { class: 'chat-count muted small' });
  const note = h('div', { class: 'chat-note muted small', hidden: true });
  const composer = h('form', { class: 'chat-composer' }, input, h('div', { class: 'chat-actions' }, counter, sendBtn));
  const el = h('section', { class: 'chat-view', dataset: { sessionId: sid } },
    peopleEl, h('div', { class: 'chat-scroll' }, empty, log), typingEl, note, composer);

  // ---------------------------------------------------------------- subscriptions
  const unsubs = [
    client.subscribe('chat.getMessages', { session_id: sid, limit: PAGE }, onMessages, onSubError),
    client.subscribe('presence.listPresence', { scope: `chat:${sid}` }, onPeople, () => {}),
  ];
  const offState = client.onStateChange((st) => {
    if (st === 'online' && entered) enterScope(); // a new socket carries no presence
  });
  const onVisibility = () => { if (document.visibilityState === 'visible') markSeen(); };
  document.addEventListener('visibilitychange', onVisibility);

  function onSubError(err) {
    setText(empty, errorText(err, { forbidden: 'You cannot see this chat.', not_found: 'This chat no longer exists.' }));
    empty.hidden = false;
  }

  function onMessages(list) {
    messages = list;
    loaded = true;
    byClientId.clear();
    for (const m of list) {
      if (m.sender_id === me.id) byClientId.set(m.client_msg_id, m);
    }
    // Confirmed: the server has them.
    let changed = false;
    for (const id of [...pending.keys()]) {
      if (byClientId.has(id)) { pending.delete(id); changed = true; }
    }
    if (changed) persist();
    if (!lastMarked) {
      for (const m of list) {
        if (m.sender_id !== me.id && m.read_by.includes(me.id)) lastMarked = Math.max(lastMarked, m.seq);
      }
    }
    render();
    markSeen();
  }

  function onPeople(rows) {
    people = rows;
    renderPeople();
  }

  // ---------------------------------------------------------------- rendering
  function tick(state, title) {
    const text = { pending: '…', sent: '✓', read: '✓✓', failed: '!' }[state];
    return h('span', { class: `tick t-${state}`, dataset: { state }, title }, text);
  }

  function nameOf(id) {
    return people.find((p) => p.user_id === id)?.display_name || id;
  }

  function messageEl(m) {
    const mine = m.sender_id === me.id;
    let t = null;
    if (mine) {
      t = m.read_by.length
        ? tick('read', 'Read by ' + m.read_by.map(nameOf).join(', '))
        : tick('sent', 'Delivered');
    }
    const li = h('li', { class: `msg ${mine ? 'mine' : 'theirs'}`, dataset: { id: m._id, clientMsgId: m.client_msg_id, seq: m.seq } },
      mine ? null : h('div', { class: 'msg-from' }, m.sender_name, ' ', h('span', { class: `role role-${m.sender_role}` }, m.sender_role)),
      h('div', { class: 'msg-body' }, m.body),
      attachmentsEl(m.attachments),
      h('div', { class: 'msg-meta' }, h('time', { datetime: m.created_at }, fmtClock(m.created_at)), t));
    return li;
  }

  function attachmentsEl(list) {
    if (!Array.isArray(list) || !list.length) return null;
    return h('ul', { class: 'msg-files' }, list.map((a) => {
      let safe = null;
      try { const u = new URL(a.url); if (u.protocol === 'https:') safe = u.href; } catch { /* not a URL */ }
      const label = `${a.name} (${fmtSize(a.size)})`;
      return h('li', null, safe ? h('a', { href: safe, target: '_blank', rel: 'noopener noreferrer' }, label) : label);
    }));
  }

  function pendingEl(p) {
    const failed = p.state === 'failed';
    const li = h('li', { class: `msg mine ${failed ? 'failed' : 'pending'}`, dataset: { clientMsgId: p.client_msg_id } },
      h('div', { class: 'msg-body' }, p.body),
      h('div', { class: 'msg-meta' },
        failed ? h('span', { class: 'error-text' }, errorText(p.error, { conflict: 'The chat has ended: not sent.' })) : h('span', null, p.state === 'queued' ? 'Waiting for the connection…' : 'Sending…'),
        tick(failed ? 'failed' : 'pending', failed ? 'Not sent' : 'Not confirmed yet')));
    if (failed) {
      li.append(h('div', { class: 'msg-retry' },
        h('button', { type: 'button', class: 'small', onclick: () => { p.state = 'sending'; p.error = null; deliver(p); } }, 'Retry'),
        h('button', { type: 'button', class: 'small', onclick: () => { pending.delete(p.client_msg_id); persist(); render(); } }, 'Discard')));
    }
    return li;
  }

  function render() {
    const scroller = log.parentElement;
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    // Rows keep their identity while unchanged (invigil.js): so do their items.
    const items = messages.map((m) => {
      let li = drawn.get(m);
      if (!li) { li = messageEl(m); drawn.set(m, li); }
      return li;
    });
    const waiting = [...pending.values()].sort((a, b) => a.at - b.at);
    for (const p of waiting) items.push(pendingEl(p));
    log.replaceChildren(...items);
    empty.hidden = items.length > 0;
    if (!items.length) setText(empty, loaded ? emptyText : 'Loading…');
    if (atBottom || waiting.length) scroller.scrollTop = scroller.scrollHeight;
    renderComposer();
  }

  function renderPeople() {
    const others = people.filter((p) => p.user_id !== me.id);
    peopleEl.replaceChildren(...others.map((p) => h('span', {
      class: `person ${p.online ? 'online' : 'offline'}`, dataset: { userId: p.user_id, online: String(p.online) },
      title: p.online ? 'Online' : `Last seen ${fmtClock(p.last_seen)}`,
    }, h('span', { class: 'dot', 'aria-hidden': 'true' }), p.display_name, h('span', { class: 'sr-only' }, p.online ? ' (online)' : ' (offline)'))));
    peopleEl.hidden = others.length === 0;
    setText(typingEl, typingText(others.filter((p) => p.is_typing).map((p) => p.display_name)));
  }

  function renderComposer() {
    const w = writable(row);
    composer.hidden = !w.ok;
    note.hidden = w.ok || !w.reason;
    setText(note, w.reason || '');
    const n = [...input.value].length;
    setText(counter, n > MAX_BODY - 500 ? `${n} / ${MAX_BODY}` : '');
    sendBtn.disabled = !input.value.trim() || n > MAX_BODY;
  }

  function fmtSize(n) {
    if (!(n >= 0)) return '?';
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  // ---------------------------------------------------------------- sending
  function persist() {
    savePending(key, [...pending.values()].map(({ client_msg_id, body, at }) => ({ client_msg_id, body, at })));
  }

  async function deliver(p) {
    for (let tries = 0; !destroyed && pending.get(p.client_msg_id) === p; tries++) {
      p.state = client.state === 'online' ? 'sending' : 'queued';
      render();
      try {
        await client.call('chat.sendMessage', { session_id: sid, body: p.body, client_msg_id: p.client_msg_id });
        // Confirmed by the call; the row arrives with getMessages (maybe already did).
        if (byClientId.has(p.client_msg_id)) { pending.delete(p.client_msg_id); persist(); render(); }
        return;
      } catch (e) {
        if (e.code === 'closed') return;
        if (e.code === 'disconnected' || (e.code === 'internal' && tries < 10)) {
          // It may or may not have arrived: the same client_msg_id again is
          // safe. (While offline the call waits in invigil.js's queue.)
          await sleep(Math.min(5000, 300 * (tries + 1)));
          continue;
        }
        if (e.code === 'rate_limited') { await sleep(e.retryAfterMs ?? 1000); continue; }
        p.state = 'failed';
        p.error = e;
        render();
        return;
      }
    }
  }

  function send(text) {
    const body = String(text ?? '').trim(); // edges only: line breaks inside stay
    if (!body.trim() || [...body].length > MAX_BODY) return false;
    const p = { client_msg_id: newClientMsgId(), body, at: Date.now(), state: 'sending', error: null };
    pending.set(p.client_msg_id, p);
    persist();
    stopTyping(false); // the server clears the flag with the message
    render();
    deliver(p);
    return true;
  }

  composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (send(input.value)) { input.value = ''; renderComposer(); }
    input.focus();
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      composer.requestSubmit();
    }
  });

  // ---------------------------------------------------------------- typing
  let typingSentAt = 0;
  let idleTimer = null;
  function typingCall(typing) {
    if (client.state !== 'online' || !writable(row).ok) return; // never queue stale typing flags
    client.call('chat.setTyping', { session_id: sid, typing }).catch(() => {});
  }
  function stopTyping(tell = true) {
    clearTimeout(idleTimer);
    idleTimer = null;
    if (typingSentAt && tell) typingCall(false);
    typingSentAt = 0;
  }
  input.addEventListener('input', () => {
    renderComposer();
    if (!input.value.trim()) { stopTyping(); return; }
    if (Date.now() - typingSentAt > TYPING_REFRESH_MS) {
      typingSentAt = Date.now();
      typingCall(true);
    }
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => stopTyping(), TYPING_IDLE_MS);
  });
  input.addEventListener('blur', () => { if (typingSentAt) stopTyping(); });

  // ---------------------------------------------------------------- reading, presence
  async function markSeen() {
    if (!visible || marking || document.visibilityState !== 'visible' || !writable(row).ok) return;
    let newest = null;
    for (const m of messages) if (m.sender_id !== me.id && m.seq > lastMarked) newest = m;
    if (!newest || client.state !== 'online') return;
    marking = true;
    let ok = false;
    try {
      await client.call('chat.markRead', { session_id: sid, up_to_message_id: newest._id });
      lastMarked = Math.max(lastMarked, newest.seq);
      ok = true;
    } catch { /* tried again with the next change */ } finally {
      marking = false;
    }
    // Newer ones came while the receipt was on its way.
    if (ok && messages.some((m) => m.sender_id !== me.id && m.seq > lastMarked)) markSeen();
  }

  function enterScope() {
    entered = true;
    if (client.state === 'online') client.call('presence.touchPresence', { scope: `chat:${sid}` }).catch(() => {});
  }

  // Pending messages left by an earlier visit (a reload): send them again.
  for (const p of loadPending(key)) {
    const q = { client_msg_id: p.client_msg_id, body: p.body, at: p.at || Date.now(), state: 'queued', error: null };
    pending.set(q.client_msg_id, q);
    deliver(q);
  }
  render();

  return {
    el,
    get session() { return row; },
    update(next) {
      row = next;
      if (!writable(row).ok) stopTyping();
      renderComposer();
      markSeen();
    },
    show(on) {
      const was = visible;
      visible = !!on;
      if (visible && !was) { enterScope(); markSeen(); }
      if (!visible) stopTyping();
    },
    send,
    focus() { input.focus(); },
    destroy() {
      destroyed = true;
      stopTyping();
      for (const u of unsubs) u();
      offState();
      document.removeEventListener('visibilitychange', onVisibility);
      el.remove();
    },
  };
}
