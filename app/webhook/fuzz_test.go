package webhook

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
)

// FuzzVerify: arbitrary headers and bodies never panic the verifier, and
// every refusal is unauthenticated; only a delivery signed with the secret
// is accepted.
func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	good, _ := Sign(testSecret, "msg_1", now, []byte(`{"exam_id":"e1"}`))
	f.Add(good.Get("webhook-id"), good.Get("webhook-timestamp"), good.Get("webhook-signature"), []byte(`{"exam_id":"e1"}`))
	f.Add("msg_1", "1772442000", "v1,AAAA v1a,BBBB", []byte(`{}`))
	f.Add("", "-1", ",,,", []byte(nil))
	f.Add("msg", "99999999999999999999", "v1,"+string(make([]byte, 300)), []byte("x"))
	v := mustVerifier(f, testSecret+",whsec_c2Vjb25kLXNlY3JldA==", clockwork.NewFakeClockAt(now))
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", sig)
		got, err := v.Verify(h, body)
		if err != nil {
			if apperr.CodeOf(err) != apperr.Unauthenticated {
				t.Fatalf("refusal with code %s: %v", apperr.CodeOf(err), err)
			}
			return
		}
		// Accepted: it must really be signed with one of the secrets.
		want, _ := Sign(testSecret, id, time.Unix(mustInt(t, ts), 0), body)
		other, _ := Sign("whsec_c2Vjb25kLXNlY3JldA==", id, time.Unix(mustInt(t, ts), 0), body)
		if got != id || (!containsSig(sig, want.Get("webhook-signature")) && !containsSig(sig, other.Get("webhook-signature"))) {
			t.Fatalf("accepted an unsigned delivery: id %q sig %q", id, sig)
		}
	})
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("accepted a timestamp %q that is not a number", s)
	}
	return n
}

// containsSig reports whether the space-separated list got holds want.
func containsSig(got, want string) bool {
	return slices.Contains(strings.Fields(got), want)
}
