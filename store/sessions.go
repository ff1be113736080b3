package store

import (
	"context"
	"database/sql"
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

// Session is one student's live proctoring session in one exam.
type Session struct {
	ID              string         `json:"_id"`
	ExamID          string         `json:"exam_id"`
	StudentID       string         `json:"student_id"`
	StudentName     string         `json:"student_name"`
	Status          string         `json:"status"`
	CurrentQuestion int            `json:"current_question"`
	AnsweredCount   int            `json:"answered_count"`
	ViolationCount  int            `json:"violation_count"`
	LastViolation   *LastViolation `json:"last_violation"`
	LastHeartbeat   string         `json:"last_heartbeat"`
	StartedAt       string         `json:"started_at"`
	EndedAt         *string        `json:"ended_at"`
	Disconnects     int            `json:"-"`
	Network         *string        `json:"-"`
	ByType          string         `json:"-"` // JSON {violation type: count}
}

// LastViolation is the newest violation's type and server time.
type LastViolation struct {
	Type      string `json:"type"`
	CreatedAt string `json:"created_at"`
}

// Violation is one reported violation.
type Violation struct {
	ID          string  `json:"_id"`
	ExamID      string  `json:"exam_id"`
	StudentID   string  `json:"student_id"`
	StudentName string  `json:"student_name"`
	Type        string  `json:"type"`
	Detail      string  `json:"detail"`
	ClientTS    *string `json:"client_ts"`
	CreatedAt   string  `json:"created_at"`
}

const sessionColumns = `id, exam_id, student_id, student_name, status, current_question, answered_count,
	violation_count, last_violation_type, last_violation_at, last_heartbeat, started_at, ended_at,
	disconnects, network, violations_by_type`

func scanSession(sc interface{ Scan(...any) error }) (Session, error) {
	var (
		s              Session
		lvType, lvAt   sql.NullString
		ended, network sql.NullString
	)
	err := sc.Scan(&s.ID, &s.ExamID, &s.StudentID, &s.StudentName, &s.Status, &s.CurrentQuestion,
		&s.AnsweredCount, &s.ViolationCount, &lvType, &lvAt, &s.LastHeartbeat, &s.StartedAt, &ended,
		&s.Disconnects, &network, &s.ByType)
	if err != nil {
		return Session{}, err
	}
	if lvType.Valid {
		s.LastViolation = &LastViolation{Type: lvType.String, CreatedAt: lvAt.String}
	}
	if ended.Valid {
		s.EndedAt = &ended.String
	}
	if network.Valid {
		s.Network = &network.String
	}
	return s, nil
}

// Session reads one session; ErrNotFound if the student has none in the exam.
func (r *Reader) Session(ctx context.Context, examID, studentID string) (Session, error) {
	s, err := scanSession(r.q.QueryRowContext(ctx,
		`SELECT `+sessionColumns+` FROM exam_sessions WHERE exam_id = ? AND student_id = ?`, examID, studentID))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("read session %s/%s: %w", examID, studentID, err)
	}
	return s, nil
}

