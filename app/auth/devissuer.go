package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"invigil/app/identity"
)

// DevIssuer mints Supabase-shaped access tokens for --demo mode, signed with
// a fresh ES256 key that lives only in memory. Pass KeySet to Config.KeySet
// so a Verifier accepts them.
type DevIssuer struct {
	issuer string
	clock  clockwork.Clock
	key    jwk.Key // private
	public jwk.Set
}

// NewDevIssuer creates an issuer with a new ES256 key; a nil clock is the
// real clock.
func NewDevIssuer(issuer string, clock clockwork.Clock) (*DevIssuer, error) {
	if issuer == "" {
		return nil, errors.New("auth: dev issuer needs an issuer")
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("auth: dev key: %w", err)
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("auth: dev key: %w", err)
	}
	if err := jwk.AssignKeyID(key); err != nil { // kid = the key's thumbprint
		return nil, fmt.Errorf("auth: dev key id: %w", err)
	}
	if err := key.Set(jwk.AlgorithmKey, jwa.ES256); err != nil {
		return nil, fmt.Errorf("auth: dev key alg: %w", err)
	}
	if err := key.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return nil, fmt.Errorf("auth: dev key use: %w", err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("auth: dev public key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("auth: dev key set: %w", err)
	}
	return &DevIssuer{issuer: issuer, clock: clock, key: key, public: set}, nil
}

// KeySet returns the public keys, for Config.KeySet.
func (d *DevIssuer) KeySet() jwk.Set { return d.public }

// Sign returns a token for u valid for ttl, with the claims Supabase puts in
// an access token: iss, sub, aud, exp, iat, email, role, app_metadata.role
// and user_metadata.full_name.
func (d *DevIssuer) Sign(u identity.User, email string, ttl time.Duration) (string, error) {
	if u.ID == "" {
		return "", errors.New("auth: dev token needs a user id")
	}
	if ttl <= 0 {
		return "", errors.New("auth: dev token needs a positive ttl")
	}
	appMeta := map[string]any{"provider": "email", "providers": []string{"email"}}
	if u.Role != "" {
		appMeta["role"] = string(u.Role)
	}
	userMeta := map[string]any{}
	if u.Name != "" {
		userMeta["full_name"] = u.Name
	}
	now := d.clock.Now()
	tok, err := jwt.NewBuilder().
		Issuer(d.issuer).
		Subject(u.ID).
		Audience([]string{audience}).
		IssuedAt(now).
		Expiration(now.Add(ttl)).
		Claim("email", email).
		Claim("role", "authenticated"). // Supabase's Postgres role, not ours
		Claim("aal", "aal1").
		Claim("is_anonymous", false).
		Claim("app_metadata", appMeta).
		Claim("user_metadata", userMeta).
		Build()
	if err != nil {
		return "", fmt.Errorf("auth: dev token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, d.key)) // sets kid from the key
	if err != nil {
		return "", fmt.Errorf("auth: dev token sign: %w", err)
	}
	return string(signed), nil
}
