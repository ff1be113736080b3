package proctoring

import (
	"encoding/json"

	"invigil/store"
)

// The wire types of proctoring (CONTRACT §4): what tutors and students
// receive. They are mapped from the store's rows field by field, so a new
// column reaches no client until it is added here.

// SessionView is one session as the grid shows it.
type SessionView struct {
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
}

// LastViolation is the newest violation's type and server time.
type LastViolation struct {
	Type      string `json:"type"`
	CreatedAt string `json:"created_at"`
}

// ViolationView is one violation row.
type ViolationView struct {
	ID          string  `json:"_id"`
	ExamID      string  `json:"exam_id"`
	StudentID   string  `json:"student_id"`
	StudentName string  `json:"student_name"`
	Type        string  `json:"type"`
	Detail      string  `json:"detail"`
	ClientTS    *string `json:"client_ts"`
	CreatedAt   string  `json:"created_at"`
}

// SessionDetail is one session with its last reported network state and
// its violations, newest first (getSession).
type SessionDetail struct {
	SessionView
	Network    json.RawMessage `json:"network"`
	Violations []ViolationView `json:"violations"`
}

func sessionView(s store.Session) SessionView {
	v := SessionView{
		ID: s.ID, ExamID: s.ExamID, StudentID: s.StudentID, StudentName: s.StudentName, Status: s.Status,
		CurrentQuestion: s.CurrentQuestion, AnsweredCount: s.AnsweredCount, ViolationCount: s.ViolationCount,
		LastHeartbeat: s.LastHeartbeat, StartedAt: s.StartedAt, EndedAt: optional(s.EndedAt),
	}
	if s.LastViolationType != "" {
		v.LastViolation = &LastViolation{Type: s.LastViolationType, CreatedAt: s.LastViolationAt}
	}
	return v
}

func violationView(v store.Violation) ViolationView {
	return ViolationView{
		ID: v.ID, ExamID: v.ExamID, StudentID: v.StudentID, StudentName: v.StudentName, Type: v.Type,
		Detail: v.Detail, ClientTS: optional(v.ClientTS), CreatedAt: v.CreatedAt,
	}
}

func violationViews(vs []store.Violation) []ViolationView {
	out := make([]ViolationView, len(vs))
	for i, v := range vs {
		out[i] = violationView(v)
	}
	return out
}

// optional is nil for "" (JSON null), else a pointer to s.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
