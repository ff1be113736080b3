// Package auth verifies Supabase access tokens (JWTs) and turns them into an
// identity.User. Keys come from the project's JWKS (cached, refreshed on key
// rotation), from a static key set (demo mode) or from the legacy HS256
// secret; the token's own "alg" header picks exactly one of those paths, so a
// token can never choose how it is checked.
package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"invigil/app/apperr"
	"invigil/app/identity"
)

const (
	audience      = "authenticated"  // Supabase's aud for signed-in users
	clockSkew     = 5 * time.Second  // tolerated drift for exp, nbf and iat
	maxTokenBytes = 16 << 10         // far above any real Supabase token
	maxNameRunes  = 100              // user_metadata is user-written; keep names sane
	httpTimeout   = 10 * time.Second // default client timeout for the JWKS fetch
)

// Config says how to verify tokens. At least one of JWKSURL, KeySet and
// HS256Secret must be set.
type Config struct {
	Issuer      string          // e.g. https://ref.supabase.co/auth/v1; compared exactly
	NoIssuer    bool            // tokens carry no iss (self-hosted GoTrue without one); Issuer must be ""
	JWKSURL     string          // fetched over HTTP and cached; may be empty
	KeySet      jwk.Set         // static public keys (demo mode); may be nil
	HS256Secret []byte          // legacy secret; may be empty
	Clock       clockwork.Clock // nil = real clock
	HTTPClient  *http.Client    // nil = a client with a 10 s timeout
	Logger      *slog.Logger    // nil = slog.Default()
}

// Verifier checks access tokens. It is safe for concurrent use.
type Verifier struct {
	issuer   string
	noIssuer bool
	secret   []byte
	static   jwk.Set   // nil when not configured
	jwks     *keyCache // nil when not configured
	clock    clockwork.Clock
	log      *slog.Logger
}

// NewVerifier builds a Verifier. It fails only on configuration errors: an
// unreachable JWKS endpoint is logged and retried on demand.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if (cfg.Issuer == "") != cfg.NoIssuer {
		return nil, errors.New("auth: say which iss tokens carry: SUPABASE_URL, SUPABASE_JWT_ISSUER, or SUPABASE_JWT_ISSUER=- for none")
	}
	hasKeySet := cfg.KeySet != nil && cfg.KeySet.Len() > 0
	if cfg.JWKSURL == "" && !hasKeySet && len(cfg.HS256Secret) == 0 {
		return nil, errors.New("auth: no way to verify access tokens: set SUPABASE_URL " +
			"(keys from its JWKS), SUPABASE_JWKS_URL or SUPABASE_JWT_SECRET")
	}
	v := &Verifier{
		issuer:   cfg.Issuer,
		noIssuer: cfg.NoIssuer,
		secret:   bytes.Clone(cfg.HS256Secret),
		clock:    cfg.Clock,
		log:      cfg.Logger,
	}
	if v.clock == nil {
		v.clock = clockwork.NewRealClock()
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	if hasKeySet {
		v.static = cfg.KeySet
	}
	if cfg.JWKSURL != "" {
		u, err := url.Parse(cfg.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("auth: SUPABASE_JWKS_URL %q is not an http(s) URL", cfg.JWKSURL)
		}
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: httpTimeout}
		}
		v.jwks = newKeyCache(cfg.JWKSURL, client, v.clock, v.log)
		// Warm the cache so the first sign-in is fast. A failure is only
		// logged: the cache retries on demand.
		v.jwks.get(ctx, false)
	}
	return v, nil
}

// Verify checks token and returns who it belongs to and when it expires.
// Every failure is an *apperr.Error with code Unauthenticated.
func (v *Verifier) Verify(ctx context.Context, token string) (identity.User, time.Time, error) {
	payload, err := v.verifySignature(ctx, token)
	if err != nil {
		return identity.User{}, time.Time{}, err
	}
	return v.identify(payload)
}

