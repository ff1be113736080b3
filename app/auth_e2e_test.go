package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"invigil/app/apptest"
	"invigil/app/auth"
	"invigil/app/identity"
	"invigil/app/proctoring"
)

// TestTokenExpiryPausesSocket: when a socket's token expires the server
// says so (error, no id, unauthenticated) and pauses it: no data, calls
// refused, another user's token refused. A fresh token resumes it and every
// subscription is re-sent once with its current value.
func TestTokenExpiryPausesSocket(t *testing.T) {
	h := bootWithExams(t)
	tutor := h.Dial(nil)
	tutor.Send(map[string]string{"type": "auth", "token": h.TokenTTL(tutor1, time.Minute)})
	if f := tutor.Next(); f.Type != "authed" {
		t.Fatalf("auth: got %+v", f)
	}
	student := h.DialAs(student1)
	e1 := map[string]string{"exam_id": "e1"}
	mustResult(t, student.Call("proctoring.startSession", e1))
	tutor.Sub("q1", "proctoring.getExamSessions", e1)
	tutor.Sub("q2", "proctoring.getViolations", e1)

	h.Advance(time.Minute + time.Second)
	wantError(t, tutor.Next(), "", "unauthenticated")

	// Writes during the pause reach no one on the paused socket.
	mustResult(t, student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 5, "answered_count": 4}))
	mustResult(t, student.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "copy"}))
	if got := tutor.Quiet(200 * time.Millisecond); len(got) > 0 {
		t.Fatalf("paused socket got %+v", got)
	}
	steps := []struct {
		name  string
		frame map[string]any
		id    string
	}{
		{"call", map[string]any{"type": "call", "id": "c1", "fn": "proctoring.getExamSessions", "args": e1}, "c1"},
		{"sub", map[string]any{"type": "sub", "id": "q3", "query": "proctoring.getExamSessions", "args": e1}, "q3"},
		{"another user's token", map[string]any{"type": "auth", "token": h.Token(tutor2)}, ""},
		{"call after another user's token", map[string]any{"type": "call", "id": "c2", "fn": "proctoring.getExamSessions", "args": e1}, "c2"},
	}
	for _, s := range steps {
		t.Run("paused: "+s.name, func(t *testing.T) {
			tutor.Send(s.frame)
			wantError(t, tutor.Next(), s.id, "unauthenticated")
		})
	}

	// A fresh token resumes the socket: both subscriptions, once each, with
	// the values the writes during the pause made.
	tutor.Send(map[string]string{"type": "auth", "token": h.Token(tutor1)})
	if f := tutor.Next(); f.Type != "authed" || f.User == nil || f.User.ID != tutor1.ID {
		t.Fatalf("re-auth: got %+v", f)
	}
	got := map[string]json.RawMessage{}
	for range 2 {
		f := tutor.Next()
		if f.Type != "data" || got[f.ID] != nil {
			t.Fatalf("want one data frame for each of q1 and q2, got %+v", f)
		}
		got[f.ID] = f.Value
	}
	if extra := tutor.Quiet(150 * time.Millisecond); len(extra) > 0 {
		t.Fatalf("resume sent more than one frame per subscription: %+v", extra)
	}
	current := func(query string) json.RawMessage {
		code, body := h.Query(tutor1, query, e1)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", query, code, body)
		}
		return json.RawMessage(body)
	}
	var gotSessions, wantSessions []proctoring.SessionView
	var gotViolations, wantViolations []proctoring.ViolationView
	decode(t, got["q1"], &gotSessions)
	decode(t, current("proctoring.getExamSessions"), &wantSessions)
	decode(t, got["q2"], &gotViolations)
	decode(t, current("proctoring.getViolations"), &wantViolations)
	if diff := cmp.Diff(wantSessions, gotSessions); diff != "" {
		t.Fatalf("q1 after resume (-current +sent):\n%s", diff)
	}
	if diff := cmp.Diff(wantViolations, gotViolations); diff != "" {
		t.Fatalf("q2 after resume (-current +sent):\n%s", diff)
	}
	if len(gotSessions) != 1 || gotSessions[0].CurrentQuestion != 5 || len(gotViolations) != 1 {
		t.Fatalf("resumed values miss the writes made during the pause: %+v %+v", gotSessions, gotViolations)
	}

	// And it is live again.
	h.Advance(5 * time.Second)
	mustResult(t, student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 6, "answered_count": 5}))
	if s := sessions(t, oneData(t, tutor, "q1")); len(s) != 1 || s[0].CurrentQuestion != 6 {
		t.Fatalf("after resume: got %+v", s)
	}
}

