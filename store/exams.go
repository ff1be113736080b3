package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Exam is an exam as Supabase registered it.
type Exam struct {
	ID         string
	Title      string
	TutorIDs   []string
	StudentIDs []string // nil: any student may join while open
	QuizCode   string
	Status     string
	StartsAt   string
	EndsAt     string
	UpdatedAt  string // when invigil applied it
	// SourceUpdatedAt is the row's updated_at in Supabase (TimeFormat), ""
	// when the delivery carried none.
	SourceUpdatedAt string
}

// UpsertExam registers or replaces an exam. A delivery whose
// SourceUpdatedAt is older than the one already applied changes nothing:
// applied reports whether it took effect.
func (tx *Tx) UpsertExam(e Exam) (applied bool, err error) {
	tutors, err := json.Marshal(nonNil(e.TutorIDs))
	if err != nil {
		return false, err
	}
	var students any
	if e.StudentIDs != nil {
		b, err := json.Marshal(e.StudentIDs)
		if err != nil {
			return false, err
		}
		students = string(b)
	}
	res, err := tx.exec(`
		INSERT INTO exams (id, title, tutor_ids, student_ids, quiz_code, status, starts_at, ends_at, updated_at, source_updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET title = excluded.title, tutor_ids = excluded.tutor_ids,
			student_ids = excluded.student_ids, quiz_code = excluded.quiz_code, status = excluded.status,
			starts_at = excluded.starts_at, ends_at = excluded.ends_at, updated_at = excluded.updated_at,
			source_updated_at = coalesce(excluded.source_updated_at, exams.source_updated_at)
		WHERE excluded.source_updated_at IS NULL OR exams.source_updated_at IS NULL
			OR excluded.source_updated_at >= exams.source_updated_at`,
		e.ID, e.Title, string(tutors), students, nullString(e.QuizCode), e.Status,
		nullString(e.StartsAt), nullString(e.EndsAt), FormatTime(tx.now), nullString(e.SourceUpdatedAt))
	if err != nil {
		return false, fmt.Errorf("upsert exam %s: %w", e.ID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Exam reads one exam; ErrNotFound if it is not registered.
func (r *Reader) Exam(ctx context.Context, id string) (Exam, error) {
	var (
		e                                    Exam
		tutors                               string
		students, quiz, starts, ends, source sql.NullString
	)
	err := r.q.QueryRowContext(r.ctx(ctx), `
		SELECT id, title, tutor_ids, student_ids, quiz_code, status, starts_at, ends_at, updated_at, source_updated_at
		FROM exams WHERE id = ?`, id).
		Scan(&e.ID, &e.Title, &tutors, &students, &quiz, &e.Status, &starts, &ends, &e.UpdatedAt, &source)
	if errors.Is(err, sql.ErrNoRows) {
		return Exam{}, ErrNotFound
	}
	if err != nil {
		return Exam{}, fmt.Errorf("read exam %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(tutors), &e.TutorIDs); err != nil {
		return Exam{}, fmt.Errorf("exam %s tutor_ids: %w", id, err)
	}
	if students.Valid {
		e.StudentIDs = []string{}
		if err := json.Unmarshal([]byte(students.String), &e.StudentIDs); err != nil {
			return Exam{}, fmt.Errorf("exam %s student_ids: %w", id, err)
		}
	}
	e.QuizCode, e.StartsAt, e.EndsAt, e.SourceUpdatedAt = quiz.String, starts.String, ends.String, source.String
	return e, nil
}

// Exam reads one exam from the reader pool.
func (db *DB) Exam(ctx context.Context, id string) (Exam, error) {
	return db.reader().Exam(ctx, id)
}

// ClaimHook records a webhook id; it reports false if the id was seen
// before, in which case the hook must change nothing.
func (tx *Tx) ClaimHook(id string) (bool, error) {
	res, err := tx.exec(`INSERT INTO hook_receipts (id, received_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
		id, FormatTime(tx.now))
	if err != nil {
		return false, fmt.Errorf("claim hook %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// PurgeHookReceipts forgets webhook ids older than before. Deliveries that
// old are refused by their timestamp anyway.
func (tx *Tx) PurgeHookReceipts(before time.Time) (int64, error) {
	res, err := tx.exec(`DELETE FROM hook_receipts WHERE received_at < ?`, FormatTime(before))
	if err != nil {
		return 0, fmt.Errorf("purge hook receipts: %w", err)
	}
	return res.RowsAffected()
}

// ExamsToRemind lists, inside a write, the exams not closed whose starts_at
// is in (from, to] and that have not been reminded for that starts_at.
func (tx *Tx) ExamsToRemind(from, to time.Time) ([]Exam, error) {
	rows, err := tx.tx.QueryContext(tx.ctx, `SELECT id FROM exams
		WHERE status != 'closed' AND starts_at > ? AND starts_at <= ?
			AND (reminded_for IS NULL OR reminded_for != starts_at)
		ORDER BY starts_at, id`, FormatTime(from), FormatTime(to))
	if err != nil {
		return nil, fmt.Errorf("read exams to remind: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]Exam, 0, len(ids))
	for _, id := range ids {
		e, err := tx.Reader().Exam(tx.ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// MarkReminded records that the exam's reminder for startsAt is enqueued.
func (tx *Tx) MarkReminded(examID, startsAt string) error {
	_, err := tx.exec(`UPDATE exams SET reminded_for = ? WHERE id = ?`, startsAt, examID)
	if err != nil {
		return fmt.Errorf("mark exam %s reminded: %w", examID, err)
	}
	return nil
}

// PurgeClosedExams deletes exams closed before cutoff that have no session
// left (retention purges sessions only after their archive reached
// Supabase), and returns their ids.
// When chat merges: also require that no chat_sessions row has the exam's id.
func (tx *Tx) PurgeClosedExams(before time.Time) ([]string, error) {
	rows, err := tx.tx.QueryContext(tx.ctx, `DELETE FROM exams WHERE status = 'closed' AND updated_at < ?
		AND NOT EXISTS (SELECT 1 FROM exam_sessions s WHERE s.exam_id = exams.id)
		AND NOT EXISTS (SELECT 1 FROM chat_sessions c WHERE c.exam_id = exams.id) RETURNING id`, FormatTime(before))
	if err != nil {
		return nil, fmt.Errorf("purge closed exams: %w", err)
	}
	return collectRows(rows, func(sc scanner) (string, error) {
		var id string
		err := sc.Scan(&id)
		return id, err
	})
}
