// Package leaderboard is the kids' live leaderboard (CONTRACT §4
// "Leaderboard", §5 /hooks/scores). Supabase's grade-exam pushes each graded
// submission through the signed hook; anyone who knows a quiz code reads its
// board, without a token, on the projector page /kids/{quiz_code}. Clients
// never write scores.
//
// The board is a list query ranked by score, then earliest submitted_at:
// a new score costs a subscriber the rows whose rank moved, not the board.
// It holds nicknames only: no student id, and each row's _id is an opaque
// id of invigil's, not the submission id.
package leaderboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/store"
)

// Limits of getLeaderboard and of what the hook accepts.
const (
	DefaultLimit     = 10        // rows when limit is absent: what a projector shows
	MaxLimit         = 100       // the most rows one subscription may ask for
	MaxNickname      = 40        // characters
	MaxScore         = 1_000_000 // max_score above this is refused
	MaxQuizCodeBytes = 64        // as /hooks/exams allows
	// FutureTolerance is how far ahead of invigil's clock a submitted_at
	// may be: the hooks' own clock tolerance.
	FutureTolerance = 5 * time.Minute
)

// Keys the score hook touches and the queries read. The list's rows are
// touched one by one; the quiz key as a whole (its player count).
func listKey(quizCode string) string { return "leaderboard:" + quizCode }
func quizKey(quizCode string) string { return "quiz:" + quizCode }

// Service implements the score hook and the public queries.
type Service struct {
	db  *store.DB
	log *slog.Logger
}

// New returns the service.
func New(db *store.DB, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{db: db, log: log}
}

// Register adds the public queries to the engine.
func (s *Service) Register(e *engine.Engine) {
	e.Query("leaderboard.getLeaderboard", engine.Query{Prepare: s.getLeaderboard, Public: true})
	e.Query("leaderboard.getQuiz", engine.Query{Prepare: s.getQuiz, Public: true})
}

// Score is the body of POST /hooks/scores (invigil.ts's pushScore).
// Pointers tell a missing field from a zero.
type Score struct {
	SubmissionID string   `json:"submission_id"`
	ExamID       string   `json:"exam_id"`
	QuizCode     string   `json:"quiz_code"`
	Nickname     string   `json:"nickname"`
	Score        *float64 `json:"score"`
	MaxScore     *float64 `json:"max_score"`
	SubmittedAt  string   `json:"submitted_at"`
}

// entry checks the score on its own (the exam is checked against the
// database, in the write) and returns it as it is stored: nickname trimmed,
// submitted_at in UTC to the microsecond.
func (sc Score) entry(now time.Time) (store.LeaderboardEntry, error) {
	if err := args.ID("submission_id", sc.SubmissionID); err != nil {
		return store.LeaderboardEntry{}, err
	}
	if err := args.ID("exam_id", sc.ExamID); err != nil {
		return store.LeaderboardEntry{}, err
	}
	if err := quizCode(sc.QuizCode); err != nil {
		return store.LeaderboardEntry{}, err
	}
	nick, err := nickname(sc.Nickname)
	if err != nil {
		return store.LeaderboardEntry{}, err
	}
	if sc.Score == nil || sc.MaxScore == nil {
		return store.LeaderboardEntry{}, apperr.New(apperr.InvalidArgument, "score and max_score are required")
	}
	score, outOf := *sc.Score, *sc.MaxScore
	if score == 0 {
		score = 0 // -0 is 0: one zero, which sorts as one
	}
	switch {
	case outOf <= 0 || outOf > MaxScore:
		return store.LeaderboardEntry{}, apperr.New(apperr.InvalidArgument, "max_score must be above 0 and at most %d", MaxScore)
	case score < 0 || score > outOf:
		return store.LeaderboardEntry{}, apperr.New(apperr.InvalidArgument, "score must be between 0 and max_score (%g)", outOf)
	}
	if sc.SubmittedAt == "" {
		return store.LeaderboardEntry{}, apperr.New(apperr.InvalidArgument, "submitted_at is required")
	}
	at, err := time.Parse(time.RFC3339Nano, sc.SubmittedAt)
	if err != nil {
		return store.LeaderboardEntry{}, apperr.New(apperr.InvalidArgument, "submitted_at must be an RFC 3339 time")
	}
	if at.Year() < 2000 || at.After(now.Add(FutureTolerance)) {
		return store.LeaderboardEntry{}, apperr.New(apperr.InvalidArgument, "submitted_at %s is impossible (in the future, or before 2000)", sc.SubmittedAt)
	}
	return store.LeaderboardEntry{
		SubmissionID: sc.SubmissionID, QuizCode: sc.QuizCode, ExamID: sc.ExamID, Nickname: nick,
		Score: score, MaxScore: outOf, SubmittedAt: store.FormatMicroTime(at.Truncate(time.Microsecond)),
	}, nil
}

