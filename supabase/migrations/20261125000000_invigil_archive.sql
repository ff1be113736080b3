-- invigil's archive in Supabase (CONTRACT §6): chat transcripts, one
-- proctoring summary per session, and who teaches which exam (filled by the
-- exams hook, 20261125000100_invigil_exams_hook.sql). invigil writes the
-- archive with the service role, through PostgREST upserts
-- (Prefer: resolution=merge-duplicates): chat_messages on id,
-- proctoring_summaries on (exam_id, student_id). Browsers only read, as the
-- policies below allow.
--
-- Re-runnable: every statement may run again on a database that has it.

create table if not exists public.chat_messages (
  id             text primary key,          -- invigil's message _id
  session_id     text not null,
  scope          text not null check (scope in ('support', 'exam')),
  exam_id        text,                      -- set when scope = 'exam'
  student_id     uuid,                      -- the student the chat belongs to
  client_msg_id  text,
  sender_id      uuid not null,
  sender_name    text not null,
  sender_role    text not null check (sender_role in ('student', 'tutor', 'agent', 'admin')),
  body           text not null check (char_length(body) <= 4000),
  attachments    jsonb not null default '[]'::jsonb
                 check (jsonb_typeof(attachments) = 'array'), -- [{url, name, size, mime}]
  read_by        uuid[] not null default '{}',
  created_at     timestamptz not null,
  archived_at    timestamptz not null default now()
);
create index if not exists chat_messages_session on public.chat_messages (session_id, created_at);
create index if not exists chat_messages_student on public.chat_messages (student_id, created_at);
create index if not exists chat_messages_exam on public.chat_messages (exam_id, created_at);

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
create index if not exists proctoring_summaries_student on public.proctoring_summaries (student_id);

-- Who teaches what: the platform's exams table is not invigil's, so the exams
-- trigger keeps this copy of each exam's tutors for the policies below.
create table if not exists public.invigil_exam_tutors (
  exam_id  text not null,
  tutor_id uuid not null,
  primary key (exam_id, tutor_id)
);
create index if not exists invigil_exam_tutors_tutor on public.invigil_exam_tutors (tutor_id, exam_id);

-- Only the service role (invigil, and the exams trigger, which runs as the
-- tables' owner) writes. Supabase grants every role everything on new public
-- tables by default: take it back, then give browsers reading only.
revoke all on public.chat_messages, public.proctoring_summaries, public.invigil_exam_tutors
  from anon, authenticated;
grant select on public.chat_messages, public.proctoring_summaries, public.invigil_exam_tutors
  to authenticated;
grant select, insert, update, delete on public.chat_messages, public.proctoring_summaries,
  public.invigil_exam_tutors to service_role;

alter table public.chat_messages enable row level security;
alter table public.proctoring_summaries enable row level security;
alter table public.invigil_exam_tutors enable row level security;

-- The policies. The role is app_metadata.role, which only the service role can
-- write; user_metadata is the user's own and never grants anything. No role
-- (or an unknown one) grants nothing beyond a student's own rows. auth.uid()
-- and auth.jwt() are wrapped in (select …) so PostgreSQL evaluates them once
-- per statement, not once per row (Supabase's RLS performance advice), and
-- each table has one permissive policy, so a row is judged once.

-- Older versions of this migration had these; they let any tutor read everything.
drop policy if exists "read own or staff" on public.chat_messages;
drop policy if exists "read own or staff" on public.proctoring_summaries;
drop function if exists public.invigil_role();

-- A tutor reads their own rows (the policies below look here as the tutor).
drop policy if exists "invigil: tutors read their exams, admins all" on public.invigil_exam_tutors;
create policy "invigil: tutors read their exams, admins all" on public.invigil_exam_tutors
  for select to authenticated
  using (
    tutor_id = (select auth.uid())
    or (select auth.jwt() -> 'app_metadata' ->> 'role') = 'admin'
  );

-- A student reads their own summaries; a tutor those of the exams they
-- teach; an admin all.
drop policy if exists "invigil: own, taught exams, admins" on public.proctoring_summaries;
create policy "invigil: own, taught exams, admins" on public.proctoring_summaries
  for select to authenticated
  using (
    student_id = (select auth.uid())
    or (select auth.jwt() -> 'app_metadata' ->> 'role') = 'admin'
    or ((select auth.jwt() -> 'app_metadata' ->> 'role') = 'tutor'
        and exam_id in (select t.exam_id from public.invigil_exam_tutors t
                        where t.tutor_id = (select auth.uid())))
  );

-- A student reads their own chats (support and exam rooms); a tutor the exam
-- rooms of the exams they teach, never support chats; an agent support chats,
-- never exam rooms; an admin all.
drop policy if exists "invigil: own, support for agents, taught rooms, admins" on public.chat_messages;
create policy "invigil: own, support for agents, taught rooms, admins" on public.chat_messages
  for select to authenticated
  using (
    student_id = (select auth.uid())
    or (select auth.jwt() -> 'app_metadata' ->> 'role') = 'admin'
    or ((select auth.jwt() -> 'app_metadata' ->> 'role') = 'agent' and scope = 'support')
    or ((select auth.jwt() -> 'app_metadata' ->> 'role') = 'tutor' and scope = 'exam'
        and exam_id in (select t.exam_id from public.invigil_exam_tutors t
                        where t.tutor_id = (select auth.uid())))
  );

-- No insert, update or delete policies, and no such grants: only the service
-- role (which bypasses row-level security) writes.
