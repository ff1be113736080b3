package app_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/store"
)

// examView is what a hook delivery decides about an exam.
type examView struct {
	Title    string
	Status   string
	TutorIDs []string
}

// readExam returns the registered exam, or nil if it is not registered.
func readExam(t *testing.T, h *apptest.Harness, id string) *examView {
	t.Helper()
	e, err := h.App.DB.Exam(t.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return &examView{Title: e.Title, Status: e.Status, TutorIDs: e.TutorIDs}
}

// TestExamHooks plays deliveries to POST /hooks/exams in order: forged,
// stale and invalid ones are refused and change nothing, a replayed
// webhook-id is acknowledged and ignored, and a status change takes effect.
func TestExamHooks(t *testing.T) {
	h := apptest.Boot(t)
	const otherSecret = "whsec_c29tZWJvZHktZWxzZXMtc2VjcmV0"
	first := exam.Registration{ExamID: "h1", Title: "First", TutorIDs: []string{tutor1.ID}, Status: exam.Open}
	second := exam.Registration{ExamID: "h1", Title: "Second", TutorIDs: []string{tutor2.ID}, Status: exam.Closed}
	closed := first
	closed.Status = exam.Closed
	opened := &examView{Title: "First", Status: exam.Open, TutorIDs: []string{tutor1.ID}}

	sign := func(secret string, skew time.Duration) signer { return hookSigner(t, h, secret, skew) }
	valid := sign(apptest.HookSecret, 0)
	cases := []struct {
		name   string
		id     string
		body   any
		sign   signer
		tamper bool // the body changes after signing
		status int
		code   string
		want   *examView // nil: h1 is not registered
		then   func(t *testing.T)
	}{
		{name: "signed with another secret", id: "msg_forged", body: first, sign: sign(otherSecret, 0),
			status: 401, code: "unauthenticated"},
		{name: "body changed after signing", id: "msg_tampered", body: first, sign: valid, tamper: true,
			status: 401, code: "unauthenticated"},
		{name: "timestamp 6 minutes old", id: "msg_stale", body: first, sign: sign(apptest.HookSecret, -6*time.Minute),
			status: 401, code: "unauthenticated"},
		{name: "timestamp 6 minutes ahead", id: "msg_future", body: first, sign: sign(apptest.HookSecret, 6*time.Minute),
			status: 401, code: "unauthenticated"},
		{name: "no signature headers", id: "msg_bare", body: first, sign: func(string, []byte) http.Header { return http.Header{} },
			status: 401, code: "unauthenticated"},
		{name: "status bogus", id: "msg_bogus", body: map[string]any{"exam_id": "h1", "title": "First", "tutor_ids": []string{tutor1.ID}, "status": "bogus"},
			sign: valid, status: 400, code: "invalid_argument"},
		{name: "no tutor_ids", id: "msg_no_tutors", body: map[string]any{"exam_id": "h1", "title": "First", "status": "open"},
			sign: valid, status: 400, code: "invalid_argument"},
		{name: "not JSON", id: "msg_not_json", body: json.RawMessage(`{"exam_id":`), sign: valid, status: 400, code: "invalid_argument"},
		// A refused delivery does not use up its id: the first valid one with
		// it is applied (else a forger who saw an id could block it).
		{name: "first valid delivery, on a refused id", id: "msg_forged", body: first, sign: valid, status: 200, want: opened,
			then: func(t *testing.T) { wantStart(t, h, student2, http.StatusOK) }},
		{name: "replayed id with a different body", id: "msg_forged", body: second, sign: valid, status: 200, want: opened},
		{name: "exam closed", id: "msg_close", body: closed, sign: valid, status: 200,
			want: &examView{Title: "First", Status: exam.Closed, TutorIDs: []string{tutor1.ID}},
			then: func(t *testing.T) {
				wantStart(t, h, student1, http.StatusConflict)
				s := h.DialAs(student1)
				wantError(t, s.Call("proctoring.startSession", map[string]string{"exam_id": "h1"}), "c1", "conflict")
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, err := json.Marshal(c.body)
			if err != nil {
				body = []byte(c.body.(json.RawMessage))
			}
			hdr := c.sign(c.id, body)
			if c.tamper {
				body, _ = json.Marshal(second)
			}
			code, resp := h.Post("/hooks/exams", hdr, body)
			if c.status == http.StatusOK {
				if code != http.StatusOK {
					t.Fatalf("want 200, got %d %s", code, resp)
				}
			} else {
				want := httpErr{Status: c.status, Code: c.code}
				if diff := cmp.Diff(want, decodeHTTPErr(t, code, resp)); diff != "" {
					t.Fatalf("(-want +got):\n%s\nbody: %s", diff, resp)
				}
			}
			if diff := cmp.Diff(c.want, readExam(t, h, "h1")); diff != "" {
				t.Fatalf("exam h1 (-want +got):\n%s", diff)
			}
			if c.then != nil {
				c.then(t)
			}
		})
	}
}

// wantStart calls startSession on h1 as u over HTTP and wants status.
func wantStart(t *testing.T, h *apptest.Harness, u identity.User, status int) {
	t.Helper()
	if code, body := h.Call(u, "proctoring.startSession", map[string]string{"exam_id": "h1"}); code != status {
		t.Fatalf("startSession on h1 as %s: want %d, got %d %s", u.ID, status, code, body)
	}
}
