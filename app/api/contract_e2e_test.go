package api_test

// The table against the running server: the engine serves exactly the
// table's names (public ones public), each function returns the Go type the
// table says, and each query's value has, in JSON, exactly the fields of
// the table's Go type. With TestTypeScriptMatchesGo this ties invigil.d.ts
// to what browsers really receive.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app/api"
	"invigil/app/apptest"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
)

var (
	tutor   = identity.User{ID: "tutor-1", Role: identity.Tutor, Name: "Tess Tutor"}
	student = identity.User{ID: "stu-1", Role: identity.Student, Name: "Sam Student"}
	agent   = identity.User{ID: "agent-1", Role: identity.Agent, Name: "Alex Agent"}
	nobody  = identity.User{} // no token: public queries only
)

func TestContractIsWhatTheEngineServes(t *testing.T) {
	h := apptest.Boot(t)
	// A request served before the test ends: App.Run's shutdown does not
	// stop a Serve that has not started yet (and would then wait forever).
	if res, err := http.Get(h.URL + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}
	var funcs, queries []string
	for _, e := range api.Contract {
		if e.Kind == api.Function {
			funcs = append(funcs, e.Name)
		} else {
			queries = append(queries, e.Name)
		}
		if e.Kind == api.Query && h.App.Engine.IsPublic(e.Name) != e.Public {
			t.Errorf("%s: Public %v in api.Contract, %v in the engine", e.Name, e.Public, !e.Public)
		}
	}
	sort.Strings(funcs)
	sort.Strings(queries)
	if diff := cmp.Diff(h.App.Engine.Funcs(), funcs); diff != "" {
		t.Errorf("functions: engine (-) vs api.Contract (+):\n%s", diff)
	}
	if diff := cmp.Diff(h.App.Engine.Queries(), queries); diff != "" {
		t.Errorf("queries: engine (-) vs api.Contract (+):\n%s", diff)
	}
}

// step is one call or read of the scenario, in order. In args, {chat} and
// {msg} stand for the ids startChat and sendMessage returned.
type step struct {
	as   identity.User
	name string
	args string
}

// scenario exercises every name of the contract with values that fill
// their optional and nullable parts where it can.
var scenario = []step{
	{student, "chat.startChat", `{"scope":"support"}`},
	{agent, "chat.assignAgent", `{"session_id":"{chat}"}`},
	{student, "chat.sendMessage", `{"session_id":"{chat}","body":"Hello","client_msg_id":"m1","attachments":[{"url":"https://files.example.com/a.png","name":"a.png","size":10,"mime":"image/png"}]}`},
	{agent, "chat.markRead", `{"session_id":"{chat}","up_to_message_id":"{msg}"}`},
	{agent, "chat.setTyping", `{"session_id":"{chat}","typing":true}`},
	{student, "presence.touchPresence", `{"scope":"chat:{chat}","display_name":"Sam"}`},
	{agent, "presence.listPresence", `{"scope":"chat:{chat}","limit":10}`},
	{student, "presence.setScope", `{"scope":"global"}`},
	{agent, "chat.listSessions", `{"scope":"support","status":"active","limit":5}`},
	{student, "chat.getMessages", `{"session_id":"{chat}","limit":10}`},
	{agent, "chat.endChat", `{"session_id":"{chat}"}`},

	{student, "proctoring.startSession", `{"exam_id":"e1"}`},
	{student, "proctoring.heartbeat", `{"exam_id":"e1","current_question":2,"answered_count":1,"network":{"rtt_ms":40,"downlink_mbps":9.5,"effective_type":"4g"}}`},
	{student, "proctoring.logViolation", `{"exam_id":"e1","type":"copy","detail":"copied 4 characters","client_ts":"2026-03-02T09:00:00Z","client_id":"v1"}`},
	{tutor, "proctoring.getExamSessions", `{"exam_id":"e1"}`},
	{tutor, "proctoring.getSession", `{"exam_id":"e1","student_id":"stu-1"}`},
	{tutor, "proctoring.getViolations", `{"exam_id":"e1","limit":5}`},
	{student, "proctoring.endSession", `{"exam_id":"e1"}`},
	{nobody, "leaderboard.getLeaderboard", `{"quiz_code":"QUIZ1","limit":5}`},
	{nobody, "leaderboard.getQuiz", `{"quiz_code":"QUIZ1"}`},
}

