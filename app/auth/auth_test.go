package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"invigil/app/apperr"
	"invigil/app/identity"
)

const testIssuer = "https://ref.supabase.co/auth/v1"

var epoch = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// testKeys are generated once: RSA generation is slow under -race.
type testKeys struct {
	ec, ec2, rsa, late jwk.Key // private keys with kid, alg and use set
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func mustKeys(t testing.TB) testKeys {
	t.Helper()
	keysOnce.Do(func() {
		keys = testKeys{
			ec:   mustKey(t, mustECDSA(t), "ec-key-1", jwa.ES256),
			ec2:  mustKey(t, mustECDSA(t), "ec-key-2", jwa.ES256),
			rsa:  mustKey(t, mustRSA(t), "rsa-key-1", jwa.RS256),
			late: mustKey(t, mustECDSA(t), "ec-key-late", jwa.ES256),
		}
	})
	return keys
}

func mustECDSA(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustKey(t testing.TB, raw any, kid string, alg jwa.SignatureAlgorithm) jwk.Key {
	t.Helper()
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: alg, jwk.KeyUsageKey: "sig"} {
		if err := k.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

func mustPublic(t testing.TB, k jwk.Key) jwk.Key {
	t.Helper()
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// jwksServer serves a key set the way Supabase serves
// /auth/v1/.well-known/jwks.json, and counts fetches.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int32
	mu      sync.Mutex
	keys    []jwk.Key     // public
	down    bool          // answer 503
	gate    chan struct{} // when set, requests wait for it (a hanging Supabase)
}

func mustJWKSServer(t testing.TB, keys ...jwk.Key) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	for _, k := range keys {
		s.add(t, k)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) add(t testing.TB, private jwk.Key) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, mustPublic(t, private))
}

func (s *jwksServer) remove(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.keys[:0]
	for _, k := range s.keys {
		if k.KeyID() != kid {
			kept = append(kept, k)
		}
	}
	s.keys = kept
}

func (s *jwksServer) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
		return
	}
	// Supabase adds key_ops and ext to each key: {"alg":"ES256","crv":"P-256",
	// "ext":true,"key_ops":["verify"],"kid":"…","kty":"EC","use":"sig","x":"…","y":"…"}
	out := struct {
		Keys []map[string]any `json:"keys"`
	}{Keys: []map[string]any{}}
	for _, k := range s.keys {
		buf, err := json.Marshal(k)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var m map[string]any
		if err := json.Unmarshal(buf, &m); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		m["key_ops"] = []string{"verify"}
		m["ext"] = true
		out.Keys = append(out.Keys, m)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=600")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *jwksServer) url() string { return s.URL + "/auth/v1/.well-known/jwks.json" }

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	v, err := NewVerifier(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// drop marks a claim to remove from the defaults.
type drop struct{}

// claims returns Supabase-shaped claims valid at now, with overrides.
func claims(now time.Time, over map[string]any) map[string]any {
	c := map[string]any{
		"iss":           testIssuer,
		"sub":           "user-1",
		"aud":           "authenticated",
		"exp":           now.Add(time.Hour).Unix(),
		"iat":           now.Unix(),
		"email":         "ada@example.com",
		"role":          "authenticated",
		"aal":           "aal1",
		"session_id":    "sess-1",
		"is_anonymous":  false,
		"app_metadata":  map[string]any{"provider": "email", "providers": []string{"email"}, "role": "tutor"},
		"user_metadata": map[string]any{"full_name": "Ada Lovelace", "email_verified": true},
	}
	for k, v := range over {
		if _, ok := v.(drop); ok {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// mustSign signs claims with key (a jwk.Key or raw HMAC bytes), putting kid
// in the header when non-empty.
func mustSign(t testing.TB, alg jwa.SignatureAlgorithm, key any, kid string, c map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		t.Fatal(err)
	}
	if kid != "" {
		if err := hdr.Set(jws.KeyIDKey, kid); err != nil {
			t.Fatal(err)
		}
	}
	if k, ok := key.(jwk.Key); ok {
		// jws copies a jwk.Key's kid into the header; make it the one asked for.
		k, err = k.Clone()
		if err != nil {
			t.Fatal(err)
		}
		if kid == "" {
			err = k.Remove(jwk.KeyIDKey)
		} else {
			err = k.Set(jwk.KeyIDKey, kid)
		}
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func b64(v any) string {
	buf, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// unsigned builds an alg "none" token.
func unsigned(kid string, c map[string]any) string {
	return b64(map[string]any{"alg": "none", "typ": "JWT", "kid": kid}) + "." + b64(c) + "."
}

// withPayload swaps the payload of a signed token, keeping its signature.
func withPayload(token string, c map[string]any) string {
	parts := strings.Split(token, ".")
	parts[1] = b64(c)
	return strings.Join(parts, ".")
}

func publicPEM(t *testing.T, k jwk.Key) []byte {
	t.Helper()
	var raw any
	if err := mustPublic(t, k).Raw(&raw); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func publicJSON(t *testing.T, k jwk.Key) []byte {
	t.Helper()
	buf, err := json.Marshal(mustPublic(t, k))
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func wantCode(t *testing.T, err error, code apperr.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if _, ok := err.(*apperr.Error); !ok {
		t.Fatalf("error %v is %T, want *apperr.Error", err, err)
	}
	if got := apperr.CodeOf(err); got != code {
		t.Fatalf("code = %s (%v), want %s", got, err, code)
	}
}

func TestVerify(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	now := clock.Now()
	srv := mustJWKSServer(t, k.ec, k.rsa)
	jwksOnly := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock})
	withSecret := mustVerifier(t, Config{JWKSURL: srv.url(), HS256Secret: []byte("legacy-secret"), Clock: clock})

	valid := claims(now, nil)
	es256 := mustSign(t, jwa.ES256, k.ec, "ec-key-1", valid)
	ada := identity.User{ID: "user-1", Role: identity.Tutor, Name: "Ada Lovelace"}

	tests := []struct {
		name    string
		v       *Verifier
		token   string
		want    identity.User
		wantExp time.Time
		msg     string // want Unauthenticated with this message when set
	}{
		{name: "es256", token: es256, want: ada, wantExp: now.Add(time.Hour)},
		{name: "rs256", token: mustSign(t, jwa.RS256, k.rsa, "rsa-key-1", valid), want: ada, wantExp: now.Add(time.Hour)},
		{name: "aud list", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"aud": []string{"other", "authenticated"}})), want: ada, wantExp: now.Add(time.Hour)},
		{name: "exp within skew", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"exp": now.Add(-2 * time.Second).Unix()})), want: ada, wantExp: now.Add(-2 * time.Second)},
		{name: "user_metadata role ignored", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(now, map[string]any{
			"app_metadata":  map[string]any{"provider": "email"},
			"user_metadata": map[string]any{"full_name": "Mallory", "role": "admin"},
			"role":          "admin",
		})), want: identity.User{ID: "user-1", Role: identity.Student, Name: "Mallory"}, wantExp: now.Add(time.Hour)},
		{name: "unknown app role is student", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(now, map[string]any{
			"app_metadata": map[string]any{"role": "superuser"},
		})), want: identity.User{ID: "user-1", Role: identity.Student, Name: "Ada Lovelace"}, wantExp: now.Add(time.Hour)},
		{name: "admin", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(now, map[string]any{
			"app_metadata": map[string]any{"role": "admin"},
		})), want: identity.User{ID: "user-1", Role: identity.Admin, Name: "Ada Lovelace"}, wantExp: now.Add(time.Hour)},
		{name: "name from user_metadata.name", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(now, map[string]any{
			"user_metadata": map[string]any{"name": "Ada L."},
		})), want: identity.User{ID: "user-1", Role: identity.Tutor, Name: "Ada L."}, wantExp: now.Add(time.Hour)},
		{name: "name from email", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(now, map[string]any{
			"user_metadata": map[string]any{"full_name": "  "},
		})), want: identity.User{ID: "user-1", Role: identity.Tutor, Name: "ada"}, wantExp: now.Add(time.Hour)},
		{name: "name from sub", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(now, map[string]any{
			"user_metadata": drop{}, "email": drop{},
		})), want: identity.User{ID: "user-1", Role: identity.Tutor, Name: "user-1"}, wantExp: now.Add(time.Hour)},
		{name: "hs256 legacy secret", v: withSecret, token: mustSign(t, jwa.HS256, []byte("legacy-secret"), "", valid),
			want: ada, wantExp: now.Add(time.Hour)},

		{name: "expired", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"exp": now.Add(-time.Minute).Unix()})), msg: "token expired"},
		{name: "no exp", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"exp": drop{}})), msg: "token has no expiry"},
		{name: "exp zero", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"exp": 0})), msg: "token has no expiry"},
		{name: "nbf in future", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"nbf": now.Add(time.Minute).Unix()})), msg: "token not yet valid"},
		{name: "iat in future", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"iat": now.Add(time.Minute).Unix()})), msg: "token not yet valid"},
		{name: "wrong issuer", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"iss": "https://other.supabase.co/auth/v1"})), msg: "wrong token issuer"},
		{name: "issuer with trailing slash", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"iss": testIssuer + "/"})), msg: "wrong token issuer"},
		{name: "wrong audience", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"aud": "anon"})), msg: "wrong token audience"},
		{name: "no audience", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"aud": drop{}})), msg: "wrong token audience"},
		{name: "missing sub", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"sub": drop{}})), msg: "token has no subject"},
		{name: "empty sub", token: mustSign(t, jwa.ES256, k.ec, "ec-key-1",
			claims(now, map[string]any{"sub": ""})), msg: "token has no subject"},
		{name: "alg none", token: unsigned("ec-key-1", valid), msg: "unsupported token algorithm"},
		{name: "alg none with secret", v: withSecret, token: unsigned("", valid), msg: "unsupported token algorithm"},
		{name: "hs256 keyed with public PEM", token: mustSign(t, jwa.HS256, publicPEM(t, k.ec), "ec-key-1", valid),
			msg: "HS256 tokens are not accepted"},
		{name: "hs256 keyed with public JWK JSON", token: mustSign(t, jwa.HS256, publicJSON(t, k.ec), "ec-key-1", valid),
			msg: "HS256 tokens are not accepted"},
		{name: "hs256 keyed with public PEM, secret set", v: withSecret,
			token: mustSign(t, jwa.HS256, publicPEM(t, k.rsa), "rsa-key-1", valid), msg: "invalid token signature"},
		{name: "hs256 wrong secret", v: withSecret, token: mustSign(t, jwa.HS256, []byte("not-the-secret"), "", valid),
			msg: "invalid token signature"},
		{name: "hs384 refused", v: withSecret, token: mustSign(t, jwa.HS384, []byte("legacy-secret"), "", valid),
			msg: "unsupported token algorithm"},
		{name: "unknown kid", token: mustSign(t, jwa.ES256, k.ec2, "nobody", valid), msg: "unknown signing key"},
		{name: "no kid", token: mustSign(t, jwa.ES256, k.ec, "", valid), msg: "token has no key id"},
		{name: "other key under a known kid", token: mustSign(t, jwa.ES256, k.ec2, "ec-key-1", valid),
			msg: "invalid token signature"},
		{name: "rs256 under an EC kid", token: mustSign(t, jwa.RS256, k.rsa, "ec-key-1", valid),
			msg: "signing key does not match the token algorithm"},
		{name: "es384 under an ES256 kid", token: mustSign(t, jwa.ES384, mustKey(t, mustECDSA384(t), "x", jwa.ES384), "ec-key-1", valid),
			msg: "signing key does not match the token algorithm"},
		{name: "tampered payload", token: withPayload(es256, claims(now, map[string]any{
			"app_metadata": map[string]any{"role": "admin"},
		})), msg: "invalid token signature"},
		{name: "empty", token: "", msg: "missing token"},
		{name: "garbage", token: "not-a-token", msg: "malformed token"},
		{name: "four segments", token: es256 + ".x", msg: "malformed token"},
		{name: "huge", token: strings.Repeat("a", maxTokenBytes+1), msg: "token too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.v
			if v == nil {
				v = jwksOnly
			}
			got, exp, err := v.Verify(t.Context(), tt.token)
			if tt.msg != "" {
				wantCode(t, err, apperr.Unauthenticated)
				if got := apperr.As(err).Message; got != tt.msg {
					t.Errorf("message = %q, want %q", got, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("user (-want +got):\n%s", diff)
			}
			if !exp.Equal(tt.wantExp) {
				t.Errorf("exp = %v, want %v", exp, tt.wantExp)
			}
		})
	}
}

