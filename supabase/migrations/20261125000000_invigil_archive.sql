-- invigil's archive in Supabase (CONTRACT §6): chat transcripts and one
-- proctoring summary per session. invigil writes them with the service role
-- (which bypasses row-level security); browsers only read, as RLS allows.

create table if not exists public.chat_messages (
  id             text primary key,          -- invigil's message _id
  session_id     text not null,
  scope          text not null check (scope in ('support', 'exam')),
  exam_id        text,
  student_id     uuid,
  client_msg_id  text,
  sender_id      uuid not null,
  sender_name    text not null,
  sender_role    text not null check (sender_role in ('student', 'tutor', 'agent', 'admin')),
  body           text not null check (char_length(body) <= 4000),
  attachments    jsonb not null default '[]'::jsonb,
  read_by        uuid[] not null default '{}',
  created_at     timestamptz not null,
  archived_at    timestamptz not null default now()
);
create index if not exists chat_messages_session on public.chat_messages (session_id, created_at);
create index if not exists chat_messages_student on public.chat_messages (student_id, created_at);

create table if not exists public.proctoring_summaries (
  exam_id            text not null,
  student_id         uuid not null,
  status             text not null check (status in ('active', 'disconnected', 'submitted')),
  started_at         timestamptz not null,
  ended_at           timestamptz,
  duration_s         integer not null check (duration_s >= 0),
  violation_count    integer not null check (violation_count >= 0),
  violations_by_type jsonb not null default '{}'::jsonb,
  disconnects        integer not null default 0 check (disconnects >= 0),
  archived_at        timestamptz not null default now(),
  primary key (exam_id, student_id)
);

alter table public.chat_messages enable row level security;
alter table public.proctoring_summaries enable row level security;

-- The role comes from app_metadata, which only the service role can write;
-- user_metadata is the user's own and never grants anything.
create or replace function public.invigil_role() returns text
  language sql stable as $$
  select coalesce(auth.jwt() -> 'app_metadata' ->> 'role', 'student')
$$;

-- A student reads their own transcripts and summaries; staff read all.
drop policy if exists "read own or staff" on public.chat_messages;
create policy "read own or staff" on public.chat_messages for select to authenticated
  using (student_id = auth.uid() or sender_id = auth.uid()
         or public.invigil_role() in ('tutor', 'agent', 'admin'));

drop policy if exists "read own or staff" on public.proctoring_summaries;
create policy "read own or staff" on public.proctoring_summaries for select to authenticated
  using (student_id = auth.uid() or public.invigil_role() in ('tutor', 'admin'));

-- No insert, update or delete policies: only invigil (service role) writes.
