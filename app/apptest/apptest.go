// Package apptest boots the whole invigil wiring on a loopback port for
// end-to-end tests and benchmarks: a real SQLite file in a temp dir, real
// HTTP and WebSockets, tokens from an in-process issuer, signed hooks.
package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app"
	"invigil/app/auth"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/jobs"
	"invigil/app/webhook"
	"invigil/static"
	"invigil/store/storetest"
)

// Issuer is the token issuer the harness trusts.
const Issuer = "https://test-ref.supabase.co/auth/v1"

// HookSecret signs the harness's hooks.
const HookSecret = "whsec_dGVzdC1zZWNyZXQtZm9yLWludmlnaWwtaG9va3M="

// Harness is a running invigil.
type Harness struct {
	T     testing.TB
	App   *app.App
	URL   string
	Clock clockwork.Clock
	Fake  *clockwork.FakeClock // nil with a real clock
	Dev   *auth.DevIssuer

	jobRuns chan jobs.Run
	unseen  []jobs.Run // runs read while waiting for another job's
}

// Option adjusts the configuration before boot.
type Option func(*app.Config, *app.Deps)

// WithRealClock boots with the real clock (browser tests, benchmarks).
func WithRealClock() Option {
	return func(_ *app.Config, d *app.Deps) { d.Clock = clockwork.NewRealClock() }
}

// WithConfig edits the configuration.
func WithConfig(f func(*app.Config)) Option {
	return func(c *app.Config, _ *app.Deps) { f(c) }
}

// WithAuth edits the token verifier's configuration, e.g. to also trust a
// JWKS served by the test (auth.Config.JWKSURL) or an HS256 secret. Tokens
// from Harness.Token stay valid unless f sets KeySet.
func WithAuth(f func(*auth.Config)) Option {
	return func(_ *app.Config, d *app.Deps) { f(&d.AuthKeys) }
}

// WithDemo boots --demo with n simulated students: the demo's own token
// issuer (DemoToken) replaces the harness's.
func WithDemo(n int) Option {
	return func(c *app.Config, d *app.Deps) {
		c.Demo, c.DemoStudents, c.SupabaseURL, c.WebhookSecret = true, n, "", ""
		d.AuthKeys.Issuer = "demo" // tells Boot to leave the demo its issuer
	}
}

// WithLogs sends the app's logs (JSON, debug level) to w.
func WithLogs(w io.Writer) Option {
	return func(_ *app.Config, d *app.Deps) {
		d.Logger = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// WithSetup runs f on the wired app before it serves (tests register
// extra functions and queries there).
func WithSetup(f func(*app.App)) Option {
	return func(_ *app.Config, d *app.Deps) { d.Setup = append(d.Setup, f) }
}

// Boot starts invigil; everything stops when the test ends.
func Boot(t testing.TB, opts ...Option) *Harness {
	t.Helper()
	fake := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	cfg := app.DefaultConfig()
	cfg.DB = filepath.Join(t.TempDir(), "invigil.db")
	cfg.SupabaseURL = strings.TrimSuffix(Issuer, "/auth/v1")
	cfg.WebhookSecret = HookSecret
	// A loaded test machine stalls now and then; tests of behaviour must not
	// see overload control shed their sockets (its own tests set this).
	cfg.StallLag = time.Minute
	// On the fake clock, a push interval would hold every change until a
	// test moves the clock: tests of behaviour push at once.
	cfg.PushInterval = -1
	deps := app.Deps{
		Schema: storetest.Schema(t), Static: static.FS, Clock: fake,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	runs := make(chan jobs.Run, 4096)
	deps.AfterJob = func(r jobs.Run) {
		select {
		case runs <- r:
		default: // a test that does not wait on runs must not block the jobs
		}
	}
	dev, err := auth.NewDevIssuer(Issuer, deps.Clock)
	if err != nil {
		t.Fatal(err)
	}
	// Options may add ways to verify tokens (a JWKS URL, an HS256 secret);
	// the dev issuer's keys stay trusted unless an option sets its own KeySet.
	switch {
	case deps.AuthKeys.Issuer == "demo":
		deps.AuthKeys = auth.Config{}
	default:
		if deps.AuthKeys.Issuer == "" {
			deps.AuthKeys.Issuer = Issuer
		}
		if deps.AuthKeys.KeySet == nil {
			deps.AuthKeys.KeySet = dev.KeySet()
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = l.Addr().String()
	a, err := app.New(context.Background(), cfg, deps)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	// The real wiring: App.Run serves, runs the jobs and shuts down.
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx, l) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("App.Run: %v", err)
		}
		a.Close()
	})
	h := &Harness{T: t, App: a, URL: "http://" + l.Addr().String(), Clock: deps.Clock, Dev: dev, jobRuns: runs}
	if fc, ok := deps.Clock.(*clockwork.FakeClock); ok {
		h.Fake = fc
		// The scheduler arms one timer per job: once they are armed, moving
		// the clock runs the jobs that came due.
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fc.BlockUntilContext(wctx, len(a.Jobs())); err != nil {
			t.Fatal("the scheduler never armed its jobs' timers")
		}
	}
	return h
}

// JobRun returns the oldest finished run of the named scheduled job not
// returned yet, waiting for it (5 s at most). Not safe for concurrent use.
func (h *Harness) JobRun(name string) jobs.Run {
	h.T.Helper()
	for i, r := range h.unseen {
		if r.Name == name {
			h.unseen = append(h.unseen[:i], h.unseen[i+1:]...)
			return r
		}
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-h.jobRuns:
			if r.Name == name {
				return r
			}
			h.unseen = append(h.unseen, r)
		case <-deadline:
			h.T.Fatalf("job %s did not run", name)
			return jobs.Run{}
		}
	}
}

