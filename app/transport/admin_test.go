package transport_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
	"invigil/app/transport"
	"invigil/store/storetest"
)

// roleVerifier accepts a token that is a role's name, as that role.
type roleVerifier struct{ clock clockwork.Clock }

func (v roleVerifier) Verify(_ context.Context, token string) (identity.User, time.Time, error) {
	switch r := identity.Role(token); r {
	case identity.Student, identity.Tutor, identity.Agent, identity.Admin:
		return identity.User{ID: "u-" + token, Role: r, Name: token}, v.clock.Now().Add(time.Hour), nil
	}
	return identity.User{}, time.Time{}, apperr.New(apperr.Unauthenticated, "bad token")
}

// The transport serves whatever read-only admin endpoints it is handed,
// to admins only, knowing nothing of what they show.
func TestAdminEndpoints(t *testing.T) {
	clock := clockwork.NewFakeClock()
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	srv := httptest.NewServer(transport.New(transport.Options{
		Engine: e, Verifier: roleVerifier{clock}, Clock: clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Admin: map[string]transport.AdminHandler{
			"things": func(context.Context) (any, error) {
				return []map[string]any{{"name": "a", "n": 1}}, nil
			},
			"refused": func(context.Context) (any, error) { return nil, apperr.New(apperr.Conflict, "not now") },
			"broken":  func(context.Context) (any, error) { return nil, errors.New("disk I/O error at /var/secret") },
		},
	}).Handler())
	t.Cleanup(srv.Close)

	cases := []struct {
		name, method, path, token string
		status                    int
		body                      string
	}{
		{"admin", "GET", "/api/admin/things", "admin", 200, `[{"n":1,"name":"a"}]`},
		{"no token", "GET", "/api/admin/things", "", 401, `{"code":"unauthenticated","message":"send Authorization: Bearer <token>"}`},
		{"bad token", "GET", "/api/admin/things", "nobody", 401, `{"code":"unauthenticated","message":"bad token"}`},
		{"student", "GET", "/api/admin/things", "student", 403, `{"code":"forbidden","message":"admins only"}`},
		{"tutor", "GET", "/api/admin/things", "tutor", 403, `{"code":"forbidden","message":"admins only"}`},
		{"agent", "GET", "/api/admin/things", "agent", 403, `{"code":"forbidden","message":"admins only"}`},
		{"unknown, as a student", "GET", "/api/admin/nope", "student", 403, `{"code":"forbidden","message":"admins only"}`},
		{"unknown, as an admin", "GET", "/api/admin/nope", "admin", 404, `{"code":"not_found","message":"no admin endpoint \"nope\""}`},
		{"handler's own code", "GET", "/api/admin/refused", "admin", 409, `{"code":"conflict","message":"not now"}`},
		{"internal error, no detail", "GET", "/api/admin/broken", "admin", 500, `{"code":"internal","message":"internal error"}`},
		{"read only", "POST", "/api/admin/things", "admin", 404, `{"code":"not_found","message":"Method Not Allowed"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			var got, want any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("body is not JSON: %s", b)
			}
			json.Unmarshal([]byte(c.body), &want)
			if diff := cmp.Diff(want, got); res.StatusCode != c.status || diff != "" {
				t.Fatalf("%s %s: status %d (want %d), body (-want +got):\n%s", c.method, c.path, res.StatusCode, c.status, diff)
			}
			if c.status == 200 && res.Header.Get("Cache-Control") != "no-store" {
				t.Fatal("an admin answer may be cached")
			}
		})
	}
}
