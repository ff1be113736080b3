-- Sends every change of the platform's public.exams to invigil's
-- POST /hooks/exams (CONTRACT §5), signed with Standard Webhooks, and keeps
-- public.invigil_exam_tutors (who teaches what, for row-level security) in step.
--
-- Needs: pg_net (net.http_post), pgcrypto (in schema extensions, as on every
-- Supabase project), Supabase Vault with two secrets:
--   select vault.create_secret('https://invigil.example.org', 'invigil_url');
--   select vault.create_secret('whsec_…', 'invigil_webhook_secret');
-- The one function to adapt to the platform's exams table is
-- invigil.exam_payload below. See supabase/README.md.
--
-- Why a trigger can sign: net.http_post(url, body jsonb, …) queues
-- convert_to(body::text, 'UTF8') and its worker sends those bytes unchanged
-- (supabase/pg_net, sql/pg_net.sql and src/core.c). jsonb's text form is
-- deterministic, so signing payload::text signs exactly the bytes sent.
--
-- pg_net sends once and never retries: invigil.resync_exams() sends again
-- (same webhook ids, so invigil ignores what it already has); schedule it
-- with pg_cron for at-least-once delivery.
--
-- Re-runnable: every statement may run again on a database that has it.

create extension if not exists pgcrypto with schema extensions;
do $$
begin
  -- pg_net's functions live in schema net; a test stand-in may provide them.
  if to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is null then
    create extension if not exists pg_net;
  end if;
end
$$;

-- Private: not exposed by PostgREST, and nobody but the owner may call its
-- functions (the trigger runs them as their owner, security definer).
create schema if not exists invigil;
revoke all on schema invigil from public;

-- RFC 3339 in UTC with microseconds, always six digits
-- ("2026-03-02T09:00:00.000000Z"): fixed width keeps the strings in time
-- order, and updated_at keeps PostgreSQL's full precision.
create or replace function invigil.rfc3339(t timestamptz) returns text
  language sql stable set search_path = '' as $$
  select to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- THE MAPPING: the one place the platform team adapts. It turns a row of
-- public.exams (as to_jsonb(row)) into the body of POST /hooks/exams:
--   {exam_id, title, tutor_ids, quiz_code?, status, starts_at?, ends_at?, student_ids?, updated_at}
-- Assumed columns of public.exams:
--   id          uuid (or text)   the exam's id in invigil
--   title       text
--   tutor_id    uuid             the exam's tutor
--   quiz_code   text, null       the kids' leaderboard code
--   status      text             see the case below
--   starts_at   timestamptz, null
--   ends_at     timestamptz, null
--   student_ids uuid[], null     null: any student may join while open
--   updated_at  timestamptz      bumped on every update (e.g. moddatetime)
-- A missing column reads as null; null fields are left out, as the contract
-- allows. Several tutors per exam, or enrolled students in a table of their
-- own? Select them into tutor_ids / student_ids here.
create or replace function invigil.exam_payload(e jsonb) returns jsonb
  language sql stable set search_path = '' as $$
  select jsonb_strip_nulls(jsonb_build_object(
    'exam_id',     e ->> 'id',
    'title',       e ->> 'title',
    'tutor_ids',   case when e ->> 'tutor_id' is null then '[]'::jsonb
                        else jsonb_build_array(e ->> 'tutor_id') end,
    'quiz_code',   nullif(e ->> 'quiz_code', ''),
    'status',      case lower(e ->> 'status')
                     when 'open'      then 'open'
                     when 'active'    then 'open'
                     when 'live'      then 'open'
                     when 'closed'    then 'closed'
                     when 'ended'     then 'closed'
                     when 'completed' then 'closed'
                     when 'archived'  then 'closed'
                     else 'scheduled'        -- draft, published, scheduled…
                   end,
    'starts_at',   invigil.rfc3339((e ->> 'starts_at')::timestamptz),
    'ends_at',     invigil.rfc3339((e ->> 'ends_at')::timestamptz),
    'student_ids', e -> 'student_ids',
    'updated_at',  invigil.rfc3339((e ->> 'updated_at')::timestamptz)
  ))
$$;

create or replace function invigil.tutor_ids(payload jsonb) returns uuid[]
  language sql immutable set search_path = '' as $$
  select coalesce(array_agg(t::uuid), '{}') from jsonb_array_elements_text(payload -> 'tutor_ids') t
$$;

-- The webhook id names the exam's state: the same state sent twice (a
-- resync, an update of columns invigil does not see) has the same id, which
-- invigil answers with 200 and ignores; any edit makes a new one. updated_at
-- makes it readable in logs; the body's hash covers an edit that did not
-- bump updated_at.
create or replace function invigil.webhook_id(payload jsonb) returns text
  language sql stable set search_path = '' as $$
  select 'exam_' || (payload ->> 'exam_id')
      || '_' || coalesce((extract(epoch from (payload ->> 'updated_at')::timestamptz) * 1000000)::bigint::text, '0')
      || '_' || left(encode(sha256(convert_to(payload::text, 'UTF8')), 'hex'), 12)
$$;

