package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app"
	"invigil/app/demo"
	"invigil/store/storetest"
)

// bootDemo starts an in-process invigil wired as `go run . --demo
// --demo-students 0` is (dev sign-in at /demo/token, the seeded open exam
// "demo" watched by tutor-1), with heartbeats allowed every 100 ms.
func bootDemo(t *testing.T) string {
	t.Helper()
	clock := clockwork.NewRealClock()
	cfg := app.DefaultConfig()
	cfg.Demo = true
	cfg.DB = filepath.Join(t.TempDir(), "invigil.db")
	cfg.SupabaseURL = "http://127.0.0.1"
	cfg.HeartbeatMin = 100 * time.Millisecond
	issuer, err := demo.NewIssuer(cfg.Issuer(), clock)
	if err != nil {
		t.Fatal(err)
	}
	deps := app.Deps{
		Schema: storetest.Schema(t), Clock: clock,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		AuthKeys: issuer.AuthConfig(cfg.Issuer()),
		Extend:   issuer.Routes,
	}
	a, err := app.New(context.Background(), cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Seed(context.Background(), a.Exams); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Server.Handler())
	t.Cleanup(func() {
		a.Server.Shutdown(context.Background())
		srv.Close()
		a.Close()
	})
	return srv.URL
}

func TestLoadAgainstDemoServer(t *testing.T) {
	url := bootDemo(t)
	cfg := Config{
		URL: url, Students: 20, Tutors: 2, Interval: 300 * time.Millisecond, Duration: 2 * time.Second,
		Exam: "demo", TutorID: "tutor-1", Violation: 0.1, Seed: 1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	started := time.Now()
	var log bytes.Buffer
	r, err := Run(ctx, cfg, &log)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	var out bytes.Buffer
	r.Print(&out)
	t.Log(out.String())

	if n := r.TotalErrors(); n != 0 {
		t.Errorf("want no errors, got %d: %v", n, r.Errors)
	}
	if got := r.Calls["proctoring.startSession"]; got != 20 {
		t.Errorf("want 20 startSession calls, got %d", got)
	}
	// 2 s at 300 ms ±10 %: every student heartbeats 6 or 7 times.
	if got := len(r.Heartbeat); got < 20*5 {
		t.Errorf("want at least %d heartbeats, got %d", 20*5, got)
	}
	// Each of the 2 tutors sees (nearly) every heartbeat; bursts may merge
	// two of one student's into one frame, but not at 300 ms apart.
	if got, want := len(r.Visibility), len(r.Heartbeat); got < want {
		t.Errorf("tutors saw %d heartbeats, want at least %d (2 tutors × %d heartbeats / 2)", got, want, len(r.Heartbeat))
	}
	if r.TutorFrames == 0 {
		t.Error("tutors got no data frames")
	}
	if max := Pct(r.Visibility, 1); max <= 0 || max > 2*time.Second {
		t.Errorf("tutor visibility max %s: want a positive delay under 2s", max)
	}
	if r.ErrorPct() != 0 {
		t.Errorf("error rate %.2f%%", r.ErrorPct())
	}
	for _, want := range []string{"calls", "errors", "heartbeat RTT", "p90", "tutor visibility", "throughput"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if took := time.Since(started); took > 8*time.Second {
		t.Errorf("a 2 s run took %s", took)
	}
}

func TestRefusesNonLoopbackTargets(t *testing.T) {
	base := Config{Students: 1, Tutors: 1, Interval: time.Second, Duration: time.Second, Exam: "demo"}
	for _, u := range []string{"http://127.0.0.1:8080", "http://localhost:8099/", "http://[::1]:8080", "https://localhost"} {
		c := base
		c.URL = u
		if err := c.Validate(); err != nil {
			t.Errorf("%s: want accepted, got %v", u, err)
		}
	}
	for _, u := range []string{"http://10.0.0.5:8080", "http://example.com", "http://127.0.0.1.nip.io:8080",
		"ftp://127.0.0.1", "http://0.0.0.0:8080", "http://192.168.1.1", "ws://127.0.0.1:8080", "http://[::ffff:8.8.8.8]:80"} {
		c := base
		c.URL = u
		if err := c.Validate(); err == nil {
			t.Errorf("%s: want refused", u)
		}
	}
	c := base
	c.URL = "http://127.0.0.1:8080"
	c.Duration = time.Hour
	if err := c.Validate(); err == nil {
		t.Error("a one-hour run: want refused")
	}
	if _, err := Run(context.Background(), Config{URL: "http://example.com", Students: 1, Interval: time.Second,
		Duration: time.Second, Exam: "demo"}, io.Discard); err == nil {
		t.Error("Run against example.com: want refused")
	}
}