// RunJob runs the named scheduled job now, outside the scheduler, and
// returns the rows it touched.
func (h *Harness) RunJob(name string) int {
	h.T.Helper()
	for _, j := range h.App.Jobs() {
		if j.Name == name {
			n, err := j.Run(context.Background())
			if err != nil {
				h.T.Fatalf("job %s: %v", name, err)
			}
			return n
		}
	}
	h.T.Fatalf("no job %s", name)
	return 0
}

// DemoToken gets a token from the demo's sign-in (POST /demo/token).
func (h *Harness) DemoToken(userID, role string) string {
	h.T.Helper()
	code, body := h.Post("/demo/token", nil, []byte(`{"user_id":"`+userID+`","role":"`+role+`","name":"`+userID+`"}`))
	var out struct {
		Token string `json:"token"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil || out.Token == "" {
		h.T.Fatalf("demo token: %d %s", code, body)
	}
	return out.Token
}

// Token signs a token for u valid for an hour (of the harness's clock).
func (h *Harness) Token(u identity.User) string {
	return h.TokenTTL(u, time.Hour)
}

// TokenTTL signs a token for u valid for ttl.
func (h *Harness) TokenTTL(u identity.User, ttl time.Duration) string {
	h.T.Helper()
	tok, err := h.Dev.Sign(u, u.ID+"@example.com", ttl)
	if err != nil {
		h.T.Fatal(err)
	}
	return tok
}

// Hook posts a signed hook delivery and returns the status and body.
func (h *Harness) Hook(path, id string, body any) (int, string) {
	h.T.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		h.T.Fatal(err)
	}
	hdr, err := webhook.Sign(HookSecret, id, h.Clock.Now(), b)
	if err != nil {
		h.T.Fatal(err)
	}
	return h.Post(path, hdr, b)
}

// Post sends a raw POST.
func (h *Harness) Post(path string, hdr http.Header, body []byte) (int, string) {
	h.T.Helper()
	req, err := http.NewRequest(http.MethodPost, h.URL+path, bytes.NewReader(body))
	if err != nil {
		h.T.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.T.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// Exam registers an exam through the signed hook.
func (h *Harness) Exam(r exam.Registration) {
	h.T.Helper()
	if code, body := h.Hook("/hooks/exams", fmt.Sprintf("msg_%s_%d", r.ExamID, time.Now().UnixNano()), r); code != http.StatusOK {
		h.T.Fatalf("register exam %s: %d %s", r.ExamID, code, body)
	}
}

// Call invokes a function over HTTP as u; it returns the status and body.
func (h *Harness) Call(u identity.User, fn string, args any) (int, string) {
	h.T.Helper()
	return h.api(u, "/api/call/"+fn, args)
}

// Query reads a query over HTTP as u.
func (h *Harness) Query(u identity.User, query string, args any) (int, string) {
	h.T.Helper()
	return h.api(u, "/api/query/"+query, args)
}

// api posts JSON args to path with u's token (none for the anonymous user).
func (h *Harness) api(u identity.User, path string, args any) (int, string) {
	h.T.Helper()
	b, _ := json.Marshal(args)
	hdr := http.Header{}
	if u.ID != "" {
		hdr.Set("Authorization", "Bearer "+h.Token(u))
	}
	return h.Post(path, hdr, b)
}

// Advance moves the fake clock.
func (h *Harness) Advance(d time.Duration) {
	h.T.Helper()
	if h.Fake == nil {
		h.T.Fatal("Advance needs the fake clock")
	}
	h.Fake.Advance(d)
}
