package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/auth"
	"invigil/app/demo"
)

// TestMain lets this test binary stand in for `invigil load` when a --procs
// parent starts it as a child.
func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "load" {
		os.Exit(Command(os.Args[2:]))
	}
	os.Exit(m.Run())
}

const testJWTSecret = "invigil-load-test-hs256-secret"

// bootServer starts the whole invigil in this process on a loopback port,
// trusting HS256 tokens signed with testJWTSecret, heartbeats allowed every
// millisecond. (The contract says startSession does not count toward the
// minimum interval, but a server that counts it refuses the heartbeats that
// come just after a join; a millisecond keeps the test about the generator.)
func bootServer(t *testing.T) *apptest.Harness {
	t.Helper()
	return apptest.Boot(t, apptest.WithRealClock(),
		apptest.WithConfig(func(c *app.Config) { c.HeartbeatMin = time.Millisecond }),
		apptest.WithAuth(func(c *auth.Config) { c.HS256Secret = []byte(testJWTSecret) }))
}

// runLoad runs Main with --json and returns its exit code, report and stderr.
func runLoad(t *testing.T, h *apptest.Harness, extra ...string) (int, *Report, string) {
	t.Helper()
	args := append([]string{"--url", h.URL, "--jwt-secret", testJWTSecret, "--issuer", apptest.Issuer,
		"--webhook-secret", apptest.HookSecret, "--json", "--seed", "1"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, args, &stdout, &stderr)
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("exit %d; --json output is not a report: %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
	t.Logf("stderr:\n%s", stderr.String())
	return code, &rep, stderr.String()
}

func TestLoadAgainstInProcessServer(t *testing.T) {
	h := bootServer(t)
	const (
		students = 24
		exams    = 3
		tutors   = 2 // per exam
		interval = 300 * time.Millisecond
	)
	started := time.Now()
	code, r, stderr := runLoad(t, h, "--students", "24", "--exams", "3", "--tutors-per-exam", "2",
		"--interval", "300ms", "--duration", "3s", "--violations", "0.1", "--progress", "1s")
	if code != 0 {
		t.Errorf("exit code %d", code)
	}
	if c := r.Connections["students"]; c == nil || c.Wanted != students || c.Ready != students || c.Open != students {
		t.Errorf("students: %+v, want all %d joined and open", c, students)
	}
	if c := r.Connections["tutors"]; c == nil || c.Wanted != exams*tutors || c.Ready != exams*tutors {
		t.Errorf("tutors: %+v, want all %d watching", c, exams*tutors)
	}
	if r.ErrorsTotal != 0 {
		t.Errorf("errors: %v", r.ErrorsByCode)
	}
	if len(r.Anomalies) != 0 {
		t.Errorf("anomalies: %v", r.Anomalies)
	}
	hb := r.Fns[fnHeartbeat]
	if hb == nil || hb.Measured == 0 {
		t.Fatalf("no heartbeats: %+v", r.Fns)
	}
	// Every student heartbeats every 300 ms ±10 %: about 80 a second.
	perS := float64(hb.Measured) / r.ElapsedS
	if want := float64(students) / interval.Seconds(); perS < 0.8*want || perS > 1.2*want {
		t.Errorf("heartbeats %.1f/s, want about %.0f/s", perS, want)
	}
	if r.CallsPerS < perS || r.CallsPerS > 1.3*perS {
		t.Errorf("calls/s %.1f: want heartbeats (%.1f/s) plus ~10%% violations", r.CallsPerS, perS)
	}
	if r.Fns[fnViolation] == nil || r.Fns[fnViolation].Ack.N == 0 {
		t.Error("no violation was logged")
	}
	checkLatency(t, "heartbeat ack", r.HeartbeatAck, 2*time.Second)
	if r.HeartbeatAck.N != hb.Measured {
		t.Errorf("%d heartbeats answered of %d sent", r.HeartbeatAck.N, hb.Measured)
	}
	p := r.Propagation
	checkLatency(t, "propagation", p.Latency, 2*time.Second)
	if p.Watchers != exams*tutors || p.WatchersMeasured != p.Watchers {
		t.Errorf("propagation measured for %d of %d tutors", p.WatchersMeasured, p.Watchers)
	}
	if p.Expected != tutors*r.HeartbeatAck.N || p.Seen < p.Expected*9/10 || p.Seen > p.Expected {
		t.Errorf("tutors saw %d heartbeats, expected %d (%d tutors × %d heartbeats)", p.Seen, p.Expected, tutors, r.HeartbeatAck.N)
	}
	if tb := r.TutorBytes; tb.Tutors != exams*tutors || tb.Mean <= 0 || tb.Max < tb.Mean || tb.Zero != 0 {
		t.Errorf("bytes per tutor: %+v", tb)
	}
	if r.Server == nil || r.Server.PID != os.Getpid() || r.Server.RSSMaxMB <= 0 || r.Server.FDs <= 0 {
		t.Errorf("server found by its port: %+v, want this process (%d)", r.Server, os.Getpid())
	}
	if r.LoadGen == nil || r.LoadGen.RSSMaxMB <= 0 {
		t.Errorf("load generator figures: %+v", r.LoadGen)
	}
	for _, want := range []string{"calls/s", "ack p99", "heartbeat ack", "propagation", "bytes/tutor/s", "server", "errors"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr (progress and table) lacks %q", want)
		}
	}
	if took := time.Since(started); took > 15*time.Second {
		t.Errorf("a 3 s run took %s", took)
	}
}

// checkLatency wants ordered, positive, bounded percentiles.
func checkLatency(t *testing.T, name string, l Latency, bound time.Duration) {
	t.Helper()
	if l.N == 0 {
		t.Errorf("%s: no samples", name)
		return
	}
	if !(0 < l.P50 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("%s: p50 %.3f p95 %.3f p99 %.3f max %.3f ms are not ordered", name, l.P50, l.P95, l.P99, l.Max)
	}
	if l.Max > float64(bound.Milliseconds()) {
		t.Errorf("%s: max %.1f ms, want under %s", name, l.Max, bound)
	}
}

// Two child processes, chat and scores: the parent merges what they saw.
// Chat is served (issue 8): its calls must all succeed. The leaderboard
// may not exist on this server yet: its calls then fail with not_found,
// counted by code, and the run goes on.
func TestLoadInTwoProcessesWithChatAndScores(t *testing.T) {
	h := bootServer(t)
	code, r, _ := runLoad(t, h, "--students", "16", "--exams", "2", "--tutors-per-exam", "1", "--procs", "2",
		"--interval", "400ms", "--duration", "3s", "--violations", "0", "--chat-rate", "2", "--scores-rate", "1",
		"--progress", "1s")
	if r.LoadGen == nil || r.LoadGen.Procs != 2 || r.Settings.Procs != 2 {
		t.Errorf("want figures from 2 processes: %+v %+v", r.LoadGen, r.Settings)
	}
	if c := r.Connections["students"]; c == nil || c.Ready != 16 {
		t.Errorf("students: %+v", c)
	}
	if hb := r.Fns[fnHeartbeat]; hb == nil || len(hb.Errors) != 0 || hb.Ack.N == 0 {
		t.Errorf("heartbeats: %+v", hb)
	}
	if p := r.Propagation; p.Watchers != 2 || p.WatchersMeasured != 2 {
		t.Errorf("propagation measured for %d of %d tutors", p.WatchersMeasured, p.Watchers)
	}
	for _, fn := range []string{fnStartChat, fnSend, fnMessages, fnHookScores, fnLeaderboard} {
		f := r.Fns[fn]
		if f == nil {
			continue
		}
		for code := range f.Errors {
			// A server without the leaderboard does not know the query is
			// public, and wants a token first.
			chat := fn == fnStartChat || fn == fnSend || fn == fnMessages
			if chat || (code != "not_found" && !(fn == fnLeaderboard && code == "unauthenticated")) {
				t.Errorf("%s failed with %s", fn, code)
			}
		}
	}
	if f := r.Fns[fnSend]; f == nil || f.Ack.N == 0 {
		t.Errorf("no chat message was sent: %+v", f)
	} else if m := r.MessagePropagation; m == nil || m.N == 0 || m.WatchersMeasured == 0 {
		t.Errorf("messages sent but no tutor saw one: %+v", m)
	}
	if f := r.Fns[fnHookScores]; f != nil && f.Ack.N > 0 && r.Fns[fnLeaderboard].Ack.N > 0 {
		if s := r.ScorePropagation; s == nil || s.N == 0 {
			t.Errorf("scores posted but no projector saw one: %+v", s)
		}
	}
	if r.ErrorPct <= 5 && code != 0 {
		t.Errorf("exit %d with %.1f%% errors", code, r.ErrorPct)
	}
}

// With --demo, tokens come from the server's POST /demo/token.
func TestLoadWithDemoTokens(t *testing.T) {
	h := apptest.Boot(t, apptest.WithRealClock(),
		apptest.WithConfig(func(c *app.Config) { c.HeartbeatMin = time.Millisecond }),
		func(_ *app.Config, d *app.Deps) {
			issuer, err := demo.NewIssuer(apptest.Issuer, clockwork.NewRealClock())
			if err != nil {
				t.Fatal(err)
			}
			d.AuthKeys = issuer.AuthConfig(apptest.Issuer)
			d.Extend = issuer.Routes
		})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, []string{"--url", h.URL, "--demo", "--webhook-secret", apptest.HookSecret, "--students", "6",
		"--tutors-per-exam", "1", "--interval", "200ms", "--duration", "1s", "--progress", "0", "--json"}, &stdout, &stderr)
	var r Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s\n%s", code, err, stdout.String(), stderr.String())
	}
	if tok := r.Fns[fnToken]; tok == nil || tok.Calls != 7 || len(tok.Errors) != 0 {
		t.Errorf("demo tokens: %+v, want 7 (6 students, 1 tutor)", tok)
	}
	if r.Connections["students"].Ready != 6 || r.ErrorsTotal != 0 || r.Propagation.N == 0 {
		t.Errorf("report: %s", stderr.String())
	}
}
