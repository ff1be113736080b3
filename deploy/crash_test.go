package deploy_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"invigil/app/archive/archivetest"
	"invigil/app/webhook"
)

const (
	crashJWTSecret  = "crash-test-hs256-secret-at-least-32-bytes"
	crashHookSecret = "whsec_Y3Jhc2gtdGVzdC13ZWJob29rLXNlY3JldC1ieXRlcw=="
	crashSessions   = 500
	crashChats      = 50 // each with crashMessages messages: 550 archives with the summaries
	crashMessages   = 3
)

// The real binary archives through its outbox across a crash: 500 sessions
// end and 50 chats (3 messages each) end while Supabase answers 500, the
// process is killed (SIGKILL: no shutdown, no last delivery), and after a
// restart on the same file with Supabase accepting, every summary and every
// transcript's message arrives, none twice: 550 archives.
func TestArchiveSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the static binary; skipped with -short")
	}
	bin := mustBuildStatic(t)
	sb := archivetest.New(t)
	sb.Answer(archivetest.Always(archivetest.Reply{Status: http.StatusInternalServerError, Body: `{"message":"down"}`}))
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"keys":[]}`)
	}))
	defer jwks.Close()
	dbPath := filepath.Join(t.TempDir(), "data", "invigil.db")
	env := []string{
		"INVIGIL_DB=" + dbPath,
		"SUPABASE_URL=" + sb.URL,
		"SUPABASE_JWKS_URL=" + jwks.URL,
		"SUPABASE_JWT_SECRET=" + crashJWTSecret,
		"SUPABASE_SERVICE_ROLE_KEY=" + sb.Key,
		"INVIGIL_WEBHOOK_SECRET=" + crashHookSecret,
	}

	// First life: the sessions end while Supabase is down.
	srv := mustStartWith(t, env, bin)
	mustBeHealthy(t, srv)
	mustRegisterExam(t, srv, "crash-exam")
	began := time.Now()
	mustEndSessions(t, srv, sb.URL, "crash-exam", crashSessions)
	mustEndChats(t, srv, sb.URL, crashChats, crashMessages)
	t.Logf("%d sessions and %d chats ended over HTTP in %s", crashSessions, crashChats, time.Since(began).Round(time.Millisecond))
	// Every archive refused at least once, so the kill interrupts retries.
	mustEventually(t, 30*time.Second, "attempt at every summary and message", func() bool {
		return len(tried(sb)) == crashSessions+crashChats*crashMessages
	})
	if err := syscall.Kill(-srv.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, exited := srv.wait(10 * time.Second); !exited {
		t.Fatal("invigil still running after SIGKILL")
	}
	if n := len(sb.Accepted("proctoring_summaries")); n != 0 {
		t.Fatalf("Supabase accepted %d summaries while it answered 500", n)
	}
	db := mustOpenRO(t, dbPath)
	mustIntegrityOK(t, db)
	var pending, tries int
	if err := db.QueryRow(`SELECT count(*), coalesce(min(attempts), 0) FROM outbox WHERE delivered_at IS NULL`).Scan(&pending, &tries); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Every item was tried (Supabase saw each), but the kill may land
	// between an answer and its record: attempts are not judged here.
	if pending != crashSessions+crashChats {
		t.Fatalf("after SIGKILL the outbox holds %d undelivered items (want %d), least attempts %d", pending, crashSessions+crashChats, tries)
	}
	refused := len(sb.Requests())

	// Second life: Supabase is back.
	sb.Answer(nil)
	srv = mustStartWith(t, env, bin)
	mustBeHealthy(t, srv)
	if !sb.WaitRows("proctoring_summaries", crashSessions, 60*time.Second) ||
		!sb.WaitRows("chat_messages", crashChats*crashMessages, 30*time.Second) {
		t.Fatalf("after the restart Supabase has %d of %d summaries and %d of %d messages; log:\n%s",
			len(sb.Accepted("proctoring_summaries")), crashSessions,
			len(sb.Accepted("chat_messages")), crashChats*crashMessages, tail(srv.logs(), 4000))
	}
	// A clean stop, with its last delivery, sends nothing again.
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err, exited := srv.wait(drainTime); !exited || err != nil {
		t.Fatalf("stop after the restart: exited %v, %v", exited, err)
	}
	accepted := sb.Accepted("proctoring_summaries")
	if len(accepted) != crashSessions {
		t.Fatalf("%d of %d summaries arrived", len(accepted), crashSessions)
	}
	for key, n := range accepted {
		if n != 1 {
			t.Fatalf("summary %s arrived %d times", key, n)
		}
		if row := sb.Row("proctoring_summaries", key); row["status"] != "submitted" {
			t.Fatalf("summary %s: %v", key, row)
		}
	}
	messages := sb.Accepted("chat_messages")
	if len(messages) != crashChats*crashMessages {
		t.Fatalf("%d of %d messages arrived", len(messages), crashChats*crashMessages)
	}
	for key, n := range messages {
		if n != 1 {
			t.Fatalf("message %s arrived %d times", key, n)
		}
	}
	db = mustOpenRO(t, dbPath)
	if err := db.QueryRow(`SELECT count(*) FROM outbox WHERE delivered_at IS NULL`).Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("undelivered after the restart: %d (%v)", pending, err)
	}
	t.Logf("%d refused attempts before the kill; after the restart %d requests delivered %d summaries and %d messages",
		refused, len(sb.Requests())-refused, len(accepted), len(messages))
}

// tried is the set of summaries Supabase has seen at least once.
func tried(sb *archivetest.Supabase) map[string]bool {
	seen := map[string]bool{}
	for _, q := range sb.Requests() {
		for _, k := range q.Keys {
			seen[k] = true
		}
	}
	return seen
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// mustRegisterExam registers an open exam through the signed hook.
func mustRegisterExam(t *testing.T, s *server, examID string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"exam_id": examID, "title": "Crash", "tutor_ids": []string{}, "status": "open"})
	hdr, err := webhook.Sign(crashHookSecret, "msg_"+examID, time.Now(), body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.base+"/hooks/exams", bytes.NewReader(body))
	req.Header = hdr
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("register %s: %d %s", examID, res.StatusCode, b)
	}
}

// mustEndSessions has n students start and end a session over HTTP, a few
// at a time.
func mustEndSessions(t *testing.T, s *server, supabaseURL, examID string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, n)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				tok := hs256Token(supabaseURL+"/auth/v1", fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "student")
				for _, fn := range []string{"proctoring.startSession", "proctoring.endSession"} {
					if err := callAPI(s, tok, fn, map[string]string{"exam_id": examID}); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// mustEndChats has n students each start a support chat, send messages
// and end it, over HTTP.
func mustEndChats(t *testing.T, s *server, supabaseURL string, n, messages int) {
	t.Helper()
	for i := range n {
		tok := hs256Token(supabaseURL+"/auth/v1", fmt.Sprintf("00000000-0000-4000-9000-%012d", i), "student")
		var chat struct {
			ID string `json:"_id"`
		}
		if err := callAPIInto(s, tok, "chat.startChat", map[string]string{"scope": "support"}, &chat); err != nil || chat.ID == "" {
			t.Fatalf("start chat %d: %v", i, err)
		}
		for m := range messages {
			args := map[string]string{"session_id": chat.ID, "body": fmt.Sprintf("question %d of chat %d", m, i), "client_msg_id": fmt.Sprintf("c%d-m%d", i, m)}
			if err := callAPI(s, tok, "chat.sendMessage", args); err != nil {
				t.Fatal(err)
			}
		}
		if err := callAPI(s, tok, "chat.endChat", map[string]string{"session_id": chat.ID}); err != nil {
			t.Fatal(err)
		}
	}
}

func callAPI(s *server, token, fn string, args any) error {
	return callAPIInto(s, token, fn, args, nil)
}

// callAPIInto calls fn over HTTP and decodes its result into out (when set).
func callAPIInto(s *server, token, fn string, args, out any) error {
	b, _ := json.Marshal(args)
	req, _ := http.NewRequest(http.MethodPost, s.base+"/api/call/"+fn, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", fn, res.StatusCode, body)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// hs256Token is a Supabase access token signed with the legacy JWT secret.
func hs256Token(issuer, sub, role string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"sub": sub, "aud": "authenticated", "role": "authenticated", "iss": issuer,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "email": sub + "@example.com",
		"app_metadata": map[string]any{"role": role}, "user_metadata": map[string]any{"full_name": "Student " + sub[len(sub)-4:]},
	})
	payload := enc.EncodeToString(claims)
	m := hmac.New(sha256.New, []byte(crashJWTSecret))
	m.Write([]byte(header + "." + payload))
	return header + "." + payload + "." + enc.EncodeToString(m.Sum(nil))
}
