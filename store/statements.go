package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// statements are the hot path's SQL, prepared once per connection pool:
// parsing and planning each time cost as much as running them.
type statements struct {
	session           *sql.Stmt
	examSessions      *sql.Stmt
	sessionsByID      *sql.Stmt
	examViolations    *sql.Stmt
	studentViolations *sql.Stmt
	violationsByID    *sql.Stmt
	startSession      *sql.Stmt
	heartbeat         *sql.Stmt
	beat              *sql.Stmt
	setStatus         *sql.Stmt
	countViolation    *sql.Stmt
	insertViolation   *sql.Stmt
	savepoint         *sql.Stmt
	rollbackTo        *sql.Stmt
	release           *sql.Stmt
}

// prepare prepares every statement on p.
func prepare(ctx context.Context, p preparer) (*statements, error) {
	s := &statements{}
	for _, st := range s.list() {
		prepared, err := p.PrepareContext(ctx, st.sql)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("store: prepare %q: %w", st.sql, err)
		}
		*st.dst = prepared
	}
	return s, nil
}

func (s *statements) close() error {
	var errs []error
	for _, st := range s.list() {
		if *st.dst != nil {
			errs = append(errs, (*st.dst).Close())
		}
	}
	return errors.Join(errs...)
}

type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// list pairs each statement with its SQL.
func (s *statements) list() []struct {
	dst **sql.Stmt
	sql string
} {
	return []struct {
		dst **sql.Stmt
		sql string
	}{
		{&s.session, `SELECT ` + sessionColumns + ` FROM exam_sessions WHERE exam_id = ? AND student_id = ?`},
		{&s.examSessions, `SELECT ` + sessionColumns + ` FROM exam_sessions WHERE exam_id = ?
			ORDER BY student_name, student_id`},
		{&s.sessionsByID, sessionsByIDSQL},
		{&s.examViolations, `SELECT ` + violationColumns + ` FROM violations WHERE exam_id = ?
			ORDER BY created_at DESC, id DESC LIMIT ?`},
		{&s.studentViolations, `SELECT ` + violationColumns + ` FROM violations WHERE exam_id = ? AND student_id = ?
			ORDER BY created_at DESC, id DESC LIMIT ?`},
		{&s.violationsByID, violationsByIDSQL},
		{&s.startSession, `INSERT INTO exam_sessions (exam_id, student_id, id, student_name, status, last_heartbeat, started_at)
			VALUES (?, ?, ?, ?, 'active', ?, ?)
			ON CONFLICT (exam_id, student_id) DO UPDATE SET
				status = 'active', student_name = excluded.student_name, last_heartbeat = excluded.last_heartbeat`},
		{&s.heartbeat, `UPDATE exam_sessions SET status = 'active', current_question = ?, answered_count = ?,
			network = coalesce(?, network), last_heartbeat = ?, last_beat_at = ?
			WHERE exam_id = ? AND student_id = ?`},
		{&s.beat, `UPDATE exam_sessions SET status = 'active', current_question = ?, answered_count = ?,
			network = coalesce(?, network), last_heartbeat = ?, last_beat_at = ?
			WHERE exam_id = ? AND student_id = ? AND status <> 'submitted' AND expired_at IS NULL
				AND NOT (status = 'active' AND last_beat_at IS NOT NULL AND last_beat_at > ?)
			RETURNING ` + sessionColumns},
		{&s.setStatus, `UPDATE exam_sessions SET status = ?,
			disconnects = disconnects + (? = 'disconnected'),
			ended_at = CASE WHEN ? = 'submitted' THEN ? ELSE ended_at END
			WHERE exam_id = ? AND student_id = ?`},
		{&s.countViolation, `UPDATE exam_sessions SET violation_count = violation_count + 1,
			violations_by_type = json_set(violations_by_type, ?, coalesce(json_extract(violations_by_type, ?), 0) + 1),
			last_violation_type = ?, last_violation_at = ? WHERE exam_id = ? AND student_id = ?
			RETURNING ` + sessionColumns},
		{&s.savepoint, `SAVEPOINT w`},
		{&s.rollbackTo, `ROLLBACK TO w`},
		{&s.release, `RELEASE w`},
		{&s.insertViolation, `INSERT INTO violations
			(id, exam_id, student_id, student_name, type, detail, client_ts, client_id, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`},
	}
}

// Rows by id (a list's changed rows). The unary + keeps SQLite from
// reading the list's whole key range (the exam's sessions, the quiz's
// entries) and testing each row against the ids: it looks each id up in its
// index instead, so a patch costs the rows it names (TestByIDPlans).
const (
	sessionsByIDSQL = `SELECT ` + sessionColumns + ` FROM exam_sessions
		WHERE id IN (SELECT value FROM json_each(?2)) AND +exam_id = ?1`
	violationsByIDSQL = `SELECT ` + violationColumns + ` FROM violations
		WHERE id IN (SELECT value FROM json_each(?2)) AND +exam_id = ?1`
	leaderboardByIDSQL = `SELECT ` + leaderboardColumns + ` FROM leaderboard_entries
		WHERE id IN (SELECT value FROM json_each(?1)) AND +quiz_code = ?2`
	chatMessagesByIDSQL = `SELECT ` + chatMessageColumns + ` FROM chat_messages m
		WHERE m.id IN (SELECT value FROM json_each(?3)) AND +m.session_id = ?1 AND +m.seq < ?2`
	presenceByIDSQL = `SELECT ` + presenceColumns + ` FROM presence WHERE scope = ?1
		AND user_id IN (SELECT value FROM json_each(?2))`
)

// chatSessionsByIDSQL is ChatSessionsByID's query for a filter's conditions.
func chatSessionsByIDSQL(where string) string {
	return `SELECT ` + chatSessionColumns + ` FROM chat_sessions s
		WHERE s.id IN (SELECT value FROM json_each(?)) AND ` + where
}
