// Package proctoring is live exam supervision: students start a session,
// heartbeat and report violations; an exam's tutors watch every session and
// the violation stream. A session shows "disconnected" as soon as the last
// socket that carried it closes, or when it has neither a live socket nor a
// heartbeat for DisconnectAfter.
//
// The grid (getExamSessions) and the stream (getViolations) are list
// queries: every write names the rows it changed, so a heartbeat costs its
// tutors one row, not a dashboard.
package proctoring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/carriers"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/store"
)

// Keys the proctoring writes touch and its queries read.
func sessionsKey(examID string) string   { return "exam:" + examID + ":sessions" }
func violationsKey(examID string) string { return "exam:" + examID + ":violations" }
func sessionKey(examID, studentID string) string {
	return "session:" + examID + ":" + studentID
}

// ViolationTypes are the violation kinds a client may report.
var ViolationTypes = map[string]bool{
	"tab_hidden": true, "window_blur": true, "fullscreen_exit": true, "copy": true, "paste": true,
	"context_menu": true, "devtools": true, "multiple_screens": true, "network_offline": true, "other": true,
}

// Config holds the proctoring rules.
type Config struct {
	HeartbeatMinInterval time.Duration // a heartbeat sooner than this is rate_limited
	DisconnectAfter      time.Duration // silence after which an active session is disconnected
	ViolationDetailCap   int           // violation rows kept per session; the count stays exact
	ViolationsPerMinute  int           // violation rows kept per session per minute; the count stays exact
	// StaleAfter is how long a session must have been silent, its exam
	// over, before ExpireStale makes it final and archives it.
	StaleAfter time.Duration
	// Busy, when set, reports that the writer is past what it can take;
	// heartbeats are then refused at once (rate_limited, come back in 1 to
	// 3 s) so that every other write, and the heartbeats admitted, stay
	// fast. A refused heartbeat loses nothing (the next carries the same
	// progress) and marks no one silent: a socket that carries the session
	// keeps it from being disconnected.
	Busy   func() bool
	Logger *slog.Logger
}

// Service implements the proctoring functions and queries.
type Service struct {
	db    *store.DB
	exams *exam.Registry
	cfg   Config
	log   *slog.Logger

	live *carriers.Set[store.SessionKey] // the sockets carrying each session
}