// ExamSessions reads an exam's sessions sorted by student name.
func (r *Reader) ExamSessions(ctx context.Context, examID string) ([]Session, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT `+sessionColumns+` FROM exam_sessions
		WHERE exam_id = ? ORDER BY student_name, student_id`, examID)
	if err != nil {
		return nil, fmt.Errorf("read sessions of %s: %w", examID, err)
	}
	defer rows.Close()
	out := []Session{}
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("scan session: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Violations reads an exam's newest violations, or one student's when
// studentID is not empty.
func (r *Reader) Violations(ctx context.Context, examID, studentID string, limit int) ([]Violation, error) {
	query := `SELECT id, exam_id, student_id, student_name, type, detail, client_ts, created_at
		FROM violations WHERE exam_id = ?`
	args := []any{examID}
	if studentID != "" {
		query += ` AND student_id = ?`
		args = append(args, studentID)
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := r.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read violations of %s: %w", examID, err)
	}
	defer rows.Close()
	out := []Violation{}
	for rows.Next() {
		var (
			v  Violation
			ts sql.NullString
		)
		if err := rows.Scan(&v.ID, &v.ExamID, &v.StudentID, &v.StudentName, &v.Type, &v.Detail, &ts, &v.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan violation: %w", err)
		}
		if ts.Valid {
			v.ClientTS = &ts.String
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// SessionKey names one session.
type SessionKey struct{ ExamID, StudentID string }

// SilentSessions lists active sessions whose last heartbeat is before cutoff.
func (r *Reader) SilentSessions(ctx context.Context, cutoff time.Time) ([]SessionKey, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT exam_id, student_id FROM exam_sessions
		WHERE status = 'active' AND last_heartbeat < ?`, FormatTime(cutoff))
	if err != nil {
		return nil, fmt.Errorf("read silent sessions: %w", err)
	}
	defer rows.Close()
	var out []SessionKey
	for rows.Next() {
		var k SessionKey
		if err := rows.Scan(&k.ExamID, &k.StudentID); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// StartSession creates the student's session, or makes an existing one
// active again (a reload or a new tab joins the same session).
func (tx *Tx) StartSession(ctx context.Context, examID, studentID, name string) (Session, error) {
	now := FormatTime(tx.now)
	_, err := tx.tx.ExecContext(ctx, `
		INSERT INTO exam_sessions (exam_id, student_id, id, student_name, status, last_heartbeat, started_at)
		VALUES (?, ?, ?, ?, 'active', ?, ?)
		ON CONFLICT (exam_id, student_id) DO UPDATE SET
			status = 'active', student_name = excluded.student_name, last_heartbeat = excluded.last_heartbeat`,
		examID, studentID, NewID("s_", tx.now), name, now, now)
	if err != nil {
		return Session{}, fmt.Errorf("start session %s/%s: %w", examID, studentID, err)
	}
	return tx.Reader().Session(ctx, examID, studentID)
}

// Heartbeat records progress and makes the session active.
func (tx *Tx) Heartbeat(ctx context.Context, examID, studentID string, question, answered int, network *string) error {
	_, err := tx.tx.ExecContext(ctx, `UPDATE exam_sessions SET status = 'active', current_question = ?,
		answered_count = ?, network = coalesce(?, network), last_heartbeat = ?
		WHERE exam_id = ? AND student_id = ?`,
		question, answered, network, FormatTime(tx.now), examID, studentID)
	if err != nil {
		return fmt.Errorf("heartbeat %s/%s: %w", examID, studentID, err)
	}
	return nil
}

// SetSessionStatus moves a session to status. Becoming disconnected counts a
// disconnect; becoming submitted sets ended_at.
func (tx *Tx) SetSessionStatus(ctx context.Context, examID, studentID, status string) error {
	_, err := tx.tx.ExecContext(ctx, `UPDATE exam_sessions SET status = ?,
		disconnects = disconnects + (? = 'disconnected'),
		ended_at = CASE WHEN ? = 'submitted' THEN ? ELSE ended_at END
		WHERE exam_id = ? AND student_id = ?`,
		status, status, status, FormatTime(tx.now), examID, studentID)
	if err != nil {
		return fmt.Errorf("set session %s/%s %s: %w", examID, studentID, status, err)
	}
	return nil
}

// AddViolation counts a violation on its session and, when keepDetail, stores
// its row. The count stays exact whether or not the row is kept.
func (tx *Tx) AddViolation(ctx context.Context, v Violation, keepDetail bool) (Violation, error) {
	v.CreatedAt = FormatTime(tx.now)
	v.ID = NewID("v_", tx.now)
	path := `$."` + v.Type + `"` // types come from a fixed list of identifiers
	_, err := tx.tx.ExecContext(ctx, `UPDATE exam_sessions SET violation_count = violation_count + 1,
		violations_by_type = json_set(violations_by_type, ?, coalesce(json_extract(violations_by_type, ?), 0) + 1),
		last_violation_type = ?, last_violation_at = ? WHERE exam_id = ? AND student_id = ?`,
		path, path, v.Type, v.CreatedAt, v.ExamID, v.StudentID)
	if err != nil {
		return Violation{}, fmt.Errorf("count violation %s/%s: %w", v.ExamID, v.StudentID, err)
	}
	if !keepDetail {
		return v, nil
	}
	_, err = tx.tx.ExecContext(ctx, `INSERT INTO violations
		(id, exam_id, student_id, student_name, type, detail, client_ts, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.ExamID, v.StudentID, v.StudentName, v.Type, v.Detail, v.ClientTS, v.CreatedAt)
	if err != nil {
		return Violation{}, fmt.Errorf("store violation %s/%s: %w", v.ExamID, v.StudentID, err)
	}
	return v, nil
}

// DeleteSession removes a session and its violations.
func (tx *Tx) DeleteSession(ctx context.Context, examID, studentID string) error {
	for _, q := range []string{
		`DELETE FROM violations WHERE exam_id = ? AND student_id = ?`,
		`DELETE FROM exam_sessions WHERE exam_id = ? AND student_id = ?`,
	} {
		if _, err := tx.tx.ExecContext(ctx, q, examID, studentID); err != nil {
			return fmt.Errorf("delete session %s/%s: %w", examID, studentID, err)
		}
	}
	return nil
}