// nickname trims v and checks that it is 1 to MaxNickname printable
// characters on one line (the projector shows it as is).
func nickname(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", apperr.New(apperr.InvalidArgument, "nickname is required")
	}
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > MaxNickname {
		return "", apperr.New(apperr.InvalidArgument, "nickname is at most %d characters of UTF-8", MaxNickname)
	}
	for _, r := range v {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return "", apperr.New(apperr.InvalidArgument, "nickname has control characters")
		}
	}
	return v, nil
}

func quizCode(v string) error {
	if err := args.ID("quiz_code", v); err != nil {
		return err
	}
	if len(v) > MaxQuizCodeBytes {
		return apperr.New(apperr.InvalidArgument, "quiz_code is at most %d bytes", MaxQuizCodeBytes)
	}
	return nil
}

// sameScore reports whether a repeat says what the stored entry says.
func sameScore(a, b store.LeaderboardEntry) bool {
	return a.ExamID == b.ExamID && a.QuizCode == b.QuizCode && a.Nickname == b.Nickname &&
		a.Score == b.Score && a.MaxScore == b.MaxScore && a.SubmittedAt == b.SubmittedAt
}

// HandleHook applies a signed /hooks/scores delivery: the webhook id is
// claimed in the same transaction as the entry, so a replayed id changes
// nothing. One entry per submission_id, and the first one stands: a repeat
// that says the same (a resend under a new id) is answered 200 and changes
// nothing; one that says something else (a re-grade) is refused with
// conflict and changes nothing either. A live board is a game, not the
// gradebook: ranks that shift after the fact would confuse a classroom
// more than a stale score does, and Supabase keeps the real grade.
func (s *Service) HandleHook(ctx context.Context, hookID string, body []byte) error {
	var sc Score
	if err := args.Decode(body, &sc); err != nil {
		return err
	}
	e, err := sc.entry(s.db.Now())
	if err != nil {
		return err
	}
	var added bool
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		fresh, err := tx.ClaimHook(hookID)
		if err != nil || !fresh {
			return err
		}
		if err := checkExam(ctx, tx.Reader(), e); err != nil {
			return err
		}
		stored, ok, err := tx.AddLeaderboardEntry(e)
		if err != nil {
			return err
		}
		if !ok {
			if !sameScore(stored, e) {
				return apperr.New(apperr.Conflict, "submission %q already has a score on the board; scores are final there", e.SubmissionID)
			}
			return nil
		}
		added = true
		tx.TouchRows(listKey(e.QuizCode), stored.ID)
		tx.Touch(quizKey(e.QuizCode))
		return nil
	})
	if err != nil {
		if c := apperr.CodeOf(err); c != apperr.Internal {
			s.log.Info("score refused", "exam_id", e.ExamID, "quiz_code", e.QuizCode, "code", c, "err", err)
		}
		return err
	}
	s.log.Debug("score", "exam_id", e.ExamID, "quiz_code", e.QuizCode, "added", added)
	return nil
}

// checkExam refuses a score for a quiz code no registered exam has
// (not_found), or whose exam_id is not an exam with that code
// (invalid_argument: the fields are of different exams).
func checkExam(ctx context.Context, r *store.Reader, e store.LeaderboardEntry) error {
	exams, err := r.QuizExams(ctx, e.QuizCode)
	if errors.Is(err, store.ErrNotFound) {
		return apperr.New(apperr.NotFound, "no registered exam has quiz code %q", e.QuizCode)
	}
	if err != nil {
		return err
	}
	for _, x := range exams {
		if x.ID == e.ExamID {
			return nil
		}
	}
	return apperr.New(apperr.InvalidArgument, "exam %q does not have quiz code %q", e.ExamID, e.QuizCode)
}

// Reset empties a quiz's board (the demo starts a new round with it). The
// list is touched whole: every row left.
func (s *Service) Reset(ctx context.Context, quizCode string) error {
	return s.db.Update(ctx, func(tx *store.Tx) error {
		if _, err := tx.ClearLeaderboard(quizCode); err != nil {
			return err
		}
		tx.Touch(listKey(quizCode), quizKey(quizCode))
		return nil
	})
}

// Entry is one row of getLeaderboard (CONTRACT §4): no student id, and an
// _id of invigil's own.
type Entry struct {
	ID          string  `json:"_id"`
	Rank        int     `json:"rank"`
	Nickname    string  `json:"nickname"`
	Score       float64 `json:"score"`
	MaxScore    float64 `json:"max_score"`
	Percentage  float64 `json:"percentage"` // score / max_score × 100, to one decimal
	SubmittedAt string  `json:"submitted_at"`
}

