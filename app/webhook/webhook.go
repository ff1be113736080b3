// Package webhook verifies and signs Standard Webhooks
// (https://www.standardwebhooks.com), the scheme invigil's inbound hooks use:
// headers webhook-id, webhook-timestamp and webhook-signature, where a
// signature is "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>". Replay
// detection is not here: Verify returns the message id for the store to
// remember.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
)

// Tolerance is how far a message's timestamp may be from now, either way.
const Tolerance = 5 * time.Minute

const (
	headerID        = "webhook-id"
	headerTimestamp = "webhook-timestamp"
	headerSignature = "webhook-signature"
	secretPrefix    = "whsec_"
)

// Verifier checks signed messages. It is safe for concurrent use.
type Verifier struct {
	keys  [][]byte
	clock clockwork.Clock
}

// NewVerifier takes a "whsec_<base64>" secret, or a comma list of them
// while rotating (a signature by any of them is accepted); a nil clock is
// the real clock.
func NewVerifier(secrets string, clock clockwork.Clock) (*Verifier, error) {
	var keys [][]byte
	for _, secret := range strings.Split(secrets, ",") {
		if s := strings.TrimSpace(secret); s == "" || s == "v1" {
			continue // "v1," is how Supabase's dashboard shows a secret
		}
		key, err := parseSecret(secret)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("webhook: no secret (INVIGIL_WEBHOOK_SECRET)")
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Verifier{keys: keys, clock: clock}, nil
}

// Primary is the secret to sign with: the first of a comma list (while
// rotating, receivers accept the new one first).
func Primary(secrets string) string {
	for _, secret := range strings.Split(secrets, ",") {
		if s := strings.TrimSpace(secret); s != "" && s != "v1" {
			return s
		}
	}
	return ""
}

// Verify checks h and body and returns the message id. Every failure is an
// *apperr.Error with code Unauthenticated.
func (v *Verifier) Verify(h http.Header, body []byte) (msgID string, err error) {
	id, ts := h.Get(headerID), h.Get(headerTimestamp)
	sigs := strings.Fields(strings.Join(h.Values(headerSignature), " "))
	if id == "" || ts == "" || len(sigs) == 0 {
		return "", unauthenticated("missing webhook headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", unauthenticated("bad webhook timestamp")
	}
	if d := v.clock.Now().Sub(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return "", unauthenticated("stale timestamp")
	}
	// Several signatures, or several secrets, mean key rotation: any v1
	// signature by any secret will do. Other versions (v1a is asymmetric)
	// are not ours to check.
	for _, key := range v.keys {
		want := mac(key, id, ts, body)
		for _, s := range sigs {
			version, sig, ok := strings.Cut(s, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(sig)
			if err == nil && hmac.Equal(got, want) {
				return id, nil
			}
		}
	}
	return "", unauthenticated("bad signature")
}

// Sign returns the headers that make body a signed message with msgID sent
// at ts. The signed timestamp is ts in whole unix seconds.
func Sign(secret, msgID string, ts time.Time, body []byte) (http.Header, error) {
	key, err := parseSecret(secret)
	if err != nil {
		return nil, err
	}
	if msgID == "" {
		return nil, errors.New("webhook: empty message id")
	}
	unix := strconv.FormatInt(ts.Unix(), 10)
	h := http.Header{}
	h.Set(headerID, msgID)
	h.Set(headerTimestamp, unix)
	h.Set(headerSignature, "v1,"+base64.StdEncoding.EncodeToString(mac(key, msgID, unix, body)))
	return h, nil
}

// parseSecret returns the key in "whsec_<base64>". A leading "v1," is
// dropped too: Supabase's dashboard shows hook secrets as "v1,whsec_…".
func parseSecret(secret string) ([]byte, error) {
	s := strings.TrimPrefix(strings.TrimSpace(secret), "v1,")
	b64, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errors.New("webhook: secret must look like whsec_<base64> (INVIGIL_WEBHOOK_SECRET)")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64) // tolerate missing padding
	}
	if err != nil || len(key) == 0 {
		return nil, errors.New("webhook: secret after whsec_ must be non-empty base64 (INVIGIL_WEBHOOK_SECRET)")
	}
	return key, nil
}

// mac is HMAC-SHA256(key, id + "." + ts + "." + body), ts exactly as sent.
func mac(key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func unauthenticated(msg string) *apperr.Error {
	return &apperr.Error{Code: apperr.Unauthenticated, Message: msg}
}
