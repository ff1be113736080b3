package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Session statuses.
const (
	StatusActive       = "active"
	StatusDisconnected = "disconnected"
	StatusSubmitted    = "submitted"
)

// Session is one student's live proctoring session in one exam, as stored.
type Session struct {
	ID              string
	ExamID          string
	StudentID       string
	StudentName     string
	Status          string
	CurrentQuestion int
	AnsweredCount   int
	ViolationCount  int
	LastViolationType,
	LastViolationAt string // "" when none
	LastHeartbeat string // last sign of life: a start or a heartbeat
	LastBeatAt    string // last heartbeat call, "" before the first
	StartedAt     string
	EndedAt       string // "" while not submitted
	Disconnects   int
	Network       string // JSON of the last heartbeat's network report, "" when none
	ByType        string // JSON {violation type: count}
	ExpiredAt     string // "" unless the stale-session job expired it (final, shown disconnected)
	ArchivedAt    string // "" until every outbox item about it reached Supabase
}

// Violation is one reported violation.
type Violation struct {
	ID          string
	ExamID      string
	StudentID   string
	StudentName string
	Type        string
	Detail      string
	ClientTS    string // "" when the client sent none
	ClientID    string // "" when the client sent none
	CreatedAt   string
}

const sessionColumns = `id, exam_id, student_id, student_name, status, current_question, answered_count,
	violation_count, coalesce(last_violation_type, ''), coalesce(last_violation_at, ''), last_heartbeat,
	coalesce(last_beat_at, ''), started_at, coalesce(ended_at, ''), disconnects, coalesce(network, ''),
	violations_by_type, coalesce(expired_at, ''), coalesce(archived_at, '')`

func scanSession(sc scanner) (Session, error) {
	var s Session
	err := sc.Scan(&s.ID, &s.ExamID, &s.StudentID, &s.StudentName, &s.Status, &s.CurrentQuestion,
		&s.AnsweredCount, &s.ViolationCount, &s.LastViolationType, &s.LastViolationAt, &s.LastHeartbeat,
		&s.LastBeatAt, &s.StartedAt, &s.EndedAt, &s.Disconnects, &s.Network, &s.ByType, &s.ExpiredAt, &s.ArchivedAt)
	return s, err
}

const violationColumns = `id, exam_id, student_id, student_name, type, detail, coalesce(client_ts, ''),
	coalesce(client_id, ''), created_at`

func scanViolation(sc scanner) (Violation, error) {
	var v Violation
	err := sc.Scan(&v.ID, &v.ExamID, &v.StudentID, &v.StudentName, &v.Type, &v.Detail, &v.ClientTS, &v.ClientID, &v.CreatedAt)
	return v, err
}

// Session reads one session; ErrNotFound if the student has none in the exam.
func (r *Reader) Session(ctx context.Context, examID, studentID string) (Session, error) {
	ctx = r.ctx(ctx)
	s, err := scanSession(r.stmt(ctx, r.stmts.session).QueryRowContext(ctx, examID, studentID))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("read session %s/%s: %w", examID, studentID, err)
	}
	return s, nil
}

// Session reads one session from the reader pool.
func (db *DB) Session(ctx context.Context, examID, studentID string) (Session, error) {
	return db.reader().Session(ctx, examID, studentID)
}

// ExamSessions reads an exam's sessions sorted by student name.
func (db *DB) ExamSessions(ctx context.Context, examID string) ([]Session, error) {
	return collect(ctx, db.rstmts.examSessions, scanSession, examID)
}

// SessionsByID reads the exam's sessions among ids (a list's changed rows).
func (db *DB) SessionsByID(ctx context.Context, examID string, ids []string) ([]Session, error) {
	b, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	return collect(ctx, db.rstmts.sessionsByID, scanSession, examID, string(b))
}

// Violations reads an exam's newest violations, or one student's when
// studentID is not empty, newest first.
func (db *DB) Violations(ctx context.Context, examID, studentID string, limit int) ([]Violation, error) {
	return db.reader().Violations(ctx, examID, studentID, limit)
}

// Violations reads as DB.Violations does, in this reader's snapshot.
func (r *Reader) Violations(ctx context.Context, examID, studentID string, limit int) ([]Violation, error) {
	ctx = r.ctx(ctx)
	if studentID == "" {
		return collect(ctx, r.stmt(ctx, r.stmts.examViolations), scanViolation, examID, limit)
	}
	return collect(ctx, r.stmt(ctx, r.stmts.studentViolations), scanViolation, examID, studentID, limit)
}

// ViolationsByID reads the exam's violations among ids.
func (db *DB) ViolationsByID(ctx context.Context, examID string, ids []string) ([]Violation, error) {
	b, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	return collect(ctx, db.rstmts.violationsByID, scanViolation, examID, string(b))
}

// collect runs a prepared query and scans every row.
func collect[T any](ctx context.Context, s *sql.Stmt, scan func(scanner) (T, error), args ...any) ([]T, error) {
	rows, err := s.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query: %w", err)
	}
	return collectRows(rows, scan)
}

// SessionKey names one session.
type SessionKey struct{ ExamID, StudentID string }