// TestSocketKeepsItsUser: a token for another user on an authenticated
// socket is refused and the socket stays its first user's.
func TestSocketKeepsItsUser(t *testing.T) {
	h := bootWithExams(t)
	w := h.DialAs(tutor1)
	w.Send(map[string]string{"type": "auth", "token": h.Token(tutor2)})
	wantError(t, w.Next(), "", "unauthenticated")
	// Still tutor-1: e1 is theirs, e2 (tutor-2's) is not.
	w.Sub("q1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
	w.Send(map[string]any{"type": "sub", "id": "q2", "query": "proctoring.getExamSessions", "args": map[string]string{"exam_id": "e2"}})
	wantError(t, w.Next(), "q2", "forbidden")
	// The same user's refreshed token is fine.
	w.Send(map[string]string{"type": "auth", "token": h.Token(tutor1)})
	if f := w.Next(); f.Type != "authed" || f.User == nil || f.User.ID != tutor1.ID {
		t.Fatalf("refresh: got %+v", f)
	}
}

func decode(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}

// jwksServer serves a Supabase-shaped key set that a test may add keys to.
type jwksServer struct {
	mu   sync.Mutex
	keys []map[string]string
}

func (s *jwksServer) add(t *testing.T, kid string, k *ecdsa.PrivateKey) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, publicJWK(t, kid, k))
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
}

// publicJWK is k's public half as Supabase publishes it.
func publicJWK(t *testing.T, kid string, k *ecdsa.PrivateKey) map[string]string {
	t.Helper()
	pub, err := k.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point := pub.Bytes() // 0x04 || X || Y
	b64 := base64.RawURLEncoding.EncodeToString
	return map[string]string{"kty": "EC", "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:65]),
		"kid": kid, "alg": "ES256", "use": "sig"}
}

func mustECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// supabaseClaims are an access token's claims for u, valid for an hour.
func supabaseClaims(u identity.User, now time.Time) map[string]any {
	return map[string]any{
		"iss": apptest.Issuer, "sub": u.ID, "aud": "authenticated",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"email": u.ID + "@example.com", "role": "authenticated",
		"app_metadata":  map[string]any{"provider": "email", "role": string(u.Role)},
		"user_metadata": map[string]any{"full_name": u.Name},
	}
}

// signES256 signs claims with k under kid, with jwx.
func signES256(t *testing.T, kid string, k *ecdsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, kid)
	hdr.Set(jws.TypeKey, "JWT")
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256, k, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// signRaw builds a compact token by hand: any header, and an HMAC-SHA256
// signature with key (no signature at all when key is nil).
func signRaw(t *testing.T, header, claims map[string]any, key []byte) string {
	t.Helper()
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(claims)
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(h) + "." + b64(p)
	if key == nil {
		return input + "."
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(input))
	return input + "." + b64(m.Sum(nil))
}

// edit returns a copy of claims changed by f.
func edit(claims map[string]any, f func(map[string]any)) map[string]any {
	c := make(map[string]any, len(claims))
	for k, v := range claims {
		c[k] = v
	}
	f(c)
	return c
}

