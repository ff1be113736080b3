// The tutor's chat panel on /proctor/{exam_id}: the exam's rooms (its
// students' questions) in a drawer, opened from a "Questions" button whose
// badge counts what the tutor has not read. Every tutor of the exam
// answers any room; the first answer claims a waiting room.
//
//   chat.listSessions {exam_id}  -> the rooms, waiting first
// and, for the open room, what chat.js subscribes.
//
// Stable hooks for tests: #questions-button, #questions-unread (hidden at
// 0), #questions (the drawer; data-view: list | chat), #rooms
// li[data-session-id] (.unread, .status), #room-back, and chat.js's hooks.

import { h, setText, errorText, fmtAgo } from '/static/common.js';
import { createChatView, unreadCount } from '/static/chat.js';

/** mountTutorChat({client, examId, me, anchor}): anchor is where the button goes. */
export function mountTutorChat({ client, examId, me, anchor }) {
  const badge = h('span', { id: 'questions-unread', class: 'chat-unread', hidden: true });
  const button = h('button', { type: 'button', id: 'questions-button', class: 'questions-button', 'aria-expanded': 'false', 'aria-controls': 'questions' },
    'Questions', badge);
  anchor.append(button);

  const list = h('ul', { id: 'rooms', class: 'chat-list' });
  const empty = h('p', { class: 'muted small list-empty' }, 'No questions yet. Students ask from their exam page.');
  const back = h('button', { type: 'button', id: 'room-back', class: 'small', hidden: true }, '← All questions');
  const title = h('h2', null, 'Questions');
  const close = h('button', { type: 'button', class: 'small', 'aria-label': 'Close' }, 'Close');
  const end = h('button', { type: 'button', id: 'room-end', class: 'small', hidden: true }, 'End');
  const body = h('div', { class: 'questions-body' }, list, empty);
  const drawer = h('aside', { id: 'questions', class: 'questions', hidden: true, dataset: { view: 'list' }, 'aria-label': 'Questions from students' },
    h('header', null, back, title, h('span', { class: 'spacer' }), end, close), body);
  document.body.append(drawer);

  let rooms = [];
  let open = false;
  let selected = null;
  const views = new Map(); // room id -> chat view

  client.subscribe('chat.listSessions', { exam_id: examId }, (v) => { rooms = v; render(); }, (err) => {
    button.disabled = true;
    button.title = errorText(err);
  });

  const rank = { waiting: 0, active: 1, ended: 2 };
  function render() {
    const sorted = [...rooms].sort((a, b) => (rank[a.status] - rank[b.status])
      || (unreadCount(b, me.id) > 0) - (unreadCount(a, me.id) > 0)
      || (b.last_message_at || b.created_at).localeCompare(a.last_message_at || a.created_at));
    list.replaceChildren(...sorted.map((r) => {
      const n = unreadCount(r, me.id);
      return h('li', { dataset: { sessionId: r._id }, class: r._id === selected ? 'selected' : null },
        h('button', { type: 'button', class: 'chat-item', onclick: () => select(r._id) },
          h('span', { class: 'line' },
            h('span', { class: 'name' }, r.student_name),
            h('span', { class: `status c-${r.status}` }, r.status === 'active' && r.assigned_name ? `${r.assigned_name}` : r.status),
            h('span', { class: 'unread', hidden: n === 0 }, String(n))),
          h('span', { class: 'preview' }, r.last_message ?? ''),
          h('span', { class: 'muted small' }, fmtAgo(r.last_message_at || r.created_at))));
    }));
    empty.hidden = rooms.length > 0;
    const total = rooms.filter((r) => r.status !== 'ended' && !(open && r._id === selected))
      .reduce((n, r) => n + unreadCount(r, me.id), 0);
    setText(badge, total > 99 ? '99+' : String(total));
    badge.hidden = total === 0;
    button.classList.toggle('has-unread', total > 0);
    const row = rooms.find((r) => r._id === selected);
    if (row) views.get(row._id)?.update(row);
    end.hidden = !row || row.status === 'ended';
  }

  function writable(row) {
    if (row.status === 'ended') return { ok: false, reason: 'This question is closed.' };
    return { ok: true };
  }

  function select(id) {
    const row = rooms.find((r) => r._id === id);
    if (!row) return;
    selected = id;
    let v = views.get(id);
    if (!v) {
      v = createChatView({ client, session: row, me, writable });
      views.set(id, v);
    }
    for (const [other, ov] of views) if (other !== id) ov.show(false);
    body.replaceChildren(v.el);
    v.show(open);
    drawer.dataset.view = 'chat';
    back.hidden = false;
    setText(title, row.student_name);
    v.focus();
    render();
  }

  function showList() {
    if (selected) views.get(selected)?.show(false);
    selected = null;
    body.replaceChildren(list, empty);
    drawer.dataset.view = 'list';
    back.hidden = true;
    setText(title, 'Questions');
    render();
  }

  function setOpen(on) {
    open = on;
    drawer.hidden = !on;
    button.setAttribute('aria-expanded', String(on));
    if (selected) views.get(selected)?.show(on);
    render();
  }

  button.addEventListener('click', () => setOpen(!open));
  close.addEventListener('click', () => setOpen(false));
  back.addEventListener('click', showList);
  end.addEventListener('click', async () => {
    if (!selected) return;
    try { await client.call('chat.endChat', { session_id: selected }); } catch (e) { button.title = errorText(e); }
  });
  // Ages ("2 min ago") refresh with the list, and at least every 30 s.
  setInterval(() => { if (open && !selected) render(); }, 30_000);

  return { open: () => setOpen(true) };
}