// verifySignature checks the token's signature and returns its payload.
func (v *Verifier) verifySignature(ctx context.Context, token string) ([]byte, error) {
	switch {
	case token == "":
		return nil, unauthenticated("missing token")
	case len(token) > maxTokenBytes:
		return nil, unauthenticated("token too large")
	case strings.Count(token, ".") != 2:
		return nil, unauthenticated("malformed token")
	}
	msg, err := jws.Parse([]byte(token), jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, unauthenticated("malformed token")
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if len(hdr.Critical()) > 0 {
		return nil, unauthenticated("unsupported token header")
	}
	alg := hdr.Algorithm()
	key, err := v.keyFor(ctx, alg, hdr.KeyID())
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify([]byte(token), jws.WithCompact(), jws.WithKey(alg, key))
	if err != nil {
		v.log.DebugContext(ctx, "token signature rejected", "alg", alg.String(), "kid", hdr.KeyID(), "err", err)
		return nil, unauthenticated("invalid token signature")
	}
	return payload, nil
}

// keySpec is the key an asymmetric algorithm needs.
type keySpec struct {
	kty jwa.KeyType
	crv jwa.EllipticCurveAlgorithm // "" when the key type has no curve
}

// asymmetric lists the algorithms checked against the key set. HS256 is
// handled apart; anything else ("none", HS384…) is refused.
var asymmetric = map[jwa.SignatureAlgorithm]keySpec{
	jwa.ES256: {jwa.EC, jwa.P256},
	jwa.ES384: {jwa.EC, jwa.P384},
	jwa.ES512: {jwa.EC, jwa.P521},
	jwa.RS256: {kty: jwa.RSA},
	jwa.RS384: {kty: jwa.RSA},
	jwa.RS512: {kty: jwa.RSA},
	jwa.PS256: {kty: jwa.RSA},
	jwa.PS384: {kty: jwa.RSA},
	jwa.PS512: {kty: jwa.RSA},
	jwa.EdDSA: {jwa.OKP, jwa.Ed25519},
}

// keyFor returns the key to check a token signed with alg. HS256 uses only
// the secret and asymmetric algorithms only the key set, so a token can never
// get a public key used as an HMAC secret.
func (v *Verifier) keyFor(ctx context.Context, alg jwa.SignatureAlgorithm, kid string) (any, error) {
	if alg == jwa.HS256 {
		if len(v.secret) == 0 {
			return nil, unauthenticated("HS256 tokens are not accepted")
		}
		return v.secret, nil
	}
	spec, ok := asymmetric[alg]
	if !ok {
		return nil, unauthenticated("unsupported token algorithm")
	}
	if v.static == nil && v.jwks == nil {
		return nil, unauthenticated("asymmetric tokens are not accepted")
	}
	if kid == "" {
		return nil, unauthenticated("token has no key id")
	}
	key, err := v.lookup(ctx, kid)
	if err != nil {
		return nil, err
	}
	if !spec.fits(key, alg) {
		return nil, unauthenticated("signing key does not match the token algorithm")
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, unauthenticated("unusable signing key")
	}
	return pub, nil
}

func (v *Verifier) lookup(ctx context.Context, kid string) (jwk.Key, error) {
	if v.static != nil {
		if k, ok := v.static.LookupKeyID(kid); ok {
			return k, nil
		}
	}
	if v.jwks == nil {
		return nil, unauthenticated("unknown signing key")
	}
	return v.jwks.key(ctx, kid)
}

// fits reports whether key may verify a signature made with alg: its type and
// curve must be what alg needs, and its own alg and use, when set, must agree.
func (s keySpec) fits(key jwk.Key, alg jwa.SignatureAlgorithm) bool {
	if key.KeyType() != s.kty {
		return false
	}
	if s.crv != "" {
		c, ok := key.(interface {
			Crv() jwa.EllipticCurveAlgorithm
		})
		if !ok || c.Crv() != s.crv {
			return false
		}
	}
	if a := key.Algorithm().String(); a != "" && a != alg.String() {
		return false
	}
	if u := key.KeyUsage(); u != "" && u != string(jwk.ForSignature) {
		return false
	}
	return true
}

// identify validates the verified claims and maps them to a user.
func (v *Verifier) identify(payload []byte) (identity.User, time.Time, error) {
	fail := func(msg string) (identity.User, time.Time, error) {
		return identity.User{}, time.Time{}, unauthenticated(msg)
	}
	// The payload must be the claims themselves, never a nested token.
	if p := bytes.TrimSpace(payload); len(p) == 0 || p[0] != '{' {
		return fail("malformed token claims")
	}
	opts := []jwt.ParseOption{
		jwt.WithVerify(false), // the signature was checked by verifySignature
		jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(v.clock.Now)),
		jwt.WithAcceptableSkew(clockSkew),
		jwt.WithAudience(audience),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	}
	if !v.noIssuer {
		opts = append(opts, jwt.WithIssuer(v.issuer))
	}
	tok, err := jwt.Parse(payload, opts...)
	if err != nil {
		return fail(claimsMessage(err))
	}
	if v.noIssuer && tok.Issuer() != "" {
		return fail("wrong token issuer") // configured for tokens without one
	}
	// jwt's own check skips exp == 0 as "absent"; a token must expire.
	exp := tok.Expiration()
	if exp.Unix() <= 0 {
		return fail("token has no expiry")
	}
	sub := strings.TrimSpace(tok.Subject())
	if sub == "" {
		return fail("token has no subject")
	}
	appMeta := claimMap(tok, "app_metadata")
	userMeta := claimMap(tok, "user_metadata")
	email, _ := claimString(tok, "email")
	return identity.User{
		ID:   sub,
		Role: identity.ParseRole(stringIn(appMeta, "role")), // never user_metadata: users write it
		Name: displayName(userMeta, email, sub),
	}, exp, nil
}

func claimsMessage(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return "token not yet valid"
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return "wrong token issuer"
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return "wrong token audience"
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return "token has no expiry"
	default:
		return "malformed token claims"
	}
}

// displayName follows the contract: full_name, else name, else the email's
// local part; the user id as a last resort.
func displayName(userMeta map[string]any, email, sub string) string {
	for _, s := range []string{
		stringIn(userMeta, "full_name"),
		stringIn(userMeta, "name"),
		localPart(email),
	} {
		if s = strings.TrimSpace(s); s != "" {
			return truncateRunes(s, maxNameRunes)
		}
	}
	return sub
}

func localPart(email string) string {
	local, _, _ := strings.Cut(email, "@")
	return local
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

func claimMap(tok jwt.Token, name string) map[string]any {
	v, _ := tok.Get(name)
	m, _ := v.(map[string]any)
	return m
}

func claimString(tok jwt.Token, name string) (string, bool) {
	v, _ := tok.Get(name)
	s, ok := v.(string)
	return s, ok
}

func stringIn(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func unauthenticated(msg string) *apperr.Error {
	return &apperr.Error{Code: apperr.Unauthenticated, Message: msg}
}