// SilentSessions lists active sessions whose last sign of life is before cutoff.
func (db *DB) SilentSessions(ctx context.Context, cutoff time.Time) ([]SessionKey, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT exam_id, student_id FROM exam_sessions
		WHERE status = 'active' AND last_heartbeat < ?`, FormatTime(cutoff))
	if err != nil {
		return nil, fmt.Errorf("read silent sessions: %w", err)
	}
	return collectRows(rows, scanSessionKey)
}

func scanSessionKey(sc scanner) (SessionKey, error) {
	var k SessionKey
	err := sc.Scan(&k.ExamID, &k.StudentID)
	return k, err
}

// StartSession creates the student's session, or makes an existing one
// active again (a reload or a new tab joins the same session). It marks the
// student alive but is not a heartbeat: last_beat_at is left alone.
func (tx *Tx) StartSession(examID, studentID, name string) (Session, error) {
	now := FormatTime(tx.now)
	_, err := tx.stmt(tx.db.stmts.startSession).ExecContext(tx.ctx,
		examID, studentID, NewID("s_", tx.now), name, now, now)
	if err != nil {
		return Session{}, fmt.Errorf("start session %s/%s: %w", examID, studentID, err)
	}
	return tx.Reader().Session(tx.ctx, examID, studentID)
}

// Beat records a heartbeat in one statement when the session may take it:
// it exists, is neither submitted nor expired, and, if active, had its last
// heartbeat no later than notAfter. It returns the session as the heartbeat
// left it, and false when it took nothing (read the session to know why:
// the rare path).
func (tx *Tx) Beat(examID, studentID string, question, answered int, network string, notAfter time.Time) (Session, bool, error) {
	var net any
	if network != "" {
		net = network
	}
	now := FormatTime(tx.now)
	sess, err := scanSession(tx.stmt(tx.db.stmts.beat).QueryRowContext(tx.ctx, question, answered, net, now, now,
		examID, studentID, FormatTime(notAfter)))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, false, nil
	}
	if err != nil {
		return Session{}, false, fmt.Errorf("heartbeat %s/%s: %w", examID, studentID, err)
	}
	return sess, true, nil
}

// Heartbeat records progress and makes the session active.
func (tx *Tx) Heartbeat(examID, studentID string, question, answered int, network string) error {
	var net any
	if network != "" {
		net = network
	}
	now := FormatTime(tx.now)
	_, err := tx.stmt(tx.db.stmts.heartbeat).ExecContext(tx.ctx, question, answered, net, now, now, examID, studentID)
	if err != nil {
		return fmt.Errorf("heartbeat %s/%s: %w", examID, studentID, err)
	}
	return nil
}

// SetSessionStatus moves a session to status. Becoming disconnected counts a
// disconnect; becoming submitted sets ended_at.
func (tx *Tx) SetSessionStatus(examID, studentID, status string) error {
	_, err := tx.stmt(tx.db.stmts.setStatus).ExecContext(tx.ctx,
		status, status, status, FormatTime(tx.now), examID, studentID)
	if err != nil {
		return fmt.Errorf("set session %s/%s %s: %w", examID, studentID, status, err)
	}
	return nil
}

// ViolationByClientID finds a violation the client already reported under
// clientID; ErrNotFound if there is none.
func (r *Reader) ViolationByClientID(ctx context.Context, examID, studentID, clientID string) (Violation, error) {
	ctx = r.ctx(ctx)
	v, err := scanViolation(r.q.QueryRowContext(ctx, `SELECT `+violationColumns+` FROM violations
		WHERE exam_id = ? AND student_id = ? AND client_id = ?`, examID, studentID, clientID))
	if errors.Is(err, sql.ErrNoRows) {
		return Violation{}, ErrNotFound
	}
	return v, err
}

// ViolationsSince counts the session's stored violations newer than t.
func (r *Reader) ViolationsSince(ctx context.Context, examID, studentID string, t time.Time) (int, error) {
	var n int
	err := r.q.QueryRowContext(r.ctx(ctx), `SELECT count(*) FROM violations
		WHERE exam_id = ? AND student_id = ? AND created_at > ?`, examID, studentID, FormatTime(t)).Scan(&n)
	return n, err
}

// AddViolation counts a violation on its session and, when keepDetail, stores
// its row. The count stays exact whether or not the row is kept. It returns
// the violation and its session as the write left them.
func (tx *Tx) AddViolation(v Violation, keepDetail bool) (Violation, Session, error) {
	v.CreatedAt = FormatTime(tx.now)
	v.ID = NewID("v_", tx.now)
	path := `$."` + v.Type + `"` // types come from a fixed list of identifiers
	sess, err := scanSession(tx.stmt(tx.db.stmts.countViolation).QueryRowContext(tx.ctx,
		path, path, v.Type, v.CreatedAt, v.ExamID, v.StudentID))
	if errors.Is(err, sql.ErrNoRows) {
		return Violation{}, Session{}, ErrNotFound
	}
	if err != nil {
		return Violation{}, Session{}, fmt.Errorf("count violation %s/%s: %w", v.ExamID, v.StudentID, err)
	}
	if !keepDetail {
		return v, sess, nil
	}
	_, err = tx.stmt(tx.db.stmts.insertViolation).ExecContext(tx.ctx,
		v.ID, v.ExamID, v.StudentID, v.StudentName, v.Type, v.Detail, nullString(v.ClientTS),
		nullString(v.ClientID), v.CreatedAt)
	if err != nil {
		return Violation{}, Session{}, fmt.Errorf("store violation %s/%s: %w", v.ExamID, v.StudentID, err)
	}
	return v, sess, nil
}

// DeleteSession removes a session and its violations.
func (tx *Tx) DeleteSession(examID, studentID string) error {
	for _, q := range []string{
		`DELETE FROM violations WHERE exam_id = ? AND student_id = ?`,
		`DELETE FROM exam_sessions WHERE exam_id = ? AND student_id = ?`,
	} {
		if _, err := tx.exec(q, examID, studentID); err != nil {
			return fmt.Errorf("delete session %s/%s: %w", examID, studentID, err)
		}
	}
	return nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
