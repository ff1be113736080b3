package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var epoch = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func mustVerifier(t testing.TB, secret string, clock clockwork.Clock) *Verifier {
	t.Helper()
	v, err := NewVerifier(secret, clock)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func mustSign(t *testing.T, secret, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	h, err := Sign(secret, id, ts, body)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return h
}

// hmacB64 computes a v1 signature independently of the package.
func hmacB64(t *testing.T, secret, id, ts, body string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "." + body))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestVerify(t *testing.T) {
	clock := clockwork.NewFakeClockAt(epoch)
	v := mustVerifier(t, testSecret, clock)
	body := []byte(`{"submission_id":"s1","score":9}`)
	good := func() http.Header { return mustSign(t, testSecret, "msg_1", epoch, body) }
	otherSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another key, 24 bytes!!!"))
	with := func(mut func(h http.Header)) http.Header {
		h := good()
		mut(h)
		return h
	}

	tests := []struct {
		name    string
		header  http.Header
		body    []byte
		wantID  string
		wantMsg string // Unauthenticated with this message when set
	}{
		{name: "good", header: good(), wantID: "msg_1"},
		{name: "4m59s old", header: mustSign(t, testSecret, "msg_1", epoch.Add(-Tolerance+time.Second), body), wantID: "msg_1"},
		{name: "4m59s ahead", header: mustSign(t, testSecret, "msg_1", epoch.Add(Tolerance-time.Second), body), wantID: "msg_1"},
		{name: "rotation: second signature valid", header: with(func(h http.Header) {
			other := mustSign(t, otherSecret, "msg_1", epoch, body).Get("webhook-signature")
			h.Set("webhook-signature", other+" "+h.Get("webhook-signature"))
		}), wantID: "msg_1"},
		{name: "rotation: signatures in two header lines", header: with(func(h http.Header) {
			h.Add("webhook-signature", "v1,AAAA")
			h["Webhook-Signature"][0], h["Webhook-Signature"][1] = h["Webhook-Signature"][1], h["Webhook-Signature"][0]
		}), wantID: "msg_1"},
		{name: "non-v1 entries ignored", header: with(func(h http.Header) {
			sig := strings.TrimPrefix(h.Get("webhook-signature"), "v1,")
			h.Set("webhook-signature", "v1a,"+sig+" v2,"+sig+" garbage "+h.Get("webhook-signature"))
		}), wantID: "msg_1"},

		{name: "bad signature", header: mustSign(t, otherSecret, "msg_1", epoch, body), wantMsg: "bad signature"},
		{name: "body tampered", header: good(), body: []byte(`{"submission_id":"s1","score":10}`), wantMsg: "bad signature"},
		{name: "id swapped", header: with(func(h http.Header) { h.Set("webhook-id", "msg_2") }), wantMsg: "bad signature"},
		{name: "timestamp swapped", header: with(func(h http.Header) {
			h.Set("webhook-timestamp", strconv.FormatInt(epoch.Unix()+1, 10))
		}), wantMsg: "bad signature"},
		{name: "only non-v1 entries", header: with(func(h http.Header) {
			h.Set("webhook-signature", "v1a,"+strings.TrimPrefix(h.Get("webhook-signature"), "v1,"))
		}), wantMsg: "bad signature"},
		{name: "signature not base64", header: with(func(h http.Header) { h.Set("webhook-signature", "v1,!!!") }),
			wantMsg: "bad signature"},
		{name: "stale past", header: mustSign(t, testSecret, "msg_1", epoch.Add(-Tolerance-time.Second), body),
			wantMsg: "stale timestamp"},
		{name: "future", header: mustSign(t, testSecret, "msg_1", epoch.Add(Tolerance+time.Second), body),
			wantMsg: "stale timestamp"},
		{name: "timestamp in milliseconds", header: with(func(h http.Header) {
			h.Set("webhook-timestamp", strconv.FormatInt(epoch.UnixMilli(), 10))
		}), wantMsg: "stale timestamp"},
		{name: "timestamp not a number", header: with(func(h http.Header) { h.Set("webhook-timestamp", "yesterday") }),
			wantMsg: "bad webhook timestamp"},
		{name: "missing id", header: with(func(h http.Header) { h.Del("webhook-id") }), wantMsg: "missing webhook headers"},
		{name: "missing timestamp", header: with(func(h http.Header) { h.Del("webhook-timestamp") }),
			wantMsg: "missing webhook headers"},
		{name: "missing signature", header: with(func(h http.Header) { h.Del("webhook-signature") }),
			wantMsg: "missing webhook headers"},
		{name: "blank signature", header: with(func(h http.Header) { h.Set("webhook-signature", "  ") }),
			wantMsg: "missing webhook headers"},
		{name: "no headers", header: http.Header{}, wantMsg: "missing webhook headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := body
			if tt.body != nil {
				b = tt.body
			}
			id, err := v.Verify(tt.header, b)
			if tt.wantMsg != "" {
				if err == nil {
					t.Fatalf("accepted (id %q), want %q", id, tt.wantMsg)
				}
				want := &apperr.Error{Code: apperr.Unauthenticated, Message: tt.wantMsg}
				if diff := cmp.Diff(want, apperr.As(err)); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
				}
				if id != "" {
					t.Errorf("id = %q on failure", id)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id != tt.wantID {
				t.Errorf("id = %q, want %q", id, tt.wantID)
			}
		})
	}
}

