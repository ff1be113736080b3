package supabase_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app/webhook"
)

// hookSecret is INVIGIL_WEBHOOK_SECRET of these tests (the Standard Webhooks
// specification's example key).
const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

const hookMigration = "migrations/20261125000100_invigil_exams_hook.sql"

func setVault(t *testing.T, db *database, url, secret string) {
	t.Helper()
	db.mustRun(t, fmt.Sprintf("select vault.create_secret(%s, 'invigil_url');\n"+
		"select vault.create_secret(%s, 'invigil_webhook_secret', 'invigil hooks');", literal(url), literal(secret)))
}

// request is one HTTP request pg_net would send: the bytes of its body are
// those net.http_request_queue holds, which its worker sends unchanged.
type request struct {
	URL     string
	Header  http.Header
	Body    []byte
	Timeout int
}

// requests returns what the exams hook has queued so far, oldest first.
func requests(t *testing.T, db *database) []request {
	t.Helper()
	out := db.mustRun(t, `select coalesce(json_agg(json_build_object('method', method, 'url', url,
		'headers', headers, 'body', encode(body, 'base64'), 'timeout', timeout_milliseconds) order by id), '[]')
		from net.http_request_queue`)
	var rows []struct {
		Method, URL, Body string
		Headers           map[string]string
		Timeout           int
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	var reqs []request
	for _, r := range rows {
		body, err := base64.StdEncoding.DecodeString(r.Body)
		if err != nil || r.Method != "POST" {
			t.Fatalf("queued %s with body %q: %v", r.Method, r.Body, err)
		}
		h := http.Header{}
		for k, v := range r.Headers {
			h.Set(k, v)
		}
		reqs = append(reqs, request{URL: r.URL, Header: h, Body: body, Timeout: r.Timeout})
	}
	return reqs
}

// verified checks req with invigil's own verifier and returns its webhook
// id and decoded body.
func verified(t *testing.T, req request) (string, map[string]any) {
	t.Helper()
	v, err := webhook.NewVerifier(hookSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(req.Header, req.Body)
	if err != nil {
		t.Fatalf("invigil refuses the hook (%v): headers %v, body %s", err, req.Header, req.Body)
	}
	if got := req.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if req.URL != "http://invigil.test/hooks/exams" {
		t.Errorf("url = %q", req.URL)
	}
	var body map[string]any
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Fatalf("body %s: %v", req.Body, err)
	}
	// invigil parses its times as RFC 3339.
	for _, k := range []string{"starts_at", "ends_at", "updated_at"} {
		if s, ok := body[k].(string); ok {
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				t.Errorf("%s %q is not RFC 3339: %v", k, s, err)
			}
		}
	}
	return id, body
}