// BoardArgs are the arguments of getLeaderboard and getQuiz (which has
// no use for limit). Exported for app/api's table of the contract: a field
// tagged omitempty is optional for clients.
type BoardArgs struct {
	QuizCode string `json:"quiz_code"`
	Limit    *int   `json:"limit,omitempty"`
}

func (s *Service) getLeaderboard(ctx context.Context, _ engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a BoardArgs
	if err := args.Decode(raw, &a); err != nil {
		return engine.Plan{}, err
	}
	if err := quizCode(a.QuizCode); err != nil {
		return engine.Plan{}, err
	}
	limit := DefaultLimit
	if a.Limit != nil {
		if *a.Limit < 1 || *a.Limit > MaxLimit {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "limit must be between 1 and %d", MaxLimit)
		}
		limit = *a.Limit
	}
	if _, err := s.quizExams(ctx, a.QuizCode); err != nil {
		return engine.Plan{}, err
	}
	return engine.Plan{
		Share: fmt.Sprintf("%s\x00%d", a.QuizCode, limit),
		List: &engine.List{
			Key: listKey(a.QuizCode), Limit: limit, Arrange: rank,
			// One row past the limit tells the engine that the list goes on.
			All: func(ctx context.Context) ([]engine.Row, error) {
				es, err := s.db.LeaderboardTop(ctx, a.QuizCode, limit+1)
				return rows(es), err
			},
			Fetch: func(ctx context.Context, ids []string) ([]engine.Row, error) {
				es, err := s.db.LeaderboardEntries(ctx, a.QuizCode, ids)
				return rows(es), err
			},
		},
	}, nil
}

// rows are entries as list rows. Order sorts ascending in the board's
// order: the score's bits complemented (for non-negative floats the bits
// grow with the value, so the complement puts higher scores first), then
// submitted_at (fixed width, so text order is time order); the engine
// breaks what remains by _id, as the store's index does.
func rows(es []store.LeaderboardEntry) []engine.Row {
	out := make([]engine.Row, len(es))
	for i, e := range es {
		out[i] = engine.Row{ID: e.ID, Order: orderKey(e.Score, e.SubmittedAt), Value: Entry{
			ID: e.ID, Nickname: e.Nickname, Score: e.Score, MaxScore: e.MaxScore,
			Percentage: math.Round(e.Score/e.MaxScore*1000) / 10, SubmittedAt: e.SubmittedAt,
		}}
	}
	return out
}

func orderKey(score float64, submittedAt string) string {
	return fmt.Sprintf("%016x", ^math.Float64bits(score)) + submittedAt
}

// rank numbers the rows in order; equal score and equal submitted_at (the
// same order key) share a rank, and the next rank skips: 1, 2, 2, 4.
func rank(rows []engine.Row) {
	for i := range rows {
		e := rows[i].Value.(Entry)
		e.Rank = i + 1
		if i > 0 && rows[i].Order == rows[i-1].Order {
			e.Rank = rows[i-1].Value.(Entry).Rank
		}
		rows[i].Value = e
	}
}

// Quiz is getQuiz's value: what the projector's header shows.
type Quiz struct {
	QuizCode string `json:"quiz_code"`
	Title    string `json:"title"`
	Players  int    `json:"players"`
}

func (s *Service) getQuiz(ctx context.Context, _ engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a BoardArgs
	if err := args.Decode(raw, &a); err != nil {
		return engine.Plan{}, err
	}
	if err := quizCode(a.QuizCode); err != nil {
		return engine.Plan{}, err
	}
	exams, err := s.quizExams(ctx, a.QuizCode)
	if err != nil {
		return engine.Plan{}, err
	}
	// The title follows the exams that have the code now (a retitled exam
	// re-runs it); an exam that takes the code later shows on the next
	// subscription.
	keys := []string{quizKey(a.QuizCode)}
	for _, x := range exams {
		keys = append(keys, exam.Key(x.ID))
	}
	return engine.Plan{
		Keys: keys, Share: a.QuizCode,
		Run: func(ctx context.Context) (any, error) {
			exams, err := s.quizExams(ctx, a.QuizCode)
			if err != nil {
				return nil, err
			}
			n, err := s.db.LeaderboardCount(ctx, a.QuizCode)
			return Quiz{QuizCode: a.QuizCode, Title: exams[0].Title, Players: n}, err
		},
	}, nil
}

// quizExams finds the exams with a quiz code, not_found if there is none.
func (s *Service) quizExams(ctx context.Context, code string) ([]store.QuizExam, error) {
	exams, err := s.db.QuizExams(ctx, code)
	if errors.Is(err, store.ErrNotFound) {
		return nil, apperr.New(apperr.NotFound, "no quiz with code %q", code)
	}
	return exams, err
}