// TestSignKnownVector checks Sign against the Standard Webhooks reference
// vector and against an HMAC computed here from the definition.
func TestSignKnownVector(t *testing.T) {
	const (
		id   = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts   = "1614265330"
		body = `{"test": 2432232314}`
		want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" // from the spec's reference libraries
	)
	if got := "v1," + hmacB64(t, testSecret, id, ts, body); got != want {
		t.Fatalf("independent HMAC = %s, want the reference %s", got, want)
	}
	h := mustSign(t, testSecret, id, time.Unix(1614265330, 999_000_000), []byte(body))
	wantHeader := http.Header{
		"Webhook-Id":        {id},
		"Webhook-Timestamp": {ts},
		"Webhook-Signature": {want},
	}
	if diff := cmp.Diff(wantHeader, h); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}

	v := mustVerifier(t, testSecret, clockwork.NewFakeClockAt(time.Unix(1614265330, 0)))
	if got, err := v.Verify(h, []byte(body)); err != nil || got != id {
		t.Errorf("Verify = %q, %v", got, err)
	}
}

func TestSecrets(t *testing.T) {
	tests := []struct {
		secret string
		ok     bool
	}{
		{testSecret, true},
		{"v1," + testSecret, true},       // as Supabase's dashboard shows it
		{"  " + testSecret + "\n", true}, // pasted with whitespace
		{strings.TrimRight("whsec_"+base64.StdEncoding.EncodeToString([]byte("ab")), "="), true}, // unpadded
		{"", false},
		{"whsec_", false},
		{"whsec_not base64!", false},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false}, // no prefix
		{"sk_live_abc", false},
	}
	for _, tt := range tests {
		_, err := NewVerifier(tt.secret, nil)
		if (err == nil) != tt.ok {
			t.Errorf("NewVerifier(%q) error = %v, want ok=%v", tt.secret, err, tt.ok)
		}
		_, err = Sign(tt.secret, "msg_1", epoch, nil)
		if (err == nil) != tt.ok {
			t.Errorf("Sign with %q error = %v, want ok=%v", tt.secret, err, tt.ok)
		}
		if err != nil && len(tt.secret) > 8 && strings.Contains(err.Error(), strings.TrimSpace(tt.secret)) {
			t.Errorf("error %q leaks the secret", err)
		}
	}
	if _, err := Sign(testSecret, "", epoch, nil); err == nil {
		t.Error("Sign with an empty id: want an error")
	}
}

// TestRotation: while INVIGIL_WEBHOOK_SECRET lists two secrets, a delivery
// signed with either is accepted; one signed with a third is refused.
func TestRotation(t *testing.T) {
	const old, next = testSecret, "whsec_bmV4dC1zZWNyZXQtYWZ0ZXItcm90YXRpb24="
	clock := clockwork.NewFakeClockAt(epoch)
	v := mustVerifier(t, old+", "+next, clock)
	body := []byte(`{"exam_id":"e1"}`)
	for _, secret := range []string{old, next} {
		if _, err := v.Verify(mustSign(t, secret, "msg_"+secret[6:10], epoch, body), body); err != nil {
			t.Errorf("signed with %s…: %v", secret[:10], err)
		}
	}
	other := "whsec_c29tZWJvZHktZWxzZXMtc2VjcmV0"
	if _, err := v.Verify(mustSign(t, other, "msg_x", epoch, body), body); err == nil {
		t.Error("a third secret's signature was accepted")
	}
	if _, err := NewVerifier(old+",sk_live_abc", nil); err == nil {
		t.Error("a list with a malformed secret was accepted")
	}
}
