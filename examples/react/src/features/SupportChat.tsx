// Support chat (plan §5B, §5C) on useChat: what ChatWidget and
// AgentChatInterface become once RealtimeChatService is gone. One hook
// gives the messages (the user's own shown at once, pending until the
// server has them), read receipts, typing and presence; no channels to
// open, filter or clean up.
//   #/support          a student's or tutor's chat: their open support chat, or "Start a chat"
//   #/support/<id>     one chat (an agent opens it from the queue, and takes it)
import { useEffect, useState, type FormEvent } from 'react';
import { useCall, useChat, useChatSessions, useInvigilUser } from '@invigil/invigil-react.js';
import type { ChatSession } from '@invigil/invigil.js';
import { noteList } from '../testhooks';

export function SupportChat({ sessionId }: { sessionId?: string }) {
  const user = useInvigilUser();
  const chats = useChatSessions({ scope: 'support' });
  const start = useCall('chat.startChat');
  if (chats === undefined) return <p id="loading">Loading chats…</p>;
  const chat = sessionId ? chats.find((c) => c._id === sessionId) : chats.find((c) => c.status !== 'ended');
  if (!chat) {
    if (user?.role === 'agent') return <Queue chats={chats} />;
    return (
      <section id="chat" data-backend="invigil">
        <h1>Support</h1>
        <button id="start" onClick={() => start({ scope: 'support' })}>Start a chat</button>
      </section>
    );
  }
  return <ChatRoom chat={chat} />;
}

function Queue({ chats }: { chats: ChatSession[] }) {
  return (
    <section id="queue" data-backend="invigil">
      <h1>Support queue</h1>
      <ul>
        {chats.map((c) => (
          <li key={c._id} data-status={c.status}>
            <a href={`#/support/${c._id}`}>{c.student_name}</a> · {c.status} · {c.last_message ?? ''}
          </li>
        ))}
      </ul>
    </section>
  );
}

function ChatRoom({ chat }: { chat: ChatSession }) {
  const user = useInvigilUser();
  const { messages, typing, send, retry, markRead, setTyping } = useChat(chat._id);
  const claim = useCall('chat.assignAgent');
  const end = useCall('chat.endChat');
  const [draft, setDraft] = useState('');
  noteList('messages', (messages ?? []).map((m) => m.client_msg_id));

  // Read what arrives while the chat is on screen.
  const newest = messages?.[messages.length - 1];
  useEffect(() => {
    if (newest && !newest.pending && document.visibilityState === 'visible') markRead().catch(() => {});
  }, [newest, markRead]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const body = draft.trim();
    if (!body) return;
    setDraft('');
    send(body).catch(() => {}); // shown at once; a refusal marks the message (retry below)
  };

  return (
    <section id="chat" data-backend="invigil" data-session-id={chat._id} data-status={chat.status}>
      <h1>
        Support · <span id="chat-status">{chat.status}</span>
        {chat.assigned_name && <> · with {chat.assigned_name}</>}
      </h1>
      {user?.role === 'agent' && chat.status === 'waiting' && (
        <button id="claim" onClick={() => claim({ session_id: chat._id })}>Take this chat</button>
      )}
      <ol id="messages">
        {(messages ?? []).map((m) => (
          <li
            key={m.client_msg_id || m._id}
            className="message"
            data-cid={m.client_msg_id}
            data-pending={m.pending ? 'true' : 'false'}
            data-mine={m.sender_id === user?.id ? 'true' : 'false'}
          >
            <b>{m.sender_name}</b>: <span className="body">{m.body}</span>
            {m.pending && !m.error && <small className="state"> sending…</small>}
            {m.error && (
              <button className="retry" onClick={() => retry(m.client_msg_id).catch(() => {})}>Not sent: retry</button>
            )}
            {!m.pending && m.sender_id === user?.id && m.read_by.some((id) => id !== user?.id) && (
              <small className="read"> read</small>
            )}
          </li>
        ))}
      </ol>
      <p id="typing">{typing.length > 0 && `${typing.map((p) => p.display_name).join(', ')} typing…`}</p>
      {chat.status !== 'ended' && (
        <form id="composer" onSubmit={submit}>
          <input
            id="draft"
            value={draft}
            onChange={(e) => {
              setDraft(e.target.value);
              setTyping(e.target.value !== '');
            }}
            onBlur={() => setTyping(false)}
          />
          <button id="send" type="submit">Send</button>
          <button id="end" type="button" onClick={() => end({ session_id: chat._id })}>End chat</button>
        </form>
      )}
    </section>
  );
}
