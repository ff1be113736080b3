-- invigil's live tables: the schema a new database gets, at the latest
-- version (store/migrate.go upgrades older files in place, step by step).
-- Times are RFC 3339 UTC strings with milliseconds, so they sort as text.

-- Small facts about the database itself (the health check writes here).
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('health', '');

-- Exams as registered by Supabase through POST /hooks/exams.
CREATE TABLE IF NOT EXISTS exams (
  id          TEXT PRIMARY KEY,
  title       TEXT NOT NULL,
  tutor_ids   TEXT NOT NULL DEFAULT '[]',  -- JSON array of user ids
  student_ids TEXT,                        -- JSON array, NULL = any student may join while open
  quiz_code   TEXT,
  status      TEXT NOT NULL CHECK (status IN ('scheduled', 'open', 'closed')),
  starts_at   TEXT,
  ends_at     TEXT,
  updated_at  TEXT NOT NULL,               -- when invigil last applied a delivery
  source_updated_at TEXT                   -- the row's updated_at in Supabase, when the hook sent it
);

-- One live proctoring session per student and exam.
CREATE TABLE IF NOT EXISTS exam_sessions (
  exam_id             TEXT NOT NULL,
  student_id          TEXT NOT NULL,
  id                  TEXT NOT NULL UNIQUE,
  student_name        TEXT NOT NULL,
  status              TEXT NOT NULL CHECK (status IN ('active', 'disconnected', 'submitted')),
  current_question    INTEGER NOT NULL DEFAULT 0,
  answered_count      INTEGER NOT NULL DEFAULT 0,
  violation_count     INTEGER NOT NULL DEFAULT 0,  -- exact, even past the stored-details cap
  violations_by_type  TEXT NOT NULL DEFAULT '{}',  -- JSON {type: count}, exact too
  last_violation_type TEXT,
  last_violation_at   TEXT,
  last_heartbeat      TEXT NOT NULL,               -- last sign of life (start or heartbeat)
  last_beat_at        TEXT,                        -- last heartbeat call, for the minimum interval
  started_at          TEXT NOT NULL,
  ended_at            TEXT,
  disconnects         INTEGER NOT NULL DEFAULT 0,
  network             TEXT,                        -- JSON of the last heartbeat's network info
  PRIMARY KEY (exam_id, student_id)
) WITHOUT ROWID;

-- No index on last_heartbeat: every heartbeat would move its entry (a
-- second b-tree written per heartbeat); the silence sweep scans instead.

-- Violations in their own table; a session stores at most a capped number of them.
CREATE TABLE IF NOT EXISTS violations (
  id           TEXT PRIMARY KEY,
  exam_id      TEXT NOT NULL,
  student_id   TEXT NOT NULL,
  student_name TEXT NOT NULL,
  type         TEXT NOT NULL,
  detail       TEXT NOT NULL DEFAULT '',
  client_ts    TEXT,
  created_at   TEXT NOT NULL,
  client_id    TEXT                          -- the client's id for this report: a retry stores nothing new
);