func TestExamsHook(t *testing.T) {
	db := mustDB(t)
	setVault(t, db, " http://invigil.test/ ", hookSecret)
	serviceUpsert(t, db, "proctoring_summaries", "exam_id,student_id", summaryBody(t, summary(exam1, student1, "submitted")))

	// A tutor creates an exam through PostgREST: the hook runs as its owner.
	if _, err := db.asUser(claims(tutor1, "tutor", ""), fmt.Sprintf(`insert into public.exams
		(id, title, tutor_id, quiz_code, status, starts_at, ends_at, student_ids, updated_at)
		values (%s, 'Maths — Zoë 🎓 "quoted"', %s, 'QUIZ1', 'open', '2026-03-02 09:00+00',
		        '2026-03-02 10:30:15.5+01', array[%s, %s]::uuid[], '2026-03-01 08:00:00.123456+00')`,
		literal(exam1), literal(tutor1), literal(student1), literal(student2))); err != nil {
		t.Fatalf("tutor inserts an exam: %v", err)
	}
	reqs := requests(t, db)
	if len(reqs) != 1 {
		t.Fatalf("after insert: %d requests, want 1", len(reqs))
	}
	if reqs[0].Timeout != 10000 {
		t.Errorf("timeout = %d ms", reqs[0].Timeout)
	}
	firstID, body := verified(t, reqs[0])
	want := map[string]any{
		"exam_id": exam1, "title": `Maths — Zoë 🎓 "quoted"`, "tutor_ids": []any{tutor1},
		"quiz_code": "QUIZ1", "status": "open",
		"starts_at": "2026-03-02T09:00:00.000000Z", "ends_at": "2026-03-02T09:30:15.500000Z",
		"student_ids": []any{student1, student2}, "updated_at": "2026-03-01T08:00:00.123456Z",
	}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if prefix := fmt.Sprintf("exam_%s_%d_", exam1, time.Date(2026, 3, 1, 8, 0, 0, 123456000, time.UTC).UnixMicro()); !strings.HasPrefix(firstID, prefix) {
		t.Errorf("webhook id %q, want prefix %q", firstID, prefix)
	}
	if got := sees(t, db, claims(admin, "admin", ""), seeTutors); !cmp.Equal(got, []string{"E1/T1"}) {
		t.Errorf("who teaches what = %v, want [E1/T1]", got)
	}
	if got := sees(t, db, claims(tutor1, "tutor", ""), seeSummaries); !cmp.Equal(got, []string{"E1/S1"}) {
		t.Errorf("tutor1 sees %v, want [E1/S1]", got)
	}

	t.Run("reassigned: new id, new tutors, the old tutor loses the archive", func(t *testing.T) {
		db.mustRun(t, fmt.Sprintf("update public.exams set tutor_id = %s where id = %s", literal(tutor2), literal(exam1)))
		reqs := requests(t, db)
		if len(reqs) != 2 {
			t.Fatalf("%d requests, want 2", len(reqs))
		}
		id, body := verified(t, reqs[1])
		if id == firstID {
			t.Errorf("second update reused webhook id %q", id)
		}
		if diff := cmp.Diff([]any{tutor2}, body["tutor_ids"]); diff != "" {
			t.Errorf("tutor_ids (-want +got):\n%s", diff)
		}
		if body["updated_at"] == want["updated_at"] {
			t.Errorf("updated_at unchanged: %v", body["updated_at"])
		}
		if got := sees(t, db, claims(admin, "admin", ""), seeTutors); !cmp.Equal(got, []string{"E1/T2"}) {
			t.Errorf("who teaches what = %v, want [E1/T2]", got)
		}
		if got := sees(t, db, claims(tutor1, "tutor", ""), seeSummaries); len(got) != 0 {
			t.Errorf("tutor1 still sees %v", got)
		}
		if got := sees(t, db, claims(tutor2, "tutor", ""), seeSummaries); !cmp.Equal(got, []string{"E1/S1"}) {
			t.Errorf("tutor2 sees %v, want [E1/S1]", got)
		}
	})

	t.Run("resync sends the same state under the same id", func(t *testing.T) {
		if got := db.mustRun(t, "select invigil.resync_exams()"); got != "1" {
			t.Errorf("resync_exams() = %s, want 1", got)
		}
		reqs := requests(t, db)
		if len(reqs) != 3 {
			t.Fatalf("%d requests, want 3", len(reqs))
		}
		before, _ := verified(t, reqs[1])
		again, _ := verified(t, reqs[2])
		if again != before {
			t.Errorf("resync id %q, want the last delivery's %q (invigil then ignores it)", again, before)
		}
	})

	t.Run("an edit invigil does not see sends nothing", func(t *testing.T) {
		db.mustRun(t, fmt.Sprintf("update public.exams set description = 'new words' where id = %s", literal(exam1)))
		if n := len(requests(t, db)); n != 3 {
			t.Errorf("%d requests, want still 3", n)
		}
	})

	t.Run("rerunning the migration rebuilds who teaches what", func(t *testing.T) {
		db.mustRun(t, "delete from public.invigil_exam_tutors")
		if _, err := db.runFile(hookMigration); err != nil {
			t.Fatal(err)
		}
		if got := sees(t, db, claims(admin, "admin", ""), seeTutors); !cmp.Equal(got, []string{"E1/T2"}) {
			t.Errorf("who teaches what = %v, want [E1/T2]", got)
		}
		if n := len(requests(t, db)); n != 3 {
			t.Errorf("the migration sent %d requests; it must send none", n-3)
		}
	})

	t.Run("deleted: closed, nobody teaches it", func(t *testing.T) {
		db.mustRun(t, fmt.Sprintf("delete from public.exams where id = %s", literal(exam1)))
		reqs := requests(t, db)
		if len(reqs) != 4 {
			t.Fatalf("%d requests, want 4", len(reqs))
		}
		id, body := verified(t, reqs[3])
		if body["status"] != "closed" || body["exam_id"] != exam1 {
			t.Errorf("after delete, sent %v", body)
		}
		last, _ := verified(t, reqs[2])
		if id == last {
			t.Errorf("delete reused webhook id %q", id)
		}
		if got := sees(t, db, claims(admin, "admin", ""), seeTutors); len(got) != 0 {
			t.Errorf("who teaches what = %v, want none", got)
		}
	})
}

