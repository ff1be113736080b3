package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// MicroTimeFormat is TimeFormat to the microsecond, PostgreSQL's precision:
// scores carry Supabase's submitted_at, and two submissions a few
// microseconds apart must not tie on the board.
const MicroTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// FormatMicroTime renders t in MicroTimeFormat, in UTC.
func FormatMicroTime(t time.Time) string { return t.UTC().Format(MicroTimeFormat) }

// LeaderboardEntry is one graded submission on a quiz's board.
type LeaderboardEntry struct {
	ID           string // opaque; what clients see as _id
	SubmissionID string // the platform's; never sent to clients
	QuizCode     string
	ExamID       string
	Nickname     string
	Score        float64
	MaxScore     float64
	SubmittedAt  string // MicroTimeFormat
	ReceivedAt   string // TimeFormat
}

const leaderboardColumns = `id, submission_id, quiz_code, exam_id, nickname, score, max_score, submitted_at, received_at`

func scanLeaderboardEntry(sc scanner) (LeaderboardEntry, error) {
	var e LeaderboardEntry
	err := sc.Scan(&e.ID, &e.SubmissionID, &e.QuizCode, &e.ExamID, &e.Nickname, &e.Score, &e.MaxScore,
		&e.SubmittedAt, &e.ReceivedAt)
	return e, err
}

// AddLeaderboardEntry stores e under a new opaque id, unless its submission
// already has an entry: then it stores nothing and returns that entry with
// added false.
func (tx *Tx) AddLeaderboardEntry(e LeaderboardEntry) (stored LeaderboardEntry, added bool, err error) {
	e.ID, e.ReceivedAt = NewID("e", tx.now), FormatTime(tx.now)
	res, err := tx.exec(`INSERT INTO leaderboard_entries (`+leaderboardColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (submission_id) DO NOTHING`,
		e.ID, e.SubmissionID, e.QuizCode, e.ExamID, e.Nickname, e.Score, e.MaxScore, e.SubmittedAt, e.ReceivedAt)
	if err != nil {
		return LeaderboardEntry{}, false, fmt.Errorf("add leaderboard entry for %s: %w", e.SubmissionID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return e, n == 1, err
	}
	stored, err = scanLeaderboardEntry(tx.tx.QueryRowContext(tx.ctx,
		`SELECT `+leaderboardColumns+` FROM leaderboard_entries WHERE submission_id = ?`, e.SubmissionID))
	if err != nil {
		return LeaderboardEntry{}, false, fmt.Errorf("read leaderboard entry for %s: %w", e.SubmissionID, err)
	}
	return stored, false, nil
}

// ClearLeaderboard removes every entry of a quiz (the demo starts a new
// round with it) and says how many there were.
func (tx *Tx) ClearLeaderboard(quizCode string) (int64, error) {
	res, err := tx.exec(`DELETE FROM leaderboard_entries WHERE quiz_code = ?`, quizCode)
	if err != nil {
		return 0, fmt.Errorf("clear leaderboard %s: %w", quizCode, err)
	}
	return res.RowsAffected()
}

// LeaderboardTop reads a quiz's first n entries in the board's order:
// score descending, then earliest submitted_at, then id. It walks n entries
// of the leaderboard_rank index, whatever the number of players.
func (db *DB) LeaderboardTop(ctx context.Context, quizCode string, n int) ([]LeaderboardEntry, error) {
	return db.leaderboard(ctx, leaderboardTopSQL, quizCode, n)
}

const leaderboardTopSQL = `SELECT ` + leaderboardColumns + ` FROM leaderboard_entries
	WHERE quiz_code = ? ORDER BY score DESC, submitted_at, id LIMIT ?`

// LeaderboardEntries reads the quiz's entries among ids (a list's changed
// rows); ids of other quizzes, or unknown, are left out.
func (db *DB) LeaderboardEntries(ctx context.Context, quizCode string, ids []string) ([]LeaderboardEntry, error) {
	b, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	return db.leaderboard(ctx, leaderboardByIDSQL, string(b), quizCode)
}

func (db *DB) leaderboard(ctx context.Context, query string, args ...any) ([]LeaderboardEntry, error) {
	rows, err := db.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read leaderboard: %w", err)
	}
	defer rows.Close()
	out := []LeaderboardEntry{}
	for rows.Next() {
		e, err := scanLeaderboardEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("read leaderboard: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// LeaderboardCount is how many entries a quiz has (its players).
func (db *DB) LeaderboardCount(ctx context.Context, quizCode string) (int, error) {
	var n int
	err := db.read.QueryRowContext(ctx, leaderboardCountSQL, quizCode).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count leaderboard %s: %w", quizCode, err)
	}
	return n, nil
}

const leaderboardCountSQL = `SELECT count(*) FROM leaderboard_entries WHERE quiz_code = ?`

// QuizExam is an exam found by its quiz code.
type QuizExam struct {
	ID    string
	Title string
}

// QuizExams lists the exams registered with quizCode, the most recently
// updated first; ErrNotFound when there is none.
func (r *Reader) QuizExams(ctx context.Context, quizCode string) ([]QuizExam, error) {
	rows, err := r.q.QueryContext(r.ctx(ctx), quizExamsSQL, quizCode)
	if err != nil {
		return nil, fmt.Errorf("read exams of quiz %s: %w", quizCode, err)
	}
	defer rows.Close()
	var out []QuizExam
	for rows.Next() {
		var e QuizExam
		if err := rows.Scan(&e.ID, &e.Title); err != nil {
			return nil, fmt.Errorf("read exams of quiz %s: %w", quizCode, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

const quizExamsSQL = `SELECT id, title FROM exams WHERE quiz_code = ? ORDER BY updated_at DESC, id`

// QuizExams reads as Reader.QuizExams does, from the reader pool.
func (db *DB) QuizExams(ctx context.Context, quizCode string) ([]QuizExam, error) {
	return db.reader().QuizExams(ctx, quizCode)
}
