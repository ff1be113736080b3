// The chat widget of a student (or any user who asks): a launcher button
// at the bottom right with an unread badge, and a panel with the
// conversation. On /exam/{exam_id} it is the exam room with the exam's
// tutors (scope "exam"); on the start page, support (scope "support").
//
//   chat.listSessions {scope: "support"} or {exam_id}  -> the user's own chats
//   chat.startChat    {scope, exam_id?}                  -> on the first message
//   chat.endChat      {session_id}                       -> "End chat"
// and, for the open chat, what chat.js subscribes.
//
// The first message starts the chat: it shows at once, pending, and goes
// out once the chat exists (startChat is retried like a message: calls
// made while offline wait in invigil.js's queue). Starting again while a
// chat is open returns the same chat, so a retry never makes two.
//
// Stable hooks for tests: #chat-launcher, #chat-unread (text = count,
// hidden at 0), #chat-panel (data-state: none | waiting | active | ended),
// #chat-status, #chat-new, #chat-end, #chat-close, and chat.js's hooks
// inside #chat-panel.

import { h, setText, errorText } from '/static/common.js';
import { createChatView, unreadCount } from '/static/chat.js';

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

/**
 * mountChatWidget({client, me, scope, examId?, title}) -> {open(), close(), destroy()}
 * me: {id, name, role}.
 */