// New returns the service.
func New(db *store.DB, exams *exam.Registry, cfg Config) *Service {
	if cfg.HeartbeatMinInterval <= 0 {
		cfg.HeartbeatMinInterval = 5 * time.Second
	}
	if cfg.DisconnectAfter <= 0 {
		cfg.DisconnectAfter = 25 * time.Second
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 2 * time.Minute
	}
	if cfg.ViolationDetailCap <= 0 {
		cfg.ViolationDetailCap = 500
	}
	if cfg.ViolationsPerMinute <= 0 {
		cfg.ViolationsPerMinute = 60
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{
		db: db, exams: exams, cfg: cfg, log: cfg.Logger,
		live: carriers.New[store.SessionKey](),
	}
}

// Register adds the functions and queries to the engine.
func (s *Service) Register(e *engine.Engine) {
	e.Func("proctoring.startSession", s.startSession)
	e.Func("proctoring.heartbeat", s.heartbeat)
	e.Func("proctoring.logViolation", s.logViolation)
	e.Func("proctoring.endSession", s.endSession)
	e.Query("proctoring.getExamSessions", engine.Query{Prepare: s.getExamSessions})
	e.Query("proctoring.getSession", engine.Query{Prepare: s.getSession})
	e.Query("proctoring.getViolations", engine.Query{Prepare: s.getViolations})
	e.OnConnClosed(s.connClosed)
}

// ExamArgs are the arguments of startSession, endSession and
// getExamSessions. The argument types are exported for app/api's table of
// the contract: a field tagged omitempty is optional for clients.
type ExamArgs struct {
	ExamID string `json:"exam_id"`
}

func (s *Service) startSession(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a ExamArgs
	if err := decodeExam(raw, &a, &a.ExamID); err != nil {
		return nil, err
	}
	ex, err := s.exams.Get(ctx, a.ExamID)
	if err != nil {
		return nil, err
	}
	if err := exam.CanJoin(c.User, ex); err != nil {
		return nil, err
	}
	// Carried before the write, so that the close of the socket this one
	// replaces (a reload) cannot mark it disconnected after it started.
	s.live.Attach(c.Conn, store.SessionKey{ExamID: a.ExamID, StudentID: c.User.ID})
	var sess store.Session
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		old, err := tx.Reader().Session(ctx, a.ExamID, c.User.ID)
		if err == nil && old.Status == store.StatusSubmitted {
			return apperr.New(apperr.Conflict, "you already submitted this exam")
		}
		if err == nil && old.ExpiredAt != "" {
			return errExpired
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if sess, err = tx.StartSession(a.ExamID, c.User.ID, c.User.Name); err != nil {
			return err
		}
		touchSession(tx, sess)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sessionView(sess), nil
}

// Network is what a heartbeat may say about the student's connection.
type Network struct {
	RTTMs         *float64 `json:"rtt_ms,omitempty"`
	DownlinkMbps  *float64 `json:"downlink_mbps,omitempty"`
	EffectiveType string   `json:"effective_type,omitempty"`
}

// HeartbeatArgs are heartbeat's arguments.
type HeartbeatArgs struct {
	ExamID          string   `json:"exam_id"`
	CurrentQuestion *int     `json:"current_question"`
	AnsweredCount   *int     `json:"answered_count"`
	Network         *Network `json:"network,omitempty"`
}

func (a HeartbeatArgs) validate() error {
	if a.CurrentQuestion == nil || a.AnsweredCount == nil {
		return apperr.New(apperr.InvalidArgument, "current_question and answered_count are required")
	}
	if err := args.Count("current_question", *a.CurrentQuestion, 100_000); err != nil {
		return err
	}
	if err := args.Count("answered_count", *a.AnsweredCount, 100_000); err != nil {
		return err
	}
	if n := a.Network; n != nil {
		if (n.RTTMs != nil && (*n.RTTMs < 0 || *n.RTTMs > 600_000)) ||
			(n.DownlinkMbps != nil && (*n.DownlinkMbps < 0 || *n.DownlinkMbps > 100_000)) {
			return apperr.New(apperr.InvalidArgument, "network figures are out of range")
		}
		return args.Text("network.effective_type", n.EffectiveType, 16)
	}
	return nil
}

// HeartbeatResult is what a heartbeat returns.
type HeartbeatResult struct {
	ServerTime string `json:"server_time"`
}

func (s *Service) heartbeat(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a HeartbeatArgs
	if err := decodeExam(raw, &a, &a.ExamID); err != nil {
		return nil, err
	}
	if err := a.validate(); err != nil {
		return nil, err
	}
	var net string
	if a.Network != nil {
		b, _ := json.Marshal(a.Network)
		net = string(b)
	}
	s.live.Attach(c.Conn, store.SessionKey{ExamID: a.ExamID, StudentID: c.User.ID})
	if s.cfg.Busy != nil && s.cfg.Busy() {
		wait := time.Second + rand.N(2*time.Second) // spread the retries
		return nil, &apperr.Error{Code: apperr.RateLimited, RetryAfterMs: wait.Milliseconds(),
			Message: "the server is busy: heartbeat again in a moment"}
	}
	var now time.Time
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		now = tx.Now()
		// The common case in one statement; only a refused one reads the
		// session to say why. A disconnected student's heartbeat is always
		// welcome (it brings them back); startSession is no heartbeat.
		beaten, ok, err := tx.Beat(a.ExamID, c.User.ID, *a.CurrentQuestion, *a.AnsweredCount, net, now.Add(-s.cfg.HeartbeatMinInterval))
		if err != nil {
			return err
		}
		if ok {
			// The grid patches its card from the row the UPDATE returned.
			tx.TouchRow(sessionsKey(beaten.ExamID), beaten.ID, beaten)
			tx.Touch(sessionKey(beaten.ExamID, beaten.StudentID))
			return nil
		}
		sess, err := s.ownSession(ctx, tx, a.ExamID, c.User.ID)
		if err != nil {
			return err
		}
		last, _ := store.ParseTime(sess.LastBeatAt)
		wait := max(time.Millisecond, last.Add(s.cfg.HeartbeatMinInterval).Sub(now))
		return &apperr.Error{Code: apperr.RateLimited, RetryAfterMs: wait.Milliseconds() + 1,
			Message: fmt.Sprintf("heartbeats are at least %s apart", s.cfg.HeartbeatMinInterval)}
	})
	if err != nil {
		return nil, err
	}
	return HeartbeatResult{ServerTime: store.FormatTime(now)}, nil
}

