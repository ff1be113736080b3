package auth

import (
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"invigil/app/apperr"
)

// FuzzVerify: arbitrary tokens (mutations of valid ES256, RS256 and HS256
// ones among them) never panic the verifier; every refusal is
// unauthenticated, and what is accepted was really signed by a trusted key
// and names a user.
func FuzzVerify(f *testing.F) {
	k := mustKeys(f)
	now := epoch
	set := jwk.NewSet()
	for _, key := range []jwk.Key{k.ec, k.rsa} {
		set.AddKey(mustPublic(f, key))
	}
	v := mustVerifier(f, Config{KeySet: set, HS256Secret: []byte("legacy-secret"), Clock: clockwork.NewFakeClockAt(now)})
	for _, tok := range []string{
		mustSign(f, jwa.ES256, k.ec, "ec-key-1", claims(now, nil)),
		mustSign(f, jwa.RS256, k.rsa, "rsa-key-1", claims(now, nil)),
		mustSign(f, jwa.HS256, []byte("legacy-secret"), "", claims(now, nil)),
		mustSign(f, jwa.ES256, k.ec2, "ec-key-1", claims(now, nil)), // signed by an untrusted key under a trusted kid
		"", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "...",
	} {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, token string) {
		u, exp, err := v.Verify(t.Context(), token)
		if err != nil {
			if apperr.CodeOf(err) != apperr.Unauthenticated {
				t.Fatalf("refusal with code %s: %v", apperr.CodeOf(err), err)
			}
			return
		}
		if u.ID == "" || exp.IsZero() || u.Role == "" {
			t.Fatalf("accepted a token without a user: %+v %v", u, exp)
		}
	})
}