-- Standard Webhooks v1: "v1," || base64(HMAC-SHA256(key, "id.timestamp.body")),
-- where key is the base64 after "whsec_" (a leading "v1," is dropped, as
-- invigil's verifier does).
create or replace function invigil.sign(secret text, msg_id text, ts text, body text) returns text
  language plpgsql immutable set search_path = '' as $$
declare
  k text := btrim(secret, E' \t\r\n');
begin
  if k like 'v1,%' then
    k := substr(k, 4);
  end if;
  if k not like 'whsec\_%' then
    raise exception 'invigil: the webhook secret must look like whsec_<base64>';
  end if;
  k := substr(k, 7);
  k := rpad(k, (length(k) + 3) / 4 * 4, '=');   -- tolerate missing padding
  return 'v1,' || translate(encode(extensions.hmac(
    convert_to(msg_id || '.' || ts || '.' || body, 'UTF8'), decode(k, 'base64'), 'sha256'), 'base64'), E'\n', '');
end
$$;

-- Queues one signed POST /hooks/exams through pg_net; returns its request id,
-- or null with a warning when it cannot (no Vault secrets, a malformed one).
create or replace function invigil.push_exam(payload jsonb) returns bigint
  language plpgsql volatile security definer set search_path = '' as $$
declare
  base_url text;
  secret   text;
  msg_id   text := invigil.webhook_id(payload);
  ts       text := floor(extract(epoch from clock_timestamp()))::bigint::text;
begin
  select decrypted_secret into base_url from vault.decrypted_secrets where name = 'invigil_url';
  select decrypted_secret into secret from vault.decrypted_secrets where name = 'invigil_webhook_secret';
  if base_url is null or secret is null then
    raise warning 'invigil: exam % not sent: set the Vault secrets invigil_url and invigil_webhook_secret',
      payload ->> 'exam_id';
    return null;
  end if;
  return net.http_post(
    url := rtrim(btrim(base_url), '/') || '/hooks/exams',
    body := payload,
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'webhook-id', msg_id,
      'webhook-timestamp', ts,
      -- payload::text is exactly what net.http_post sends (see the top).
      'webhook-signature', invigil.sign(secret, msg_id, ts, payload::text)),
    timeout_milliseconds := 10000);
exception when others then
  raise warning 'invigil: exam % not sent: % (SQLSTATE %)', payload ->> 'exam_id', sqlerrm, sqlstate;
  return null;
end
$$;

-- Makes tutors the exam's whole list in public.invigil_exam_tutors.
create or replace function invigil.set_tutors(exam text, tutors uuid[]) returns void
  language sql volatile security definer set search_path = '' as $$
  delete from public.invigil_exam_tutors where exam_id = exam and tutor_id <> all (tutors);
  insert into public.invigil_exam_tutors (exam_id, tutor_id)
    select exam, unnest(tutors) on conflict do nothing;
$$;

-- The trigger on public.exams. It runs as its owner (security definer): a
-- tutor editing an exam through PostgREST can read neither the Vault nor
-- write who teaches what. It never fails the platform's write: a problem
-- is a warning in the database log (a failed send keeps who teaches what;
-- a row the mapping cannot read changes nothing).
create or replace function invigil.exams_changed() returns trigger
  language plpgsql security definer set search_path = '' as $$
declare
  old_p jsonb;
  new_p jsonb;
begin
  if tg_op <> 'INSERT' then
    old_p := invigil.exam_payload(to_jsonb(old));
  end if;
  if tg_op = 'DELETE' then
    -- A deleted exam closes now, and nobody teaches it any more.
    perform invigil.set_tutors(old_p ->> 'exam_id', '{}');
    new_p := old_p || jsonb_build_object('status', 'closed', 'updated_at', invigil.rfc3339(clock_timestamp()));
  else
    new_p := invigil.exam_payload(to_jsonb(new));
    if old_p ->> 'exam_id' <> new_p ->> 'exam_id' then
      perform invigil.set_tutors(old_p ->> 'exam_id', '{}');
    end if;
    perform invigil.set_tutors(new_p ->> 'exam_id', invigil.tutor_ids(new_p));
    if old_p - 'updated_at' = new_p - 'updated_at' then
      return null;   -- only columns invigil does not see changed
    end if;
  end if;
  perform invigil.push_exam(new_p);
  return null;
exception when others then
  raise warning 'invigil: exams hook (%) failed: % (SQLSTATE %)', tg_op, sqlerrm, sqlstate;
  return null;
end
$$;

-- Sends again every exam not closed, or changed within max_age, and rebuilds
-- who teaches what. Each goes under the id of its state, so invigil ignores
-- those it already has: safe to run every few minutes with pg_cron, which
-- turns pg_net's single try into at-least-once delivery. send => false only
-- rebuilds who teaches what. Returns how many requests it queued.
create or replace function invigil.resync_exams(max_age interval default '1 day', send boolean default true)
  returns integer
  language plpgsql volatile security definer set search_path = '' as $$
declare
  p    jsonb;
  seen text[] := '{}';
  sent integer := 0;
begin
  for p in select invigil.exam_payload(to_jsonb(e)) from public.exams e loop
    seen := seen || (p ->> 'exam_id');
    perform invigil.set_tutors(p ->> 'exam_id', invigil.tutor_ids(p));
    if send and (p ->> 'status' <> 'closed' or (p ->> 'updated_at')::timestamptz > now() - max_age)
       and invigil.push_exam(p) is not null then
      sent := sent + 1;
    end if;
  end loop;
  delete from public.invigil_exam_tutors where exam_id <> all (seen);
  return sent;
end
$$;

revoke execute on all functions in schema invigil from public, anon, authenticated;

do $$
begin
  if to_regclass('public.exams') is null then
    raise exception 'invigil: public.exams not found; adapt invigil.exam_payload and this trigger to the exams table';
  end if;
  -- Fail here, not silently in the trigger, if pgcrypto is not in schema extensions.
  perform invigil.sign('whsec_AAAA', 'check', '0', '{}');
  drop trigger if exists invigil_exams_hook on public.exams;
  create trigger invigil_exams_hook after insert or update or delete on public.exams
    for each row execute function invigil.exams_changed();
  -- Who teaches the exams that exist already; sending them is the operator's
  -- call once the Vault secrets are set: select invigil.resync_exams();
  perform invigil.resync_exams(send => false);
end
$$;