// ViolationArgs are logViolation's arguments.
type ViolationArgs struct {
	ExamID   string `json:"exam_id"`
	Type     string `json:"type"`
	Detail   string `json:"detail,omitempty"`
	ClientTS string `json:"client_ts,omitempty"`
	ClientID string `json:"client_id,omitempty"`
}

func (a ViolationArgs) validate() error {
	if !ViolationTypes[a.Type] {
		return apperr.New(apperr.InvalidArgument, "unknown violation type %q", a.Type)
	}
	if err := args.Text("detail", a.Detail, 1000); err != nil {
		return err
	}
	if a.ClientTS != "" {
		if _, err := time.Parse(time.RFC3339Nano, a.ClientTS); err != nil {
			return apperr.New(apperr.InvalidArgument, "client_ts must be an RFC 3339 time")
		}
	}
	return args.Text("client_id", a.ClientID, 128)
}

func (s *Service) logViolation(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a ViolationArgs
	if err := decodeExam(raw, &a, &a.ExamID); err != nil {
		return nil, err
	}
	if err := a.validate(); err != nil {
		return nil, err
	}
	var v store.Violation
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		sess, err := s.ownSession(ctx, tx, a.ExamID, c.User.ID)
		if err != nil {
			return err
		}
		if a.ClientID != "" {
			// A retry of a report whose answer was lost stores nothing new.
			old, err := tx.Reader().ViolationByClientID(ctx, a.ExamID, c.User.ID, a.ClientID)
			if err == nil {
				v = old
				return nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		v = store.Violation{ExamID: a.ExamID, StudentID: c.User.ID, StudentName: sess.StudentName,
			Type: a.Type, Detail: a.Detail, ClientTS: a.ClientTS, ClientID: a.ClientID}
		// Past the caps (in all, and per minute: a flood of blur events must
		// not bury the stream) the count stays exact but the row is not
		// kept; with a client id it is kept anyway, so that a retry finds it.
		keep := a.ClientID != ""
		if !keep && sess.ViolationCount < s.cfg.ViolationDetailCap {
			recent, err := tx.Reader().ViolationsSince(ctx, a.ExamID, c.User.ID, tx.Now().Add(-time.Minute))
			if err != nil {
				return err
			}
			keep = recent < s.cfg.ViolationsPerMinute
		}
		v, sess, err = tx.AddViolation(v, keep)
		if err != nil {
			return err
		}
		// Both lists patch from the values the write returned.
		tx.TouchRow(sessionsKey(sess.ExamID), sess.ID, sess)
		tx.Touch(sessionKey(sess.ExamID, sess.StudentID))
		if keep {
			tx.TouchRow(violationsKey(v.ExamID), v.ID, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return violationView(v), nil
}

func (s *Service) endSession(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a ExamArgs
	if err := decodeExam(raw, &a, &a.ExamID); err != nil {
		return nil, err
	}
	var sess store.Session
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		old, err := s.ownSession(ctx, tx, a.ExamID, c.User.ID)
		if err != nil {
			return err
		}
		if err := tx.SetSessionStatus(a.ExamID, c.User.ID, store.StatusSubmitted); err != nil {
			return err
		}
		touchSession(tx, old)
		if sess, err = tx.Reader().Session(ctx, a.ExamID, c.User.ID); err != nil {
			return err
		}
		return enqueueSummary(tx, sess)
	})
	if err != nil {
		return nil, err
	}
	return sessionView(sess), nil
}

// ownSession reads the caller's session for a write: not_found without one,
// conflict once it is submitted.
func (s *Service) ownSession(ctx context.Context, tx *store.Tx, examID, studentID string) (store.Session, error) {
	sess, err := tx.Reader().Session(ctx, examID, studentID)
	if errors.Is(err, store.ErrNotFound) {
		return sess, apperr.New(apperr.NotFound, "no session in exam %q: call proctoring.startSession first", examID)
	}
	if err != nil {
		return sess, err
	}
	if sess.Status == store.StatusSubmitted {
		return sess, apperr.New(apperr.Conflict, "the session is submitted")
	}
	if sess.ExpiredAt != "" {
		return sess, errExpired
	}
	return sess, nil
}

// errExpired answers a write to a session the stale-session job ended: its
// summary is archived as final.
var errExpired = apperr.New(apperr.Conflict, "the session expired: the exam ended and the session was silent")

// touchSession names the session's row of its exam's grid, and the
// session's own key.
func touchSession(tx *store.Tx, sess store.Session) {
	tx.TouchRows(sessionsKey(sess.ExamID), sess.ID)
	tx.Touch(sessionKey(sess.ExamID, sess.StudentID))
}

func (s *Service) getExamSessions(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a ExamArgs
	if err := decodeExam(raw, &a, &a.ExamID); err != nil {
		return engine.Plan{}, err
	}
	if _, err := s.exams.Watch(ctx, c.User, a.ExamID); err != nil {
		return engine.Plan{}, err
	}
	return engine.Plan{
		Args: a, Share: a.ExamID,
		Recheck: s.watcher(c.User, a.ExamID), RecheckKeys: []string{exam.Key(a.ExamID)},
		List: &engine.List{
			Key: sessionsKey(a.ExamID),
			All: func(ctx context.Context) ([]engine.Row, error) {
				ss, err := s.db.ExamSessions(ctx, a.ExamID)
				return sessionRows(ss), err
			},
			Fetch: func(ctx context.Context, ids []string) ([]engine.Row, error) {
				ss, err := s.db.SessionsByID(ctx, a.ExamID, ids)
				return sessionRows(ss), err
			},
			Carried: func(v any) (engine.Row, bool) {
				sess := v.(store.Session) // only this package touches the key with a value
				return sessionRow(sess), sess.ExamID == a.ExamID
			},
		},
	}, nil
}

// sessionRows are sessions as grid rows, in the documented order: by
// student name (then id, so that equal names keep a stable place).
func sessionRows(ss []store.Session) []engine.Row {
	rows := make([]engine.Row, len(ss))
	for i, s := range ss {
		rows[i] = sessionRow(s)
	}
	return rows
}

func sessionRow(s store.Session) engine.Row {
	return engine.Row{ID: s.ID, Order: s.StudentName + "\x00" + s.StudentID, Value: sessionView(s)}
}

// SessionArgs are getSession's arguments.
type SessionArgs struct {
	ExamID    string `json:"exam_id"`
	StudentID string `json:"student_id"`
}

func (s *Service) getSession(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a SessionArgs
	if err := decodeExam(raw, &a, &a.ExamID); err != nil {
		return engine.Plan{}, err
	}
	if err := args.ID("student_id", a.StudentID); err != nil {
		return engine.Plan{}, err
	}
	// Students may read their own session; tutors and admins any of their exam's.
	var recheck func(context.Context) error
	if c.User.ID != a.StudentID || c.User.Role != identity.Student {
		if _, err := s.exams.Watch(ctx, c.User, a.ExamID); err != nil {
			return engine.Plan{}, err
		}
		recheck = s.watcher(c.User, a.ExamID)
	} else if _, err := s.exams.Get(ctx, a.ExamID); err != nil {
		return engine.Plan{}, err
	}
	return engine.Plan{
		Args:    a,
		Keys:    []string{sessionKey(a.ExamID, a.StudentID)},
		Share:   a.ExamID + "\x00" + a.StudentID,
		Recheck: recheck, RecheckKeys: []string{exam.Key(a.ExamID)},
		Run: func(ctx context.Context) (any, error) {
			var d SessionDetail
			err := s.db.Read(ctx, func(r *store.Reader) error {
				sess, err := r.Session(ctx, a.ExamID, a.StudentID)
				if err != nil {
					return err
				}
				d.SessionView = sessionView(sess)
				if d.Network = json.RawMessage("null"); sess.Network != "" {
					d.Network = json.RawMessage(sess.Network)
				}
				vs, err := r.Violations(ctx, a.ExamID, a.StudentID, s.cfg.ViolationDetailCap)
				d.Violations = violationViews(vs)
				return err
			})
			if errors.Is(err, store.ErrNotFound) {
				return nil, nil // no session yet: null, until the student starts one
			}
			return d, err
		},
	}, nil
}

// ViolationsArgs are getViolations' arguments.
type ViolationsArgs struct {
	ExamID string `json:"exam_id"`
	Limit  *int   `json:"limit,omitempty"`
}

func (s *Service) getViolations(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a ViolationsArgs
	if err := decodeExam(raw, &a, &a.ExamID); err != nil {
		return engine.Plan{}, err
	}
	limit := 50
	if a.Limit != nil {
		if *a.Limit < 1 || *a.Limit > 500 {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "limit must be between 1 and 500")
		}
		limit = *a.Limit
	}
	if _, err := s.exams.Watch(ctx, c.User, a.ExamID); err != nil {
		return engine.Plan{}, err
	}
	return engine.Plan{
		Args:    a,
		Share:   fmt.Sprintf("%s\x00%d", a.ExamID, limit),
		Recheck: s.watcher(c.User, a.ExamID), RecheckKeys: []string{exam.Key(a.ExamID)},
		List: &engine.List{
			Key: violationsKey(a.ExamID), Desc: true, Limit: limit, // newest first
			All: func(ctx context.Context) ([]engine.Row, error) {
				vs, err := s.db.Violations(ctx, a.ExamID, "", limit)
				return violationRows(vs), err
			},
			Fetch: func(ctx context.Context, ids []string) ([]engine.Row, error) {
				vs, err := s.db.ViolationsByID(ctx, a.ExamID, ids)
				return violationRows(vs), err
			},
			Carried: func(v any) (engine.Row, bool) {
				viol := v.(store.Violation)
				return violationRow(viol), viol.ExamID == a.ExamID
			},
		},
	}, nil
}

func violationRows(vs []store.Violation) []engine.Row {
	rows := make([]engine.Row, len(vs))
	for i, v := range vs {
		rows[i] = violationRow(v)
	}
	return rows
}

func violationRow(v store.Violation) engine.Row {
	return engine.Row{ID: v.ID, Order: v.CreatedAt, Value: violationView(v)}
}

// watcher rechecks that u may still watch the exam (its registration may
// have changed since the subscription started).
func (s *Service) watcher(u identity.User, examID string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := s.exams.Watch(ctx, u, examID)
		return err
	}
}

