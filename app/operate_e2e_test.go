package app_test

// Tests of what an operator relies on (issue 11): the metrics, the logs.

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/identity"
)

// scrape reads /metrics with token (none when "") and parses it.
func scrape(t *testing.T, h *apptest.Harness, token string) (int, map[string]*dto.MetricFamily) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.URL+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		io.Copy(io.Discard, res.Body)
		return res.StatusCode, nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	return res.StatusCode, families
}

// value finds a sample: a counter's or gauge's value, or a histogram's count.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("metric %s missing", name)
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range labels {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s%v missing", name, labels)
	return 0
}

// TestMetricsAfterAScriptedSession: after a known sequence of calls, the
// counters and histograms say exactly that; with a token set, /metrics
// wants it.
func TestMetricsAfterAScriptedSession(t *testing.T) {
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) { c.MetricsToken = "scrape-me" }))
	if code, _ := scrape(t, h, ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without the token: want 401, got %d", code)
	}
	if code, _ := scrape(t, h, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics with a wrong token: want 401, got %d", code)
	}
	tutor := h.DialAs(tutor1)
	tutor.Sub("q1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
	student := h.DialAs(student1)
	e1 := map[string]any{"exam_id": "e1"}
	mustResult(t, student.Call("proctoring.startSession", e1))
	for i := range 3 {
		h.Advance(6 * time.Second)
		mustResult(t, student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": i, "answered_count": i}))
	}
	if f := student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 9, "answered_count": 9}); f.Code != "rate_limited" {
		t.Fatalf("want a refused heartbeat, got %+v", f)
	}
	student.Call("no.such.fn", e1)
	mustResult(t, student.Call("proctoring.endSession", e1))
	h.Hook("/hooks/exams", "msg-metrics-1", map[string]any{"exam_id": "e9", "title": "Nine", "tutor_ids": []string{}, "status": "open"})
	h.Post("/hooks/exams", nil, []byte(`{}`)) // unsigned: refused
	// The tutor saw every change (start, three heartbeats, submit).
	for range 5 {
		if f := tutor.Next(); f.Type != "data" && f.Type != "delta" {
			t.Fatalf("tutor: %+v", f)
		}
	}
	if err := h.App.Engine.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, m := scrape(t, h, "scrape-me")
	if code != http.StatusOK {
		t.Fatalf("/metrics with the token: %d", code)
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"invigil_calls_total", map[string]string{"fn": "proctoring.heartbeat", "code": "ok"}, 3},
		{"invigil_calls_total", map[string]string{"fn": "proctoring.heartbeat", "code": "rate_limited"}, 1},
		{"invigil_calls_total", map[string]string{"fn": "proctoring.startSession", "code": "ok"}, 1},
		{"invigil_calls_total", map[string]string{"fn": "unknown", "code": "not_found"}, 1},
		{"invigil_call_duration_seconds", map[string]string{"fn": "proctoring.heartbeat"}, 4},
		{"invigil_hooks_total", map[string]string{"hook": "exams", "code": "ok"}, 3}, // e1, e2 at boot and e9
		{"invigil_hooks_total", map[string]string{"hook": "exams", "code": "unauthenticated"}, 1},
		{"invigil_ws_connections", map[string]string{"role": "tutor"}, 1},
		{"invigil_ws_connections", map[string]string{"role": "student"}, 1},
		{"invigil_subscriptions", nil, 1},
		{"invigil_query_instances", nil, 1},
		{"invigil_outbox_pending", nil, 1}, // the summary, no Supabase configured
	}
	for _, c := range checks {
		if got := value(t, m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	atLeast := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"invigil_engine_runs_total", map[string]string{"kind": "patch"}, 4},
		{"invigil_engine_rows_patched_total", nil, 4},
		{"invigil_engine_pushes_total", nil, 6},
		{"invigil_push_latency_seconds", nil, 5},
		{"invigil_store_batch_size", nil, 6},
		{"invigil_store_commit_seconds", nil, 6},
		{"go_goroutines", nil, 1},
		{"process_resident_memory_bytes", nil, 1},
	}
	for _, c := range atLeast {
		if got := value(t, m, c.name, c.labels); got < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, got, c.min)
		}
	}
}

// lockedBuffer collects logs written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsHoldNoSecrets: a full flow (sign-in, proctoring, bad tokens,
// hooks, a failing call) logs one line per socket open and close with the
// user, and never a token, a student's text or a hook's body.
func TestLogsHoldNoSecrets(t *testing.T) {
	logs := &lockedBuffer{}
	h := bootWithExams(t, apptest.WithLogs(logs))
	secretText := "my-secret-answer-" + strings.Repeat("z", 8)
	student := h.Dial(nil)
	token := h.Token(student1)
	student.Send(map[string]string{"type": "auth", "token": token})
	student.Next()
	mustResult(t, student.Call("proctoring.startSession", map[string]any{"exam_id": "e1"}))
	mustResult(t, student.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "paste", "detail": secretText}))
	bad := h.Dial(nil)
	badToken := h.TokenTTL(identity.User{ID: "x", Role: identity.Admin}, time.Second)
	h.Advance(2 * time.Second) // expired
	bad.Send(map[string]string{"type": "auth", "token": badToken})
	bad.Next()
	code, _ := postAs(h, "/api/call/proctoring.heartbeat", token, []byte(`{"exam_id":"e1","current_question":1,"answered_count":"`+secretText+`"}`))
	if code != http.StatusBadRequest {
		t.Fatalf("want 400, got %d", code)
	}
	h.Hook("/hooks/exams", "msg-logs-1", map[string]any{"exam_id": "e7", "title": secretText, "tutor_ids": []string{}, "status": "open"})
	student.Conn.Close()
	waitFor(t, func() bool { return strings.Contains(logs.String(), `"socket closed"`) })

	out := logs.String()
	for _, leak := range []string{token, badToken, secretText, strings.SplitN(token, ".", 3)[2]} {
		if strings.Contains(out, leak) {
			t.Errorf("the logs contain %q", leak[:min(len(leak), 24)])
		}
	}
	for _, want := range []string{`"msg":"socket open"`, `"msg":"socket closed"`, `"user_id":"student-1"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the logs lack %s", want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