func mustECDSA384(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerifySecretOnly(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	v := mustVerifier(t, Config{HS256Secret: []byte("legacy-secret"), Clock: clock})
	c := claims(clock.Now(), nil)

	if _, _, err := v.Verify(t.Context(), mustSign(t, jwa.HS256, []byte("legacy-secret"), "", c)); err != nil {
		t.Fatalf("HS256 with the secret: %v", err)
	}
	_, _, err := v.Verify(t.Context(), mustSign(t, jwa.ES256, k.ec, "ec-key-1", c))
	wantCode(t, err, apperr.Unauthenticated)
}

func TestVerifyKeyAddedAfterStart(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	srv := mustJWKSServer(t, k.ec)
	v := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock})
	if got := srv.fetches.Load(); got != 1 {
		t.Fatalf("fetches after start = %d, want 1 (warm-up)", got)
	}

	clock.Advance(time.Minute)
	srv.add(t, k.late) // Supabase rotated in a new key
	token := mustSign(t, jwa.ES256, k.late, "ec-key-late", claims(clock.Now(), nil))
	if _, _, err := v.Verify(t.Context(), token); err != nil {
		t.Fatalf("token signed with the new key: %v", err)
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2 (one refresh for the unknown kid)", got)
	}
	// The refreshed set is cached: no more fetches for either key.
	for _, tok := range []string{token, mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(clock.Now(), nil))} {
		if _, _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Errorf("fetches = %d, want still 2", got)
	}
}