func TestContractResultsAreWhatTheServerSends(t *testing.T) {
	h := apptest.Boot(t)
	h.Exam(exam.Registration{ExamID: "e1", Title: "Contract", TutorIDs: []string{tutor.ID}, QuizCode: "QUIZ1", Status: exam.Open})
	if code, body := h.Hook("/hooks/scores", "score_sub1", map[string]any{
		"submission_id": "sub1", "exam_id": "e1", "quiz_code": "QUIZ1", "nickname": "Ada",
		"score": 7, "max_score": 10, "submitted_at": h.Clock.Now().Add(-time.Minute).Format(time.RFC3339),
	}); code != http.StatusOK {
		t.Fatalf("score: %d %s", code, body)
	}
	ctx := context.Background()
	seen := map[string]bool{}
	ids := map[string]string{} // {chat}, {msg}
	for i, s := range scenario {
		for k, v := range ids {
			s.args = strings.ReplaceAll(s.args, "{"+k+"}", v)
		}
		e, ok := api.Lookup(s.name)
		if !ok {
			t.Fatalf("step %d: %s is not in api.Contract", i, s.name)
		}
		seen[s.name] = true
		c := engine.Caller{User: s.as}
		var raw []byte
		if e.Kind == api.Function {
			v, err := h.App.Engine.Call(ctx, c, s.name, json.RawMessage(s.args))
			if err != nil {
				t.Fatalf("step %d %s: %v", i, s.name, err)
			}
			if got := reflect.TypeOf(v); got != e.Result {
				t.Errorf("%s returns %v; api.Contract says %v", s.name, got, e.Result)
			}
			if raw, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		} else {
			var err error
			if raw, err = h.App.Engine.Get(ctx, c, s.name, json.RawMessage(s.args)); err != nil {
				t.Fatalf("step %d %s: %v", i, s.name, err)
			}
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		switch s.name {
		case "chat.startChat":
			ids["chat"] = v.(map[string]any)["_id"].(string)
		case "chat.sendMessage":
			ids["msg"] = v.(map[string]any)["_id"].(string)
		}
		if a, ok := v.([]any); ok && len(a) == 0 {
			t.Errorf("%s: the scenario reads an empty list, which shows nothing of its rows", s.name)
		}
		for _, p := range shape(s.name, e.Result, v) {
			t.Errorf("%s: %s\n  value: %s", s.name, p, raw)
		}
		// The sample's arguments are the table's argument type's fields.
		dec := json.NewDecoder(strings.NewReader(s.args))
		dec.DisallowUnknownFields()
		if err := dec.Decode(reflect.New(e.Args).Interface()); err != nil {
			t.Errorf("%s: the sample arguments do not fit %v: %v", s.name, e.Args, err)
		}
	}
	for _, e := range api.Contract {
		if !seen[e.Name] {
			t.Errorf("%s is in api.Contract but not in this test's scenario", e.Name)
		}
	}
}

// shape compares a decoded JSON value with the Go type that should have
// produced it and returns the differences: missing or extra object keys,
// null where Go cannot send it, a JSON type Go would not produce. Empty
// lists say nothing about their rows, so the scenario fills them.
func shape(path string, g reflect.Type, v any) []string {
	if g == rawMessage {
		return nil // checked where api.Raw names what it carries
	}
	if v == nil {
		switch g.Kind() {
		case reflect.Pointer, reflect.Interface:
			return nil
		}
		return []string{fmt.Sprintf("%s: null, but Go's %s is never null", path, g)}
	}
	switch g.Kind() {
	case reflect.Pointer:
		return shape(path, g.Elem(), v)
	case reflect.Interface:
		return nil
	case reflect.String:
		if _, ok := v.(string); ok {
			return nil
		}
	case reflect.Bool:
		if _, ok := v.(bool); ok {
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if _, ok := v.(float64); ok {
			return nil
		}
	case reflect.Slice:
		if a, ok := v.([]any); ok {
			var out []string
			for i, x := range a {
				out = append(out, shape(fmt.Sprintf("%s[%d]", path, i), g.Elem(), x)...)
			}
			return out
		}
	case reflect.Map:
		if m, ok := v.(map[string]any); ok {
			var out []string
			for k, x := range m {
				out = append(out, shape(path+"."+k, g.Elem(), x)...)
			}
			return out
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		var out []string
		for _, f := range jsonFields(g) {
			x, ok := m[f.name]
			delete(m, f.name)
			if !ok {
				if !f.omitempty {
					out = append(out, fmt.Sprintf("%s.%s: missing", path, f.name))
				}
				continue
			}
			typ := f.typ
			if typ == rawMessage {
				if carried, ok := api.Raw[g.Name()+"."+f.name]; ok {
					typ = carried
				}
			}
			out = append(out, shape(path+"."+f.name, typ, x)...)
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, fmt.Sprintf("%s.%s: sent, but not a field of Go's %s", path, k, g))
		}
		return out
	}
	return []string{fmt.Sprintf("%s: %T is not what Go's %s encodes to", path, v, g)}
}