CREATE INDEX IF NOT EXISTS violations_by_exam ON violations (exam_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS violations_by_session ON violations (exam_id, student_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX IF NOT EXISTS violations_client_id ON violations (exam_id, student_id, client_id)
  WHERE client_id IS NOT NULL;

-- Webhook ids already handled: a replayed hook is answered 200 and changes nothing.
CREATE TABLE IF NOT EXISTS hook_receipts (
  id          TEXT PRIMARY KEY,
  received_at TEXT NOT NULL
);

-- What must reach Supabase waits here until Supabase accepted it (CONTRACT §6):
-- written in the same transaction as the change it reports, retried with
-- backoff across restarts, purged only after delivery.
CREATE TABLE IF NOT EXISTS outbox (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  target          TEXT NOT NULL,     -- Supabase table
  on_conflict     TEXT NOT NULL,     -- its upsert key columns
  body            TEXT NOT NULL,     -- JSON array of rows
  created_at      TEXT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT NOT NULL,
  last_error      TEXT,
  delivered_at    TEXT
);

CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, next_attempt_at);

-- ---------------------------------------------------------------------------
-- Kids' leaderboard (issue 9): one entry per graded submission, pushed by
-- Supabase's grade-exam through POST /hooks/scores, read by the projector.
CREATE TABLE IF NOT EXISTS leaderboard_entries (
  id            TEXT PRIMARY KEY,          -- opaque and random: the row's _id, never the submission id
  submission_id TEXT NOT NULL UNIQUE,      -- the platform's submission: one entry each
  quiz_code     TEXT NOT NULL,
  exam_id       TEXT NOT NULL,
  nickname      TEXT NOT NULL,
  score         REAL NOT NULL,
  max_score     REAL NOT NULL,
  submitted_at  TEXT NOT NULL,             -- RFC 3339 UTC, fixed width to the microsecond
  received_at   TEXT NOT NULL,
  CHECK (score >= 0 AND max_score > 0 AND score <= max_score)
);

-- The board's order: the top N of a quiz is the first N entries of this
-- index, read without a sort.
CREATE INDEX IF NOT EXISTS leaderboard_rank ON leaderboard_entries (quiz_code, score DESC, submitted_at, id);

-- Score hooks and the projector find exams by quiz code.
CREATE INDEX IF NOT EXISTS exams_by_quiz_code ON exams (quiz_code);

-- ---------------------------------------------------------------------------
-- Scheduled jobs, expiry, retention, reminders and outbox delivery (issue 10).
-- The same SQL is a step of store/migrate.go's upgrades.

-- A session expired by the stale-session job (its exam is over and it was
-- silent for INVIGIL_STALE_AFTER) keeps status 'disconnected' on the wire;
-- expired_at says it is final. archived_at is when the last outbox item
-- about it reached Supabase: retention purges it INVIGIL_RETENTION later.
ALTER TABLE exam_sessions ADD COLUMN expired_at TEXT;
ALTER TABLE exam_sessions ADD COLUMN archived_at TEXT;
CREATE INDEX IF NOT EXISTS exam_sessions_archived ON exam_sessions (archived_at) WHERE archived_at IS NOT NULL;

-- The starts_at an exam's reminder was enqueued for: never twice.
ALTER TABLE exams ADD COLUMN reminded_for TEXT;

-- Who delivers an item ('supabase': a REST upsert; 'reminder': a signed POST
-- to INVIGIL_REMINDER_URL), the id its receiver deduplicates on (the
-- webhook-id of a signed POST), the row it archives (ref_table, ref_id: that
-- row's archived_at is set once every item about it is delivered), the
-- status of its last answer, and when Supabase refused it for good (a 4xx
-- that retrying will not fix: kept, shown at /api/admin/outbox, retried at
-- the backoff cap).
ALTER TABLE outbox ADD COLUMN sink TEXT NOT NULL DEFAULT 'supabase';
ALTER TABLE outbox ADD COLUMN msg_id TEXT;
ALTER TABLE outbox ADD COLUMN ref_table TEXT;
ALTER TABLE outbox ADD COLUMN ref_id TEXT;
ALTER TABLE outbox ADD COLUMN last_status INTEGER;
ALTER TABLE outbox ADD COLUMN rejected_at TEXT;
CREATE INDEX IF NOT EXISTS outbox_ref ON outbox (ref_table, ref_id) WHERE ref_table IS NOT NULL;

-- What each scheduled job did last (GET /api/admin/jobs).
CREATE TABLE IF NOT EXISTS jobs_meta (
  name             TEXT PRIMARY KEY,
  every_ms         INTEGER NOT NULL,
  runs             INTEGER NOT NULL DEFAULT 0,
  failures         INTEGER NOT NULL DEFAULT 0,
  last_started_at  TEXT,
  last_finished_at TEXT,
  last_duration_ms INTEGER,
  last_rows        INTEGER,
  last_error       TEXT,       -- NULL when the last run succeeded
  last_ok_at       TEXT
);

-- ------------------------------------------------------------------ chat and presence (issue 8)
-- Support chats and exam rooms, their messages, read receipts, and who is
-- present (and typing) where. Presence has its own table and keys: a typing
-- flag never touches a message list.

-- One chat: a support chat (scope 'support') or an exam room (scope 'exam').
CREATE TABLE IF NOT EXISTS chat_sessions (
  id              TEXT PRIMARY KEY,
  scope           TEXT NOT NULL CHECK (scope IN ('support', 'exam')),
  exam_id         TEXT,                        -- exam rooms only
  student_id      TEXT NOT NULL,               -- who started it (the chat is theirs)
  student_name    TEXT NOT NULL,
  assigned_to     TEXT,                        -- the agent (or tutor) answering it
  assigned_name   TEXT,
  status          TEXT NOT NULL CHECK (status IN ('waiting', 'active', 'ended')),
  created_at      TEXT NOT NULL,
  activity_at     TEXT NOT NULL,               -- newest of start, message, claim, end: listSessions' order
  last_message_at TEXT,
  last_seq        INTEGER NOT NULL DEFAULT 0,  -- messages so far (the last one's seq)
  last_sender_id  TEXT,
  last_preview    TEXT,                        -- the last message's start, for lists
  ended_at        TEXT,
  transcript_outbox_id INTEGER                 -- the outbox item carrying the transcript
);

CREATE INDEX IF NOT EXISTS chat_sessions_by_scope ON chat_sessions (scope, activity_at);
CREATE INDEX IF NOT EXISTS chat_sessions_by_status ON chat_sessions (scope, status, activity_at);
CREATE INDEX IF NOT EXISTS chat_sessions_by_exam ON chat_sessions (exam_id, activity_at) WHERE exam_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS chat_sessions_by_student ON chat_sessions (student_id, activity_at);
CREATE INDEX IF NOT EXISTS chat_sessions_ended ON chat_sessions (status, ended_at);

-- Messages, numbered per chat (seq); a sender's client_msg_id is stored once.
CREATE TABLE IF NOT EXISTS chat_messages (
  id            TEXT PRIMARY KEY,
  session_id    TEXT NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
  seq           INTEGER NOT NULL,
  client_msg_id TEXT NOT NULL,
  sender_id     TEXT NOT NULL,
  sender_name   TEXT NOT NULL,
  sender_role   TEXT NOT NULL,
  body          TEXT NOT NULL,
  attachments   TEXT NOT NULL DEFAULT '[]',  -- JSON [{url, name, size, mime}]: references, never bytes
  created_at    TEXT NOT NULL,
  UNIQUE (session_id, seq),
  UNIQUE (session_id, sender_id, client_msg_id)
);

-- Read receipts: each reader's mark (every message up to up_to_seq is read).
CREATE TABLE IF NOT EXISTS chat_reads (
  session_id TEXT NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
  user_id    TEXT NOT NULL,
  up_to_seq  INTEGER NOT NULL,
  read_at    TEXT NOT NULL,
  PRIMARY KEY (session_id, user_id)
) WITHOUT ROWID;

-- Who is present in a scope ('global', 'exam:<id>', 'chat:<id>') and whether
-- they are typing (chat scopes).
CREATE TABLE IF NOT EXISTS presence (
  scope        TEXT NOT NULL,
  user_id      TEXT NOT NULL,
  display_name TEXT NOT NULL,
  role         TEXT NOT NULL,
  online       INTEGER NOT NULL,
  last_seen    TEXT NOT NULL,
  typing_until TEXT,                         -- NULL: not typing
  PRIMARY KEY (scope, user_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS presence_typing ON presence (typing_until) WHERE typing_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS presence_seen ON presence (last_seen);