export function mountChatWidget({ client, me, scope, examId, title }) {
  const listArgs = scope === 'exam' ? { exam_id: examId } : { scope: 'support' };
  const startArgs = scope === 'exam' ? { scope: 'exam', exam_id: examId } : { scope: 'support' };

  const unread = h('span', { id: 'chat-unread', class: 'chat-unread', hidden: true, 'aria-label': 'unread messages' });
  const launcher = h('button', { type: 'button', id: 'chat-launcher', class: 'chat-launcher primary', 'aria-expanded': 'false', 'aria-controls': 'chat-panel' },
    title, unread);
  const status = h('div', { id: 'chat-status', class: 'chat-status small', role: 'status' });
  const endBtn = h('button', { type: 'button', id: 'chat-end', class: 'small', hidden: true }, 'End chat');
  const closeBtn = h('button', { type: 'button', id: 'chat-close', class: 'small', 'aria-label': 'Close the chat panel' }, '✕');
  const newBtn = h('button', { type: 'button', id: 'chat-new', class: 'small primary', hidden: true }, 'New chat');
  const body = h('div', { class: 'chat-panel-body' });
  const panel = h('section', { id: 'chat-panel', class: 'chat-panel', hidden: true, dataset: { state: 'none' }, 'aria-label': title },
    h('header', null, h('div', { class: 'chat-panel-title' }, h('strong', null, title), status), newBtn, endBtn, closeBtn),
    body);
  document.body.append(launcher, panel);

  let rows = [];          // the user's chats in this scope, newest activity first
  let current = null;     // the chat shown (row)
  let view = null;
  let open = false;
  let starting = null;    // {text} while startChat runs
  let fresh = false;      // "New chat" pressed: show the composer, not the last ended chat

  const unsub = client.subscribe('chat.listSessions', listArgs, (list) => { rows = list; refresh(); }, (err) => {
    setText(status, errorText(err, { forbidden: 'Chat is not available to you here.' }));
    launcher.disabled = true;
  });

  function pick() {
    if (current) {
      const same = rows.find((r) => r._id === current._id);
      if (same) return same;
    }
    const live = rows.find((r) => r.status !== 'ended');
    if (live) return live;
    return fresh ? null : rows[0] ?? null;
  }

  function writable(row) {
    if (row.status === 'ended') return { ok: false, reason: 'This chat has ended.' };
    return { ok: true };
  }

  function statusText(row) {
    if (!row) return scope === 'exam' ? 'Ask a question: the exam\'s tutors answer here.' : 'Ask us anything: an agent answers here.';
    if (row.status === 'waiting') return scope === 'exam' ? 'Waiting for a tutor…' : 'Waiting for an agent…';
    if (row.status === 'active') return `${row.assigned_name || (scope === 'exam' ? 'A tutor' : 'An agent')} is answering`;
    return 'This chat has ended.';
  }

  function refresh() {
    const row = pick();
    if (row && (!view || view.session._id !== row._id)) {
      view?.destroy();
      view = createChatView({ client, session: row, me, writable, emptyText: 'No messages yet.' });
      body.replaceChildren(view.el);
      view.show(open);
      if (starting) { view.send(starting.text); starting = null; }
      fresh = false;
    } else if (row) {
      view.update(row);
    } else if (!view && !starting) {
      body.replaceChildren(firstComposer());
    }
    current = row;
    panel.dataset.state = row ? row.status : 'none';
    setText(status, statusText(row));
    endBtn.hidden = !row || row.status === 'ended';
    newBtn.hidden = !row || row.status !== 'ended';
    const n = unreadCount(row, me.id);
    setText(unread, n > 9 ? '9+' : String(n));
    unread.hidden = open || n === 0 || !row || row.status === 'ended';
  }

  // Before the chat exists: a composer whose first message starts it.
  let first = null;
  function firstComposer() {
    if (first) return first;
    const input = h('textarea', { rows: '3', maxlength: '4000', placeholder: 'Write your question…', 'aria-label': 'Message' });
    const send = h('button', { type: 'submit', class: 'primary chat-send' }, 'Send');
    const pendingEl = h('ol', { class: 'chat-log' });
    first = h('form', { class: 'chat-first' }, pendingEl, h('div', { class: 'chat-composer' }, input, h('div', { class: 'chat-actions' }, send)));
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); first.requestSubmit(); }
    });
    first.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const text = input.value;
      if (!text.trim() || starting) return;
      input.value = '';
      starting = { text };
      pendingEl.replaceChildren(h('li', { class: 'msg mine pending' }, h('div', { class: 'msg-body' }, text),
        h('div', { class: 'msg-meta' }, h('span', null, 'Starting the chat…'),
          h('span', { class: 'tick t-pending', dataset: { state: 'pending' } }, '…'))));
      await start();
    });
    return first;
  }

  async function start() {
    for (let tries = 0; ; tries++) {
      try {
        const row = await client.call('chat.startChat', startArgs);
        if (!rows.some((r) => r._id === row._id)) rows = [row, ...rows];
        current = row;
        first = null;
        refresh();
        return;
      } catch (e) {
        if (e.code === 'disconnected' || e.code === 'rate_limited' || (e.code === 'internal' && tries < 10)) {
          await sleep(e.retryAfterMs ?? Math.min(5000, 500 * (tries + 1)));
          continue;
        }
        if (first) first.querySelector('.chat-log')?.replaceChildren(h('li', { class: 'msg mine failed' },
          h('div', { class: 'msg-body' }, starting?.text ?? ''), h('div', { class: 'msg-meta error-text' }, errorText(e))));
        starting = null;
        return;
      }
    }
  }

  function setOpen(on) {
    open = on;
    panel.hidden = !on;
    launcher.setAttribute('aria-expanded', String(on));
    view?.show(on);
    refresh();
    if (on) (view?.focus ?? (() => first?.querySelector('textarea')?.focus()))();
  }

  launcher.addEventListener('click', () => setOpen(!open));
  closeBtn.addEventListener('click', () => setOpen(false));
  newBtn.addEventListener('click', () => {
    view?.destroy();
    view = null;
    current = null;
    fresh = true;
    first = null;
    refresh();
    first?.querySelector('textarea')?.focus();
  });
  endBtn.addEventListener('click', async () => {
    if (!current || !confirm('End this chat? You can start a new one at any time.')) return;
    try { await client.call('chat.endChat', { session_id: current._id }); } catch (e) { setText(status, errorText(e)); }
  });

  return {
    open: () => setOpen(true),
    close: () => setOpen(false),
    destroy() {
      unsub();
      view?.destroy();
      launcher.remove();
      panel.remove();
    },
  };
}
