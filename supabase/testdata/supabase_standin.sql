-- A minimal stand-in for what a Supabase project has before our migrations
-- run, so that they can be tested on a plain PostgreSQL: the API roles, the
-- auth schema's claim readers, pgcrypto's schema, pg_net's net.http_post
-- (which queues the request, as the real one does, with no worker to send
-- it), the Vault's decrypted_secrets, and the platform's exams table in the
-- shape supabase/migrations/…_invigil_exams_hook.sql assumes.

-- Roles as Supabase makes them: PostgREST switches to anon or authenticated
-- by the token's role; the service role bypasses row-level security.
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
grant usage on schema public to anon, authenticated, service_role;
-- Supabase grants the API roles everything on what is created in public;
-- row-level security and explicit revokes are what protect a table.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

-- auth.uid() and auth.jwt() as supabase/auth defines them
-- (migrations 20211202183645 and 20220531120530): both read the claims that
-- PostgREST puts in request.jwt.claims for each request.
create schema auth;
grant usage on schema auth to anon, authenticated, service_role;
create function auth.uid() returns uuid language sql stable as $$
  select nullif(
    coalesce(
      current_setting('request.jwt.claim.sub', true),
      (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')
    ),
    ''
  )::uuid
$$;
create function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

-- Supabase installs extensions such as pgcrypto in this schema.
create schema extensions;
grant usage on schema extensions to anon, authenticated, service_role;

-- pg_net: the same signature and queue table as supabase/pg_net's
-- sql/pg_net.sql. The body is queued as convert_to(body::text, 'UTF8'),
-- exactly what the real function stores and its worker sends.
create schema net;
create table net.http_request_queue (
  id                   bigserial primary key,
  method               text not null,
  url                  text not null,
  headers              jsonb,
  body                 bytea,
  timeout_milliseconds int not null
);
create function net.http_post(
  url text,
  body jsonb default '{}'::jsonb,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int default 5000
) returns bigint language plpgsql security definer as $$
declare
  request_id bigint;
begin
  if params <> '{}'::jsonb then
    raise exception 'stand-in net.http_post: params are not supported';
  end if;
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
  values ('POST', url, headers, convert_to(body::text, 'UTF8'), timeout_milliseconds)
  returning id into request_id;
  return request_id;
end
$$;
revoke all on schema net from public;

-- Vault: secrets are read through vault.decrypted_secrets; create_secret has
-- the real one's signature (here nothing is encrypted).
create schema vault;
create table vault.secrets (
  id          uuid primary key default gen_random_uuid(),
  name        text unique,
  description text not null default '',
  secret      text not null,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);
create view vault.decrypted_secrets as
  select id, name, description, secret, secret as decrypted_secret, created_at, updated_at
  from vault.secrets;
create function vault.create_secret(new_secret text, new_name text default null,
  new_description text default '', new_key_id uuid default null) returns uuid
  language sql as $$
  insert into vault.secrets (name, description, secret) values (new_name, new_description, new_secret)
  returning id
$$;
revoke all on schema vault from public;

-- The platform's exams table, in the shape invigil.exam_payload assumes.
-- Tutors may edit their own exams through PostgREST, so the hook must work
-- when the writer is authenticated, not only the service role.
create table public.exams (
  id          uuid primary key default gen_random_uuid(),
  title       text not null,
  description text,
  tutor_id    uuid,
  quiz_code   text,
  status      text not null default 'draft',
  starts_at   timestamptz,
  ends_at     timestamptz,
  student_ids uuid[],
  updated_at  timestamptz not null default now()
);
grant select, insert, update, delete on public.exams to authenticated, service_role;
-- As the README recommends: updated_at follows every update.
create extension moddatetime with schema extensions;
create trigger exams_updated_at before update on public.exams
  for each row execute procedure extensions.moddatetime(updated_at);