func decodeExam(raw json.RawMessage, v any, examID *string) error {
	if err := args.Decode(raw, v); err != nil {
		return err
	}
	return args.ID("exam_id", *examID)
}

// Summary is one session's row in Supabase's proctoring_summaries.
type Summary struct {
	ExamID           string          `json:"exam_id"`
	StudentID        string          `json:"student_id"`
	Status           string          `json:"status"`
	StartedAt        string          `json:"started_at"`
	EndedAt          *string         `json:"ended_at"`
	DurationS        int64           `json:"duration_s"`
	ViolationCount   int             `json:"violation_count"`
	ViolationsByType json.RawMessage `json:"violations_by_type"`
	Disconnects      int             `json:"disconnects"`
}

// enqueueSummary puts the session's summary in the outbox, in the same
// transaction as the change that ended it (endSession, or expiry): it
// reaches Supabase even if the process dies right after. An expired
// session's summary says disconnected, ended when it was last seen.
func enqueueSummary(tx *store.Tx, sess store.Session) error {
	sum := Summary{
		ExamID: sess.ExamID, StudentID: sess.StudentID, Status: sess.Status, StartedAt: sess.StartedAt,
		EndedAt: optional(sess.EndedAt), ViolationCount: sess.ViolationCount,
		ViolationsByType: json.RawMessage(sess.ByType), Disconnects: sess.Disconnects,
	}
	end := tx.Now()
	if t, err := store.ParseTime(sess.EndedAt); err == nil {
		end = t
	}
	if start, err := store.ParseTime(sess.StartedAt); err == nil {
		sum.DurationS = max(0, int64(end.Sub(start)/time.Second))
	}
	body, err := json.Marshal([]Summary{sum})
	if err != nil {
		return err
	}
	// Linked to the session's row: retention purges it only once this
	// item reached Supabase.
	_, err = tx.EnqueueItem(store.OutboxItem{Target: "proctoring_summaries", OnConflict: "exam_id,student_id",
		Body: string(body), RefTable: "exam_sessions", RefID: sess.ID})
	return err
}