func TestVerifyUnknownKidRefreshRateLimited(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	srv := mustJWKSServer(t, k.ec)
	v := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock})

	garbage := func(i int) string {
		return mustSign(t, jwa.ES256, k.ec2, "garbage-"+string(rune('a'+i)), claims(clock.Now(), nil))
	}
	// At most one JWKS request per jwksMinInterval, whatever the tokens say.
	steps := []struct {
		advance     time.Duration
		tries       int
		wantFetches int32
	}{
		{0, 20, 1},               // the warm-up fetch was just now
		{jwksMinInterval, 20, 2}, // one forced refresh for all 20
		{9 * time.Second, 20, 2}, // still inside the window
		{time.Second, 20, 3},     // window over: one more
		{jwksTTL, 1, 4},          // the routine refresh; no forced one on top
		{9 * time.Second, 20, 4}, // the routine fetch counts too
		{time.Second, 20, 5},     // window over
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		for j := range s.tries {
			_, _, err := v.Verify(t.Context(), garbage(j))
			wantCode(t, err, apperr.Unauthenticated)
		}
		v.jwks.settle() // a routine refresh runs in the background
		if got := srv.fetches.Load(); got != s.wantFetches {
			t.Fatalf("step %d: fetches = %d, want %d", i, got, s.wantFetches)
		}
	}
}