// TestBadTokensRefused: every class of bad token is refused with
// unauthenticated by the socket's auth frame and by HTTP Bearer, while
// well-formed tokens from the same keys are accepted. The harness trusts a
// JWKS served here (and the legacy HS256 secret), as production does.
func TestBadTokensRefused(t *testing.T) {
	const hsSecret = "legacy-jwt-secret-at-least-32-bytes-long"
	key, other := mustECKey(t), mustECKey(t)
	keys := &jwksServer{}
	keys.add(t, "supabase-key-1", key)
	jwks := httptest.NewServer(keys)
	t.Cleanup(jwks.Close)
	h := bootWithExams(t, apptest.WithAuth(func(c *auth.Config) {
		c.JWKSURL = jwks.URL + "/auth/v1/.well-known/jwks.json"
		c.HS256Secret = []byte(hsSecret)
	}))

	now := h.Clock.Now()
	good := supabaseClaims(tutor1, now)
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubJWK, _ := json.Marshal(publicJWK(t, "supabase-key-1", key))
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT", "kid": "supabase-key-1"}
	valid := signES256(t, "supabase-key-1", key, good)
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(mustJSON(t,
		edit(good, func(c map[string]any) { c["app_metadata"] = map[string]any{"role": "admin"} }))) + "." + parts[2]

	cases := []struct {
		name  string
		token string
		ok    bool
		why   string // a word the refusal's message has, so it is refused for the right reason
	}{
		{name: "control: ES256 from the JWKS", token: valid, ok: true},
		{name: "control: HS256 with the legacy secret", token: signRaw(t, map[string]any{"alg": "HS256", "typ": "JWT"}, good, []byte(hsSecret)), ok: true},
		{name: "expired", token: signES256(t, "supabase-key-1", key, edit(good, func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Minute).Unix()
		})), why: "expired"},
		{name: "not yet valid", token: signES256(t, "supabase-key-1", key, edit(good, func(c map[string]any) {
			c["nbf"] = now.Add(time.Minute).Unix()
		})), why: "not yet valid"},
		{name: "wrong issuer", token: signES256(t, "supabase-key-1", key, edit(good, func(c map[string]any) {
			c["iss"] = "https://other-ref.supabase.co/auth/v1"
		})), why: "issuer"},
		{name: "wrong audience", token: signES256(t, "supabase-key-1", key, edit(good, func(c map[string]any) {
			c["aud"] = "anon"
		})), why: "audience"},
		{name: "no expiry", token: signES256(t, "supabase-key-1", key, edit(good, func(c map[string]any) {
			delete(c, "exp")
		})), why: "expiry"},
		{name: "alg none", token: signRaw(t, map[string]any{"alg": "none", "typ": "JWT", "kid": "supabase-key-1"}, good, nil), why: "algorithm"},
		{name: "HS256 signed with the public key PEM", token: signRaw(t, hs256, good, pubPEM), why: "signature"},
		{name: "HS256 signed with the public JWK", token: signRaw(t, hs256, good, pubJWK), why: "signature"},
		{name: "unknown kid", token: signES256(t, "not-in-the-jwks", other, good), why: "unknown signing key"},
		{name: "known kid, another key", token: signES256(t, "supabase-key-1", other, good), why: "signature"},
		{name: "tampered payload", token: tampered, why: "signature"},
	}
	for _, c := range cases {
		t.Run(c.name+"/ws", func(t *testing.T) {
			w := h.Dial(nil)
			w.Send(map[string]string{"type": "auth", "token": c.token})
			f := w.Next()
			if c.ok {
				if f.Type != "authed" || f.User == nil || *f.User != tutor1 {
					t.Fatalf("want authed as %+v, got %+v", tutor1, f)
				}
				return
			}
			wantError(t, f, "", "unauthenticated")
			if !strings.Contains(f.Message, c.why) {
				t.Errorf("refused for another reason: %q (want it to mention %q)", f.Message, c.why)
			}
			// Still not signed in.
			w.Send(map[string]any{"type": "call", "id": "c1", "fn": "proctoring.startSession", "args": map[string]string{"exam_id": "e1"}})
			wantError(t, w.Next(), "c1", "unauthenticated")
		})
		t.Run(c.name+"/http", func(t *testing.T) {
			code, body := postAs(h, "/api/query/proctoring.getExamSessions", c.token, []byte(`{"exam_id":"e1"}`))
			want := httpErr{Status: http.StatusUnauthorized, Code: "unauthenticated"}
			if c.ok {
				want = httpErr{Status: http.StatusOK}
			}
			if diff := cmp.Diff(want, decodeHTTPErr(t, code, body)); diff != "" {
				t.Fatalf("(-want +got):\n%s\nbody: %s", diff, body)
			}
		})
	}

	t.Run("key added to the JWKS after start", func(t *testing.T) {
		late := mustECKey(t)
		keys.add(t, "supabase-key-2", late)
		token := signES256(t, "supabase-key-2", late, supabaseClaims(tutor1, h.Clock.Now()))
		// Within 10 s of the last fetch the verifier does not refetch: a
		// stream of unknown kids must not become a stream of requests.
		if code, body := postAs(h, "/api/query/proctoring.getExamSessions", token, []byte(`{"exam_id":"e1"}`)); code != http.StatusUnauthorized {
			t.Fatalf("within the refresh floor: want 401, got %d %s", code, body)
		}
		h.Advance(11 * time.Second)
		if code, body := postAs(h, "/api/query/proctoring.getExamSessions", token, []byte(`{"exam_id":"e1"}`)); code != http.StatusOK {
			t.Fatalf("after the refresh floor: want 200, got %d %s", code, body)
		}
		w := h.Dial(nil)
		w.Send(map[string]string{"type": "auth", "token": token})
		if f := w.Next(); f.Type != "authed" || f.User == nil || *f.User != tutor1 {
			t.Fatalf("socket: want authed as %+v, got %+v", tutor1, f)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