// TestExamsHookNeverFailsTheWrite: without usable secrets nothing is sent,
// but the platform's write succeeds and who teaches what is kept.
func TestExamsHookNeverFailsTheWrite(t *testing.T) {
	for _, tt := range []struct {
		name   string
		secret string // "" sets no Vault secrets at all
	}{
		{"no vault secrets", ""},
		{"malformed secret", "not-a-whsec-secret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := mustDB(t)
			if tt.secret != "" {
				setVault(t, db, "http://invigil.test", tt.secret)
			}
			db.mustRun(t, fmt.Sprintf("insert into public.exams (id, title, tutor_id, status) values (%s, 'Algebra', %s, 'scheduled')",
				literal(exam2), literal(tutor2)))
			if n := len(requests(t, db)); n != 0 {
				t.Errorf("%d requests queued, want none", n)
			}
			if got := sees(t, db, claims(admin, "admin", ""), seeTutors); !cmp.Equal(got, []string{"E2/T2"}) {
				t.Errorf("who teaches what = %v, want [E2/T2]", got)
			}
		})
	}
}

// TestExamPayloadMapping: the platform's statuses, and what is left out.
func TestExamPayloadMapping(t *testing.T) {
	db := mustDB(t)
	tests := []struct {
		row  string // a public.exams row as JSON
		want string
	}{
		{`{"id": "x1", "title": "T", "tutor_id": null, "status": "draft", "quiz_code": "", "student_ids": null, "updated_at": "2026-03-01T08:00:00+02:00"}`,
			`{"title": "T", "status": "scheduled", "exam_id": "x1", "tutor_ids": [], "updated_at": "2026-03-01T06:00:00.000000Z"}`},
		{`{"id": "x2", "title": "T", "status": "Active", "student_ids": []}`,
			`{"title": "T", "status": "open", "exam_id": "x2", "tutor_ids": [], "student_ids": []}`},
		{`{"id": "x3", "title": "T", "status": "completed"}`,
			`{"title": "T", "status": "closed", "exam_id": "x3", "tutor_ids": []}`},
	}
	for _, tt := range tests {
		got := db.mustRun(t, fmt.Sprintf("select invigil.exam_payload(%s::jsonb)", literal(tt.row)))
		if got != tt.want {
			t.Errorf("exam_payload(%s)\n got %s\nwant %s", tt.row, got, tt.want)
		}
	}
}

// TestSignKnownVector checks invigil.sign against the Standard Webhooks
// reference vector (also in app/webhook's tests), and the secret's forms
// invigil accepts.
func TestSignKnownVector(t *testing.T) {
	db := mustDB(t)
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	for _, secret := range []string{hookSecret, "v1," + hookSecret, " " + hookSecret + "\n",
		strings.TrimRight(hookSecret, "=") /* unpadded */} {
		got := db.mustRun(t, fmt.Sprintf(`select invigil.sign(%s, 'msg_p5jXN8AQM9LWM0D4loKWxJek', '1614265330', '{"test": 2432232314}')`,
			literal(secret)))
		if got != want {
			t.Errorf("sign with %q = %s, want %s", secret, got, want)
		}
	}
	if out, err := db.run(`select invigil.sign('sk_live_x', 'm', '1', '{}')`); err == nil {
		t.Errorf("a secret without whsec_ signed: %s", out)
	}
	// Browsers cannot reach the signing function (nor any of schema invigil).
	if out, err := db.asUser(claims(admin, "admin", ""), `select invigil.sign('whsec_AAAA', 'm', '1', '{}')`); err == nil ||
		!strings.Contains(err.Error(), "permission denied") {
		t.Errorf("authenticated called invigil.sign: %s, %v", out, err)
	}
}
