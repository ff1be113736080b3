package transport_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
	"invigil/app/transport"
	"invigil/store/storetest"
)

// The transport is tested here without any feature: one echo function and a
// verifier that accepts the token "good".

type fakeVerifier struct{ clock clockwork.Clock }

func (v fakeVerifier) Verify(_ context.Context, token string) (identity.User, time.Time, error) {
	if token != "good" {
		return identity.User{}, time.Time{}, apperr.New(apperr.Unauthenticated, "bad token")
	}
	return identity.User{ID: "u1", Role: identity.Student, Name: "U"}, v.clock.Now().Add(time.Hour), nil
}

func serve(t *testing.T, opts transport.Options) (*httptest.Server, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClock()
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	e.Func("test.echo", func(_ context.Context, c engine.Caller, args json.RawMessage) (any, error) {
		return map[string]any{"user": c.User.ID, "args": args}, nil
	})
	opts.Engine, opts.Verifier, opts.Clock = e, fakeVerifier{clock}, clock
	srv := httptest.NewServer(transport.New(opts).Handler())
	t.Cleanup(srv.Close)
	return srv, clock
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestHTTPCalls(t *testing.T) {
	srv, _ := serve(t, transport.Options{})
	cases := []struct {
		name, path, token, body string
		status                  int
		contains                string
	}{
		{"ok", "/api/call/test.echo", "good", `{"x":1}`, 200, `{"args":{"x":1},"user":"u1"}`},
		{"no token", "/api/call/test.echo", "", `{}`, 401, `"code":"unauthenticated"`},
		{"bad token", "/api/call/test.echo", "bad", `{}`, 401, `"code":"unauthenticated"`},
		{"unknown function", "/api/call/test.nope", "good", `{}`, 404, `"code":"not_found"`},
		{"unknown query", "/api/query/test.nope", "good", `{}`, 404, `"code":"not_found"`},
		{"too large", "/api/call/test.echo", "good", `{"x":"` + strings.Repeat("a", 70_000) + `"}`, 413, `"code":"too_large"`},
		{"no such hook", "/hooks/nope", "", `{}`, 404, `"code":"not_found"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := post(t, srv.URL+c.path, c.token, c.body)
			if status != c.status || !strings.Contains(body, c.contains) {
				t.Fatalf("want %d containing %s, got %d %s", c.status, c.contains, status, body)
			}
		})
	}
}

func TestCallsAreRateLimitedPerUser(t *testing.T) {
	srv, clock := serve(t, transport.Options{CallRate: 1, CallBurst: 3})
	for i := range 3 {
		if status, body := post(t, srv.URL+"/api/call/test.echo", "good", `{}`); status != 200 {
			t.Fatalf("call %d within the burst: %d %s", i, status, body)
		}
	}
	status, body := post(t, srv.URL+"/api/call/test.echo", "good", `{}`)
	if status != 429 || !strings.Contains(body, `"code":"rate_limited"`) || !strings.Contains(body, `"retry_after_ms"`) {
		t.Fatalf("past the burst: want 429 rate_limited with retry_after_ms, got %d %s", status, body)
	}
	clock.Advance(time.Second)
	if status, body := post(t, srv.URL+"/api/call/test.echo", "good", `{}`); status != 200 {
		t.Fatalf("a second later: %d %s", status, body)
	}
}

func TestHooksRefusedWithoutSecret(t *testing.T) {
	srv, _ := serve(t, transport.Options{Hooks: map[string]transport.HookHandler{
		"exams": func(context.Context, string, []byte) error {
			t.Error("an unsigned hook reached its handler")
			return nil
		},
	}})
	if status, body := post(t, srv.URL+"/hooks/exams", "", `{}`); status != 401 {
		t.Fatalf("want 401, got %d %s", status, body)
	}
}

// TestShutdownBeforeServe: a shutdown that comes before the server began
// serving (a SIGTERM during startup) makes the later Serve return at once
// instead of serving forever.
func TestShutdownBeforeServe(t *testing.T) {
	clock := clockwork.NewFakeClock()
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	srv := transport.New(transport.Options{Engine: e, Verifier: fakeVerifier{clock}, Clock: clock})
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		l.Close()
		t.Fatal("Serve after Shutdown did not return")
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after Serve returned")
	}
}
