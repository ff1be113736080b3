package store

import (
	"fmt"
	"time"
)

// A session's life after its exam: the stale-session job expires the ones
// nobody submitted, and retention purges every ended session (and its
// violations) INVIGIL_RETENTION after its archive reached Supabase.

// StaleSessions lists, inside a write, at most limit sessions that are
// neither submitted nor expired, whose exam is over (closed, or past its
// ends_at) since before cutoff, and that have been silent since before
// cutoff: cutoff is now less INVIGIL_STALE_AFTER.
func (tx *Tx) StaleSessions(cutoff time.Time, limit int) ([]SessionKey, error) {
	c := FormatTime(cutoff)
	rows, err := tx.tx.QueryContext(tx.ctx, `SELECT s.exam_id, s.student_id FROM exams e
		JOIN exam_sessions s ON s.exam_id = e.id
		WHERE ((e.status = 'closed' AND e.updated_at < ?1) OR (e.ends_at IS NOT NULL AND e.ends_at < ?1))
			AND s.status != 'submitted' AND s.expired_at IS NULL AND s.last_heartbeat < ?1
		ORDER BY s.exam_id, s.student_id LIMIT ?2`, c, limit)
	if err != nil {
		return nil, fmt.Errorf("read stale sessions: %w", err)
	}
	return collectRows(rows, scanSessionKey)
}

// ExpireSession makes a session final: shown disconnected (a disconnect is
// counted if it was still active), ended when it was last seen. It reports
// false if the session is submitted or already expired.
func (tx *Tx) ExpireSession(examID, studentID string) (bool, error) {
	res, err := tx.exec(`UPDATE exam_sessions SET status = 'disconnected',
			disconnects = disconnects + (status = 'active'),
			expired_at = ?, ended_at = coalesce(ended_at, last_heartbeat)
		WHERE exam_id = ? AND student_id = ? AND status != 'submitted' AND expired_at IS NULL`,
		FormatTime(tx.now), examID, studentID)
	if err != nil {
		return false, fmt.Errorf("expire session %s/%s: %w", examID, studentID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// SessionRef names a purged session: its exam, its student and its row id.
type SessionRef struct{ ExamID, StudentID, ID string }

// PurgeArchivedSessions deletes at most limit sessions archived before
// cutoff, with their violations, and returns them. Only an ended session
// (submitted or expired) is ever archived, and only once Supabase accepted
// its summary: nothing leaves before it is delivered.
func (tx *Tx) PurgeArchivedSessions(before time.Time, limit int) ([]SessionRef, error) {
	rows, err := tx.tx.QueryContext(tx.ctx, `SELECT exam_id, student_id, id FROM exam_sessions
		WHERE archived_at IS NOT NULL AND archived_at < ? ORDER BY archived_at LIMIT ?`, FormatTime(before), limit)
	if err != nil {
		return nil, fmt.Errorf("read archived sessions: %w", err)
	}
	var keys []SessionKey
	var out []SessionRef
	for rows.Next() {
		var k SessionKey
		var id string
		if err := rows.Scan(&k.ExamID, &k.StudentID, &id); err != nil {
			rows.Close()
			return nil, err
		}
		keys = append(keys, k)
		out = append(out, SessionRef{ExamID: k.ExamID, StudentID: k.StudentID, ID: id})
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return nil, err
	}
	rows.Close()
	for _, k := range keys {
		if err := tx.DeleteSession(k.ExamID, k.StudentID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// archivedTables are the tables whose rows an outbox item may refer to
// (ref_table): each has an id and an archived_at column, set when the last
// item about the row is delivered, and is purged by its own method.
// When chat merges: add "chat_sessions" (PurgeArchivedChats).
var archivedTables = map[string]bool{
	"exam_sessions": true,
}
