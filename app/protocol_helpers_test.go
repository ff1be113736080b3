package app_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"invigil/app/apptest"
	"invigil/app/webhook"
	"invigil/store"
)

// examState is everything a proctoring write can change in one exam.
type examState struct {
	Sessions   []store.Session
	Violations []store.Violation
}

// readExamState reads an exam's sessions and violations straight from the
// database, every column included (not only what the API shows).
func readExamState(t *testing.T, h *apptest.Harness, examID string) examState {
	t.Helper()
	var st examState
	var err error
	if st.Sessions, err = h.App.DB.ExamSessions(t.Context(), examID); err == nil {
		st.Violations, err = h.App.DB.Violations(t.Context(), examID, "", 10_000)
	}
	if err != nil {
		t.Fatalf("read exam %s: %v", examID, err)
	}
	return st
}

// mustUnchanged fails if the exam's state differs from before.
func mustUnchanged(t *testing.T, h *apptest.Harness, examID string, before examState) {
	t.Helper()
	if diff := cmp.Diff(before, readExamState(t, h, examID)); diff != "" {
		t.Fatalf("exam %s changed (-before +after):\n%s", examID, diff)
	}
}

// sendText writes a raw text frame, valid JSON or not.
func sendText(t *testing.T, w *apptest.WS, text string) {
	t.Helper()
	if err := w.Conn.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// wantError fails unless f is an error frame with the given id and code.
func wantError(t *testing.T, f apptest.Frame, id, code string) {
	t.Helper()
	got := apptest.Frame{Type: f.Type, ID: f.ID, Code: f.Code}
	want := apptest.Frame{Type: "error", ID: id, Code: code}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("want an error frame (-want +got):\n%s\nfull frame: %+v", diff, f)
	}
}

// pingPong sends ping and wants pong as the very next frame: the socket is
// usable, and (frames being handled in order) nothing else was pending.
func pingPong(t *testing.T, w *apptest.WS) {
	t.Helper()
	w.Send(map[string]string{"type": "ping"})
	if f := w.Next(); f.Type != "pong" {
		t.Fatalf("ping: want pong next, got %+v", f)
	}
}

// httpErr is an HTTP error body as the contract defines it.
type httpErr struct {
	Status int
	Code   string
}

// decodeHTTPErr reads a status and error body; a 200 gives Code "".
func decodeHTTPErr(t *testing.T, status int, body string) httpErr {
	t.Helper()
	got := httpErr{Status: status}
	if status != http.StatusOK {
		var b struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal([]byte(body), &b); err != nil || b.Message == "" {
			t.Fatalf("error body is not {code, message}: %d %q", status, body)
		}
		got.Code = b.Code
	}
	return got
}

// postAs posts a raw body with a Bearer token (none when token is "").
func postAs(h *apptest.Harness, path, token string, body []byte) (int, string) {
	h.T.Helper()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	return h.Post(path, hdr, body)
}

// metric reads one unlabelled value from /metrics.
func metric(t *testing.T, h *apptest.Harness, name string) float64 {
	t.Helper()
	res, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, v)
			}
			return f
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}

// waitClosed fails unless the server closes w's socket within 5 s.
func waitClosed(t *testing.T, w *apptest.WS) {
	t.Helper()
	select {
	case <-w.Closed:
	case <-time.After(5 * time.Second):
		t.Fatal("socket still open after 5s")
	}
}

// signer returns a hook delivery's headers for its id and body.
type signer func(id string, body []byte) http.Header

// hookSigner signs deliveries with secret at the harness's now+skew.
func hookSigner(t *testing.T, h *apptest.Harness, secret string, skew time.Duration) signer {
	return func(id string, body []byte) http.Header {
		hdr, err := webhook.Sign(secret, id, h.Clock.Now().Add(skew), body)
		if err != nil {
			t.Fatal(err)
		}
		return hdr
	}
}