func TestVerifyPeriodicRefreshDropsRemovedKeys(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	srv := mustJWKSServer(t, k.ec, k.ec2)
	v := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock})

	sign := func() string { return mustSign(t, jwa.ES256, k.ec2, "ec-key-2", claims(clock.Now(), nil)) }
	if _, _, err := v.Verify(t.Context(), sign()); err != nil {
		t.Fatal(err)
	}
	srv.remove("ec-key-2") // revoked in Supabase

	clock.Advance(jwksRefreshAt - time.Second)
	if _, _, err := v.Verify(t.Context(), sign()); err != nil {
		t.Fatalf("before the refresh is due the old key still works: %v", err)
	}
	clock.Advance(time.Second)
	// This request starts the refresh and is served from the set it had.
	if _, _, err := v.Verify(t.Context(), sign()); err != nil {
		t.Fatalf("the request that starts the refresh waits for nothing: %v", err)
	}
	v.jwks.settle()
	_, _, err := v.Verify(t.Context(), sign())
	wantCode(t, err, apperr.Unauthenticated)
	if got := srv.fetches.Load(); got != 2 {
		t.Errorf("fetches = %d, want one periodic refresh", got)
	}
}

// TestVerifyKeepsGoodKeys: an answer with an empty or unusable key set
// does not replace the keys we had.
func TestVerifyKeepsGoodKeys(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	srv := mustJWKSServer(t, k.ec)
	v := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock})
	token := func() string { return mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(clock.Now(), nil)) }
	srv.remove("ec-key-1") // Supabase answers 200 with {"keys": []}
	clock.Advance(jwksTTL)
	v.Verify(t.Context(), token())
	v.jwks.settle()
	if got := srv.fetches.Load(); got != 2 {
		t.Fatalf("fetches = %d, want a refresh", got)
	}
	if _, _, err := v.Verify(t.Context(), token()); err != nil {
		t.Fatalf("an empty key set replaced the good keys: %v", err)
	}
}

