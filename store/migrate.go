package store

import (
	"context"
	"database/sql"
	"fmt"
)

// upgrades[v] brings a database from schema version v to v+1. Version 0 is
// the schema of invigil's first release (no user_version set). A new
// database gets schema.sql, which is always the latest version, and skips
// them all. Append; never edit a step that has shipped.
var upgrades = []string{
	// 0 → 1: exam hooks carry Supabase's updated_at; startSession is no
	// heartbeat; violations carry the client's id for retries.
	`ALTER TABLE exams ADD COLUMN source_updated_at TEXT;
	 ALTER TABLE exam_sessions ADD COLUMN last_beat_at TEXT;
	 ALTER TABLE violations ADD COLUMN client_id TEXT;
	 CREATE UNIQUE INDEX IF NOT EXISTS violations_client_id ON violations (exam_id, student_id, client_id)
	   WHERE client_id IS NOT NULL;
	 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
	 INSERT OR IGNORE INTO meta (key, value) VALUES ('health', '');`,
	// 1 → 2: the kids' leaderboard (issue 9), and exams found by quiz code.
	`CREATE TABLE IF NOT EXISTS leaderboard_entries (
	   id            TEXT PRIMARY KEY,
	   submission_id TEXT NOT NULL UNIQUE,
	   quiz_code     TEXT NOT NULL,
	   exam_id       TEXT NOT NULL,
	   nickname      TEXT NOT NULL,
	   score         REAL NOT NULL,
	   max_score     REAL NOT NULL,
	   submitted_at  TEXT NOT NULL,
	   received_at   TEXT NOT NULL,
	   CHECK (score >= 0 AND max_score > 0 AND score <= max_score)
	 );
	 CREATE INDEX IF NOT EXISTS leaderboard_rank ON leaderboard_entries (quiz_code, score DESC, submitted_at, id);
	 CREATE INDEX IF NOT EXISTS exams_by_quiz_code ON exams (quiz_code);`,
	// 2 → 3 (issue 10): expiry, retention, reminders, outbox delivery
	// bookkeeping, jobs_meta. Then link the summaries already queued to
	// their sessions, and date the archive of sessions already delivered
	// (a submitted session with no item left was delivered and purged).
	`ALTER TABLE exam_sessions ADD COLUMN expired_at TEXT;
	 ALTER TABLE exam_sessions ADD COLUMN archived_at TEXT;
	 CREATE INDEX IF NOT EXISTS exam_sessions_archived ON exam_sessions (archived_at) WHERE archived_at IS NOT NULL;
	 ALTER TABLE exams ADD COLUMN reminded_for TEXT;
	 ALTER TABLE outbox ADD COLUMN sink TEXT NOT NULL DEFAULT 'supabase';
	 ALTER TABLE outbox ADD COLUMN msg_id TEXT;
	 ALTER TABLE outbox ADD COLUMN ref_table TEXT;
	 ALTER TABLE outbox ADD COLUMN ref_id TEXT;
	 ALTER TABLE outbox ADD COLUMN last_status INTEGER;
	 ALTER TABLE outbox ADD COLUMN rejected_at TEXT;
	 CREATE INDEX IF NOT EXISTS outbox_ref ON outbox (ref_table, ref_id) WHERE ref_table IS NOT NULL;
	 CREATE TABLE IF NOT EXISTS jobs_meta (
	   name             TEXT PRIMARY KEY,
	   every_ms         INTEGER NOT NULL,
	   runs             INTEGER NOT NULL DEFAULT 0,
	   failures         INTEGER NOT NULL DEFAULT 0,
	   last_started_at  TEXT,
	   last_finished_at TEXT,
	   last_duration_ms INTEGER,
	   last_rows        INTEGER,
	   last_error       TEXT,
	   last_ok_at       TEXT
	 );
	 UPDATE outbox SET ref_table = 'exam_sessions', ref_id = (SELECT s.id FROM exam_sessions s
	   WHERE s.exam_id = json_extract(outbox.body, '$[0].exam_id') AND s.student_id = json_extract(outbox.body, '$[0].student_id'))
	   WHERE target = 'proctoring_summaries' AND json_valid(body);
	 UPDATE exam_sessions SET archived_at = coalesce(
	   (SELECT max(o.delivered_at) FROM outbox o WHERE o.ref_table = 'exam_sessions' AND o.ref_id = exam_sessions.id), ended_at)
	   WHERE status = 'submitted' AND NOT EXISTS (SELECT 1 FROM outbox o
	     WHERE o.ref_table = 'exam_sessions' AND o.ref_id = exam_sessions.id AND o.delivered_at IS NULL);`,
	// 3 → 4: heartbeats no longer pay for an index on last_heartbeat (the
	// silence sweep, every few seconds, scans instead).
	`DROP INDEX IF EXISTS exam_sessions_active;`,
	// 4 → 5: chat sessions, messages, read receipts and presence (issue 8).
	`CREATE TABLE IF NOT EXISTS chat_sessions (
	   id              TEXT PRIMARY KEY,
	   scope           TEXT NOT NULL CHECK (scope IN ('support', 'exam')),
	   exam_id         TEXT,
	   student_id      TEXT NOT NULL,
	   student_name    TEXT NOT NULL,
	   assigned_to     TEXT,
	   assigned_name   TEXT,
	   status          TEXT NOT NULL CHECK (status IN ('waiting', 'active', 'ended')),
	   created_at      TEXT NOT NULL,
	   activity_at     TEXT NOT NULL,
	   last_message_at TEXT,
	   last_seq        INTEGER NOT NULL DEFAULT 0,
	   last_sender_id  TEXT,
	   last_preview    TEXT,
	   ended_at        TEXT,
	   transcript_outbox_id INTEGER
	 );

	 CREATE INDEX IF NOT EXISTS chat_sessions_by_scope ON chat_sessions (scope, activity_at);
	 CREATE INDEX IF NOT EXISTS chat_sessions_by_status ON chat_sessions (scope, status, activity_at);
	 CREATE INDEX IF NOT EXISTS chat_sessions_by_exam ON chat_sessions (exam_id, activity_at) WHERE exam_id IS NOT NULL;
	 CREATE INDEX IF NOT EXISTS chat_sessions_by_student ON chat_sessions (student_id, activity_at);
	 CREATE INDEX IF NOT EXISTS chat_sessions_ended ON chat_sessions (status, ended_at);

	 CREATE TABLE IF NOT EXISTS chat_messages (
	   id            TEXT PRIMARY KEY,
	   session_id    TEXT NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
	   seq           INTEGER NOT NULL,
	   client_msg_id TEXT NOT NULL,
	   sender_id     TEXT NOT NULL,
	   sender_name   TEXT NOT NULL,
	   sender_role   TEXT NOT NULL,
	   body          TEXT NOT NULL,
	   attachments   TEXT NOT NULL DEFAULT '[]',
	   created_at    TEXT NOT NULL,
	   UNIQUE (session_id, seq),
	   UNIQUE (session_id, sender_id, client_msg_id)
	 );

	 CREATE TABLE IF NOT EXISTS chat_reads (
	   session_id TEXT NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
	   user_id    TEXT NOT NULL,
	   up_to_seq  INTEGER NOT NULL,
	   read_at    TEXT NOT NULL,
	   PRIMARY KEY (session_id, user_id)
	 ) WITHOUT ROWID;

	 CREATE TABLE IF NOT EXISTS presence (
	   scope        TEXT NOT NULL,
	   user_id      TEXT NOT NULL,
	   display_name TEXT NOT NULL,
	   role         TEXT NOT NULL,
	   online       INTEGER NOT NULL,
	   last_seen    TEXT NOT NULL,
	   typing_until TEXT,
	   PRIMARY KEY (scope, user_id)
	 ) WITHOUT ROWID;

	 CREATE INDEX IF NOT EXISTS presence_typing ON presence (typing_until) WHERE typing_until IS NOT NULL;
	 CREATE INDEX IF NOT EXISTS presence_seen ON presence (last_seen);`,
}

// SchemaVersion is the version schema.sql describes.
func SchemaVersion() int { return len(upgrades) }

// migrate gives a new database the schema, and upgrades an older one in
// place, one step per transaction.
func migrate(ctx context.Context, db *sql.DB, schema string) error {
	var version, tables int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'exams'`).Scan(&tables); err != nil {
		return fmt.Errorf("store: inspect schema: %w", err)
	}
	if tables == 0 {
		return step(ctx, db, schema, SchemaVersion())
	}
	if version > SchemaVersion() {
		return fmt.Errorf("store: the database is at schema version %d, newer than this invigil (%d): run a newer release", version, SchemaVersion())
	}
	for v := version; v < SchemaVersion(); v++ {
		if err := step(ctx, db, upgrades[v], v+1); err != nil {
			return fmt.Errorf("store: upgrade schema %d → %d: %w", v, v+1, err)
		}
	}
	return nil
}

// step runs sql and records version in one transaction.
func step(ctx context.Context, db *sql.DB, sqlText string, version int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, sqlText); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, version)); err != nil {
		return err
	}
	return tx.Commit()
}
