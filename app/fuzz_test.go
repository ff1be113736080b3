package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"invigil/app/apperr"
	"invigil/app/apptest"
	"invigil/app/engine"
	"invigil/app/identity"
)

// FuzzArguments sends arbitrary arguments to every registered function and
// query, as a student and as a tutor: nothing panics, every refusal is a
// contract code other than internal, and a refused call changes nothing.
func FuzzArguments(f *testing.F) {
	logs := &lockedBuffer{}
	h := bootWithExams(f, apptest.WithLogs(logs))
	e := h.App.Engine
	names := append(e.Funcs(), e.Queries()...)
	for i := range names {
		for _, seed := range []string{
			`{"exam_id":"e1"}`, `{"exam_id":"e1","current_question":1,"answered_count":1}`,
			`{"exam_id":"e1","type":"copy","detail":"x","client_ts":"2026-03-02T09:00:00Z","client_id":"c1"}`,
			`{"exam_id":"e1","student_id":"student-1"}`, `{"exam_id":"e1","limit":5}`,
			`{"exam_id":["e1"]}`, `{"exam_id":"` + strings.Repeat("e", 200) + `"}`, `null`, `[]`, `"x"`, `{`,
			`{"exam_id":"e1","network":{"rtt_ms":-1}}`, `{"exam_id":"e1","limit":1e9}`,
		} {
			f.Add(uint8(i), false, []byte(seed))
			f.Add(uint8(i), true, []byte(seed))
		}
	}
	ctx := context.Background()
	// A session to act on.
	if _, err := e.Call(ctx, engine.Caller{User: student1}, "proctoring.startSession", json.RawMessage(`{"exam_id":"e1"}`)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, which uint8, asTutor bool, raw []byte) {
		name := names[int(which)%len(names)]
		caller := engine.Caller{User: student1}
		if asTutor {
			caller = engine.Caller{User: identity.User{ID: tutor1.ID, Role: identity.Tutor, Name: tutor1.Name}}
		}
		before := readExamState(t, h, "e1")
		var err error
		if e.HasFunc(name) {
			_, err = e.Call(ctx, caller, name, raw)
		} else {
			_, err = e.Get(ctx, caller, name, raw)
		}
		if bytes.Contains([]byte(logs.String()), []byte(`"panic"`)) {
			t.Fatalf("%s(%q) panicked: %s", name, raw, logs.String())
		}
		if err == nil {
			return
		}
		if code := apperr.CodeOf(err); code == apperr.Internal {
			t.Fatalf("%s(%q): internal error %v", name, raw, err)
		}
		mustUnchanged(t, h, "e1", before)
	})
}