// TestVerifyNeverWaitsForARefresh: once a set is in, a slow Supabase
// never holds a request: the refresh runs beside it.
func TestVerifyNeverWaitsForARefresh(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	srv := mustJWKSServer(t, k.ec)
	v := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock})
	release := make(chan struct{})
	srv.mu.Lock()
	srv.gate = release // Supabase hangs
	srv.mu.Unlock()
	defer close(release)
	clock.Advance(jwksTTL + time.Minute)
	done := make(chan error, 1)
	go func() {
		_, _, err := v.Verify(t.Context(), mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(clock.Now(), nil)))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a request waited for a hanging key set refresh")
	}
}

// TestVerifyTokensWithoutIssuer: a self-hosted Supabase may set no
// issuer; configured so, tokens without iss are accepted and tokens with
// one refused.
func TestVerifyTokensWithoutIssuer(t *testing.T) {
	clock := clockwork.NewFakeClockAt(epoch)
	v, err := NewVerifier(t.Context(), Config{NoIssuer: true, HS256Secret: []byte("legacy-secret"), Clock: clock, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(t.Context(), mustSign(t, jwa.HS256, []byte("legacy-secret"), "", claims(clock.Now(), map[string]any{"iss": drop{}}))); err != nil {
		t.Fatalf("a token without iss: %v", err)
	}
	_, _, err = v.Verify(t.Context(), mustSign(t, jwa.HS256, []byte("legacy-secret"), "", claims(clock.Now(), nil)))
	wantCode(t, err, apperr.Unauthenticated)
	if _, err := NewVerifier(t.Context(), Config{HS256Secret: []byte("x")}); err == nil {
		t.Fatal("a verifier with no issuer and no NoIssuer was built")
	}
}

func TestVerifyJWKSUnreachableAtStart(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	srv := mustJWKSServer(t, k.ec)
	srv.setDown(true)
	v := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock}) // must not fail

	token := func() string { return mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(clock.Now(), nil)) }
	_, _, err := v.Verify(t.Context(), token())
	wantCode(t, err, apperr.Unauthenticated)
	if msg := apperr.As(err).Message; msg != "signing keys unavailable" {
		t.Errorf("message = %q", msg)
	}

	srv.setDown(false)
	_, _, err = v.Verify(t.Context(), token()) // retries are rate-limited
	wantCode(t, err, apperr.Unauthenticated)

	clock.Advance(jwksMinInterval)
	if _, _, err := v.Verify(t.Context(), token()); err != nil {
		t.Fatalf("after Supabase came back: %v", err)
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}

	// A failed refresh keeps the keys we had.
	srv.setDown(true)
	clock.Advance(jwksTTL)
	if _, _, err := v.Verify(t.Context(), token()); err != nil {
		t.Fatalf("with a stale set and Supabase down: %v", err)
	}
}

