package supabase_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"invigil/app/webhook"
)

// deno returns the Deno binary: $DENO, or deno on PATH.
func deno(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath(cmp.Or(os.Getenv("DENO"), "deno"))
	if err != nil {
		unavailable(t, "Deno", err)
	}
	return path
}

// runDeno runs deno with args (no config file, no prompts, no update
// check) and returns its standard output.
func runDeno(t *testing.T, stdin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, deno(t), args...)
	cmd.Env = append(os.Environ(), "DENO_NO_UPDATE_CHECK=1", "NO_COLOR=1")
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("deno %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// TestInvigilTSTypeChecks: the file edge functions import type-checks, as
// Supabase's edge runtime would check it.
func TestInvigilTSTypeChecks(t *testing.T) {
	runDeno(t, "", "check", "--no-config", "functions/_shared/invigil.ts", "testdata/push.ts")
}

// delivery is one request as the hook server saw it.
type delivery struct {
	Path, ID, Body string
}

// hookServer is invigil's /hooks/* as far as a sender can tell: it verifies
// each delivery with invigil's verifier and answers with the next status
// of its script (dropConnection: no answer at all).
type hookServer struct {
	t       *testing.T
	verify  *webhook.Verifier
	mu      sync.Mutex
	replies []int
	got     []delivery
	at      []time.Time // when each delivery arrived
}

const dropConnection = -1

func (s *hookServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.t.Errorf("read body: %v", err)
		return
	}
	id, err := s.verify.Verify(r.Header, body)
	if err != nil {
		s.t.Errorf("invigil refuses %s %s: %v", r.URL.Path, body, err)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		s.t.Errorf("Content-Type = %q", ct)
	}
	s.mu.Lock()
	s.got = append(s.got, delivery{Path: r.URL.Path, ID: id, Body: string(body)})
	s.at = append(s.at, time.Now())
	status := http.StatusOK
	if len(s.replies) > 0 {
		status, s.replies = s.replies[0], s.replies[1:]
	} else {
		s.t.Errorf("unexpected delivery %s %s", r.URL.Path, body)
	}
	s.mu.Unlock()

	if status == dropConnection {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	// A new connection for every request: Deno's HTTP client itself resends
	// a request whose reused connection dropped, which would hide whether
	// invigil.ts retries.
	w.Header().Set("Connection", "close")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, `{"code":"x","message":"scripted reply"}`)
}

// TestPushFromEdgeFunction runs pushScore and pushExam, from the real
// functions/_shared/invigil.ts under Deno, against a server that checks
// each delivery as invigil does: retried on 503 and on a dropped
// connection under the same webhook id, not retried on 400.
func TestPushFromEdgeFunction(t *testing.T) {
	verify, err := webhook.NewVerifier(hookSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &hookServer{t: t, verify: verify, replies: []int{
		503, 200, // score 1: retried
		dropConnection, 200, // exam with an id: retried
		400,      // score 2: refused, not retried
		429, 200, // exam without an id: retried under its fresh id
	}}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	// The bodies are sent as JSON.stringify writes them: these exact bytes.
	score1 := `{"submission_id":"sub-1","exam_id":"e1","quiz_code":"DEMO42","nickname":"Zoë 🎓","score":9.5,"max_score":10,"submitted_at":"2026-03-02T09:41:07.123Z"}`
	score2 := `{"submission_id":"sub-2","exam_id":"e1","quiz_code":"NOPE","nickname":"Sam","score":3,"max_score":10,"submitted_at":"2026-03-02T09:42:00.000Z"}`
	exam := `{"exam_id":"e1","title":"Algebra","tutor_ids":["t1"],"quiz_code":"DEMO42","status":"open","starts_at":"2026-03-02T09:00:00Z","updated_at":"2026-03-01T08:00:00.123456Z"}`
	calls := `[{"fn":"pushScore","arg":` + score1 + `},{"fn":"pushExam","arg":` + exam + `,"id":"exam_e1_1"},` +
		`{"fn":"pushScore","arg":` + score2 + `},{"fn":"pushExam","arg":` + exam + `}]`

	out := runDeno(t, calls, "run", "--no-config", "--no-prompt", "--allow-net=127.0.0.1",
		"testdata/push.ts", ts.URL+"/", hookSecret)

	var outcomes []string
	if err := json.Unmarshal(out, &outcomes); err != nil {
		t.Fatalf("push.ts printed %q: %v", out, err)
	}
	if diff := gocmp.Diff([]string{"ok", "ok", "refused", "ok"}, outcomes); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}

	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.got) != 7 {
		t.Fatalf("%d deliveries, want 7: %+v", len(srv.got), srv.got)
	}
	freshID := srv.got[5].ID
	if !strings.HasPrefix(freshID, "exam_e1_") || freshID == "exam_e1_1" {
		t.Errorf("pushExam without an id sent %q, want a fresh exam_e1_<uuid>", freshID)
	}
	want := []delivery{
		{"/hooks/scores", "score_sub-1", score1}, {"/hooks/scores", "score_sub-1", score1},
		{"/hooks/exams", "exam_e1_1", exam}, {"/hooks/exams", "exam_e1_1", exam},
		{"/hooks/scores", "score_sub-2", score2},
		{"/hooks/exams", freshID, exam}, {"/hooks/exams", freshID, exam},
	}
	if diff := gocmp.Diff(want, srv.got); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	// Each retry came after invigil.ts's backoff (at least 0.5 s).
	for _, i := range []int{1, 3, 6} {
		if gap := srv.at[i].Sub(srv.at[i-1]); gap < 450*time.Millisecond {
			t.Errorf("delivery %d came %v after the one it retries, want a backoff of 0.5 s or more", i, gap)
		}
	}
}
