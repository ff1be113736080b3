// Package exam is the registry of exams that Supabase pushes through
// POST /hooks/exams, and the rules of who may watch or join each one.
package exam

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/identity"
	"invigil/store"
)

// Statuses an exam can have.
const (
	Scheduled = "scheduled"
	Open      = "open"
	Closed    = "closed"
)

// Key is touched whenever an exam's registration changes.
func Key(examID string) string { return "exam:" + examID }

// Registration is the body of POST /hooks/exams.
type Registration struct {
	ExamID     string    `json:"exam_id"`
	Title      string    `json:"title"`
	TutorIDs   []string  `json:"tutor_ids"`
	QuizCode   string    `json:"quiz_code"`
	Status     string    `json:"status"`
	StartsAt   string    `json:"starts_at"`
	EndsAt     string    `json:"ends_at"`
	StudentIDs *[]string `json:"student_ids"`
	// UpdatedAt is the row's time in Supabase: a delivery older than the
	// one already applied changes nothing (retried hooks come out of order).
	UpdatedAt string `json:"updated_at,omitempty"`
}

// Registry reads and writes exams.
type Registry struct{ db *store.DB }

// NewRegistry returns a registry over db.
func NewRegistry(db *store.DB) *Registry { return &Registry{db: db} }

func (r Registration) validate() error {
	if err := args.ID("exam_id", r.ExamID); err != nil {
		return err
	}
	if r.Title == "" || len(r.Title) > 500 {
		return apperr.New(apperr.InvalidArgument, "title is required (at most 500 bytes)")
	}
	switch r.Status {
	case Scheduled, Open, Closed:
	default:
		return apperr.New(apperr.InvalidArgument, "status must be scheduled, open or closed")
	}
	if r.TutorIDs == nil {
		return apperr.New(apperr.InvalidArgument, "tutor_ids is required")
	}
	ids := r.TutorIDs
	if r.StudentIDs != nil {
		ids = append(slices.Clip(ids), *r.StudentIDs...)
	}
	if len(ids) > 100_000 {
		return apperr.New(apperr.InvalidArgument, "too many tutor_ids and student_ids")
	}
	for _, id := range ids {
		if err := args.ID("user id", id); err != nil {
			return err
		}
	}
	if len(r.QuizCode) > 64 {
		return apperr.New(apperr.InvalidArgument, "quiz_code is at most 64 bytes")
	}
	for _, t := range []string{r.StartsAt, r.EndsAt, r.UpdatedAt} {
		if t == "" {
			continue
		}
		if _, err := time.Parse(time.RFC3339, t); err != nil {
			return apperr.New(apperr.InvalidArgument, "starts_at, ends_at and updated_at are RFC 3339 times")
		}
	}
	return nil
}

// normalTime puts an RFC 3339 time in the store's format (UTC, fixed
// width), so that stored times compare as text; "" stays "".
func normalTime(t string) string {
	if t == "" {
		return ""
	}
	v, err := time.Parse(time.RFC3339, t)
	if err != nil {
		return t
	}
	return store.FormatTime(v)
}

// HandleHook applies a signed /hooks/exams delivery once: a webhook id seen
// before changes nothing.
func (reg *Registry) HandleHook(ctx context.Context, hookID string, body []byte) error {
	var r Registration
	if err := args.Decode(body, &r); err != nil {
		return err
	}
	if err := r.validate(); err != nil {
		return err
	}
	e := store.Exam{
		ID: r.ExamID, Title: r.Title, TutorIDs: r.TutorIDs, QuizCode: r.QuizCode,
		Status: r.Status, StartsAt: normalTime(r.StartsAt), EndsAt: normalTime(r.EndsAt),
		SourceUpdatedAt: normalTime(r.UpdatedAt),
	}
	if r.StudentIDs != nil {
		e.StudentIDs = append([]string{}, *r.StudentIDs...)
	}
	return reg.db.Update(ctx, func(tx *store.Tx) error {
		fresh, err := tx.ClaimHook(hookID)
		if err != nil || !fresh {
			return err
		}
		applied, err := tx.UpsertExam(e)
		if applied {
			tx.Touch(Key(e.ID))
		}
		return err
	})
}

// Register writes an exam directly (demo seeding).
func (reg *Registry) Register(ctx context.Context, r Registration) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return reg.HandleHook(ctx, "local_"+store.NewID("", reg.db.Now()), body)
}

// Get reads an exam, not_found if Supabase never registered it.
func (reg *Registry) Get(ctx context.Context, examID string) (store.Exam, error) {
	e, err := reg.db.Exam(ctx, examID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Exam{}, apperr.New(apperr.NotFound, "exam %q is not registered", examID)
	}
	return e, err
}

// CanWatch reports whether u may see the exam's live state: its tutors and
// admins.
func CanWatch(u identity.User, e store.Exam) bool {
	return u.Role == identity.Admin || (u.Role == identity.Tutor && slices.Contains(e.TutorIDs, u.ID))
}

// CanJoin checks that student u may sit the exam now.
func CanJoin(u identity.User, e store.Exam) error {
	if u.Role != identity.Student {
		return apperr.New(apperr.Forbidden, "only students sit exams")
	}
	if e.StudentIDs != nil && !slices.Contains(e.StudentIDs, u.ID) {
		return apperr.New(apperr.Forbidden, "this exam does not list you")
	}
	if e.Status != Open {
		return apperr.New(apperr.Conflict, "exam %q is %s, not open", e.ID, e.Status)
	}
	return nil
}

// Watch returns the exam if u may watch it: not_found for an unknown exam,
// forbidden for anyone but its tutors and admins.
func (reg *Registry) Watch(ctx context.Context, u identity.User, examID string) (store.Exam, error) {
	e, err := reg.Get(ctx, examID)
	if err != nil {
		return store.Exam{}, err
	}
	if !CanWatch(u, e) {
		return store.Exam{}, apperr.New(apperr.Forbidden, "you are not a tutor of exam %q", examID)
	}
	return e, nil
}