func TestVerifyUnreachableHost(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/jwks.json"
	srv.Close() // connection refused from now on
	v := mustVerifier(t, Config{JWKSURL: url, Clock: clockwork.NewFakeClockAt(epoch)})
	_, _, err := v.Verify(t.Context(), mustSign(t, jwa.ES256, mustKeys(t).ec, "ec-key-1", claims(epoch, nil)))
	wantCode(t, err, apperr.Unauthenticated)
}

func TestVerifyConcurrent(t *testing.T) {
	k := mustKeys(t)
	clock := clockwork.NewFakeClockAt(epoch)
	srv := mustJWKSServer(t, k.ec)
	v := mustVerifier(t, Config{JWKSURL: srv.url(), Clock: clock})
	good := mustSign(t, jwa.ES256, k.ec, "ec-key-1", claims(clock.Now(), nil))
	bad := mustSign(t, jwa.ES256, k.ec2, "nobody", claims(clock.Now(), nil))

	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if i%8 == 0 {
				clock.Advance(jwksTTL) // force routine refreshes mid-flight
			}
			if _, _, err := v.Verify(context.Background(), good); err != nil {
				t.Errorf("good token: %v", err)
			}
			if _, _, err := v.Verify(context.Background(), bad); apperr.CodeOf(err) != apperr.Unauthenticated {
				t.Errorf("bad token: %v", err)
			}
		})
	}
	wg.Wait()
}

func TestNewVerifierConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings; nil = no error
	}{
		{name: "nothing", cfg: Config{Issuer: testIssuer},
			wantErr: []string{"SUPABASE_URL", "SUPABASE_JWKS_URL", "SUPABASE_JWT_SECRET"}},
		{name: "empty key set", cfg: Config{Issuer: testIssuer, KeySet: jwk.NewSet()},
			wantErr: []string{"SUPABASE_JWT_SECRET"}},
		{name: "no issuer", cfg: Config{HS256Secret: []byte("s")}, wantErr: []string{"SUPABASE_URL"}},
		{name: "bad jwks url", cfg: Config{Issuer: testIssuer, JWKSURL: "ftp://x"}, wantErr: []string{"SUPABASE_JWKS_URL"}},
		{name: "secret", cfg: Config{Issuer: testIssuer, HS256Secret: []byte("s")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = quietLogger()
			_, err := NewVerifier(t.Context(), tt.cfg)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
		})
	}
}

func TestDevIssuerRoundTrip(t *testing.T) {
	clock := clockwork.NewFakeClockAt(epoch)
	d, err := NewDevIssuer(testIssuer, clock)
	if err != nil {
		t.Fatal(err)
	}
	v := mustVerifier(t, Config{KeySet: d.KeySet(), Clock: clock})
	u := identity.User{ID: "tutor-1", Role: identity.Tutor, Name: "Grace Hopper"}
	token, err := d.Sign(u, "grace@example.com", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got, exp, err := v.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("user (-want +got):\n%s", diff)
	}
	if want := epoch.Add(15 * time.Minute); !exp.Equal(want) {
		t.Errorf("exp = %v, want %v", exp, want)
	}

	// The key set holds public keys only.
	pub, ok := d.KeySet().Key(0)
	if !ok || pub.KeyID() == "" {
		t.Fatalf("dev key set: %v, kid %q", ok, pub.KeyID())
	}
	if _, isPrivate := pub.(jwk.ECDSAPrivateKey); isPrivate {
		t.Error("dev key set exposes the private key")
	}

	clock.Advance(16 * time.Minute)
	_, _, err = v.Verify(t.Context(), token)
	wantCode(t, err, apperr.Unauthenticated)

	// Another issuer's tokens are refused.
	other, err := NewDevIssuer(testIssuer, clock)
	if err != nil {
		t.Fatal(err)
	}
	token, err = other.Sign(u, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = v.Verify(t.Context(), token)
	wantCode(t, err, apperr.Unauthenticated)

	if _, err := d.Sign(identity.User{}, "", time.Minute); err == nil {
		t.Error("Sign without a user id: want an error")
	}
}
