package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/archive"
	"invigil/app/archive/archivetest"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/jobs"
	"invigil/app/proctoring"
	"invigil/app/webhook"
	"invigil/store"
)

// The scheduled jobs, end to end: the real wiring with gocron on the
// harness's fake clock, Supabase and the platform's notification endpoint
// stood in for.

// withSupabase points the archive at the stand-in.
func withSupabase(sb *archivetest.Supabase) apptest.Option {
	return apptest.WithConfig(func(c *app.Config) { c.SupabaseURL, c.ServiceRoleKey = sb.URL, sb.Key })
}

// call invokes fn over HTTP as u and fails unless it answers 200.
func call(t *testing.T, h *apptest.Harness, u identity.User, fn string, args any) {
	t.Helper()
	if code, body := h.Call(u, fn, args); code != http.StatusOK {
		t.Fatalf("%s as %s: %d %s", fn, u.ID, code, body)
	}
}

// get reads GET path as u (the anonymous user sends no token).
func get(t *testing.T, h *apptest.Harness, u identity.User, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.URL+path, nil)
	if u.ID != "" {
		req.Header.Set("Authorization", "Bearer "+h.Token(u))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// armed waits until gocron re-armed the timers of all n jobs (the tests
// here open no socket, whose timers would count too), so that the next
// move of the clock runs whatever came due.
func armed(t *testing.T, h *apptest.Harness) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Fake.BlockUntilContext(ctx, len(h.App.Jobs())); err != nil {
		t.Fatal("the scheduler did not re-arm its timers")
	}
}

func session(t *testing.T, h *apptest.Harness, u identity.User, examID string) proctoring.SessionView {
	t.Helper()
	code, body := h.Query(tutor1, "proctoring.getSession", map[string]string{"exam_id": examID, "student_id": u.ID})
	if code != http.StatusOK {
		t.Fatalf("getSession: %d %s", code, body)
	}
	var s proctoring.SessionView
	json.Unmarshal([]byte(body), &s)
	return s
}

// A student who stops heartbeating shows disconnected when the sweep runs
// on its schedule, and the run is recorded at /api/admin/jobs.
func TestSilentStudentIsDisconnectedOnSchedule(t *testing.T) {
	h := bootWithExams(t)
	call(t, h, student1, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	h.Advance(26 * time.Second) // the sweep (every 5 s) comes due once, 26 s after the last sign of life
	if run := h.JobRun("disconnect-silent"); run.Rows != 1 || run.Err != nil {
		t.Fatalf("sweep: %+v", run)
	}
	if s := session(t, h, student1, "e1"); s.Status != "disconnected" {
		t.Fatalf("status %s, want disconnected", s.Status)
	}
	code, body := get(t, h, admin, "/api/admin/jobs")
	var list []app.JobView
	if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil {
		t.Fatalf("GET /api/admin/jobs: %d %s", code, body)
	}
	byName := map[string]app.JobView{}
	for _, j := range list {
		byName[j.Name] = j
	}
	sweep := byName["disconnect-silent"]
	if sweep.EveryS != 5 || sweep.Runs != 1 || sweep.LastRows != 1 || sweep.LastError != nil ||
		sweep.LastStartedAt == nil || *sweep.LastStartedAt != "2026-03-02T09:00:26.000Z" {
		t.Fatalf("disconnect-silent at /api/admin/jobs: %+v", sweep)
	}
	for _, name := range []string{"expire-stale", "purge"} {
		if j, ok := byName[name]; !ok || j.Runs != 0 || j.LastStartedAt != nil {
			t.Fatalf("%s at /api/admin/jobs: %+v (present %v)", name, j, ok)
		}
	}
}

// The admin endpoints are for admins only.
func TestAdminEndpointsWantAnAdmin(t *testing.T) {
	h := bootWithExams(t)
	for _, path := range []string{"/api/admin/jobs", "/api/admin/outbox"} {
		for _, c := range []struct {
			u    identity.User
			want httpErr
		}{
			{identity.User{}, httpErr{401, "unauthenticated"}},
			{student1, httpErr{403, "forbidden"}},
			{tutor1, httpErr{403, "forbidden"}},
			{admin, httpErr{200, ""}},
		} {
			code, body := get(t, h, c.u, path)
			if got := decodeHTTPErr(t, code, body); got != c.want {
				t.Errorf("GET %s as %q: %+v, want %+v", path, c.u.Role, got, c.want)
			}
		}
	}
}

// A session nobody submitted, silent for INVIGIL_STALE_AFTER after its
// exam closed, is expired by the scheduled job: shown disconnected (still
// on the grid), final, and archived exactly once with status disconnected.
func TestStaleSessionIsExpiredAndArchivedOnce(t *testing.T) {
	sb := archivetest.New(t)
	h := bootWithExams(t, withSupabase(sb))
	call(t, h, student1, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	call(t, h, student2, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	call(t, h, student1, "proctoring.endSession", map[string]string{"exam_id": "e1"})

	armed(t, h)
	h.Advance(30 * time.Second) // 09:00:30: student 2, silent for 30 s, shows disconnected
	h.JobRun("expire-stale")
	if run := h.JobRun("disconnect-silent"); run.Rows != 1 {
		t.Fatalf("sweep at 09:00:30: %+v", run)
	}
	call(t, h, student2, "proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 3, "answered_count": 2})
	h.Exam(exam.Registration{ExamID: "e1", Title: "Exam one", TutorIDs: []string{tutor1.ID}, Status: exam.Closed})

	steps := []struct {
		advance time.Duration
		expired int
	}{
		{61 * time.Second, 0}, // 09:01:31: silent and closed for 61 s only
		{60 * time.Second, 1}, // 09:02:31: for 121 s: expired
		{30 * time.Second, 0}, // never twice
	}
	for i, st := range steps {
		armed(t, h)
		h.Advance(st.advance)
		if run := h.JobRun("expire-stale"); run.Rows != st.expired || run.Err != nil {
			t.Fatalf("step %d: expire-stale %+v, want %d expired", i, run, st.expired)
		}
	}
	s := session(t, h, student2, "e1")
	if s.Status != "disconnected" || s.EndedAt == nil || *s.EndedAt != "2026-03-02T09:00:30.000Z" {
		t.Fatalf("the expired session: %+v", s)
	}
	code, body := h.Query(tutor1, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
	if rows := sessions(t, json.RawMessage(body)); code != 200 || len(rows) != 2 {
		t.Fatalf("the grid after expiry: %d %s", code, body)
	}
	code, body = h.Call(student2, "proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 4, "answered_count": 3})
	if got := decodeHTTPErr(t, code, body); got != (httpErr{409, "conflict"}) {
		t.Fatalf("a heartbeat on an expired session: %d %s", code, body)
	}

	// The outbox job delivers on its own schedule.
	if !sb.WaitRows("proctoring_summaries", 2, 5*time.Second) {
		armed(t, h)
		h.Advance(2 * time.Second)
		if !sb.WaitRows("proctoring_summaries", 2, 5*time.Second) {
			t.Fatalf("summaries in Supabase: %v", sb.Accepted("proctoring_summaries"))
		}
	}
	if err := h.App.Archive.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"exam_id": "e1", "student_id": student2.ID, "status": "disconnected",
		"started_at": "2026-03-02T09:00:00.000Z", "ended_at": "2026-03-02T09:00:30.000Z", "duration_s": 30.0,
		"violation_count": 0.0, "violations_by_type": map[string]any{}, "disconnects": 2.0,
	}
	if diff := cmp.Diff(want, sb.Row("proctoring_summaries", "e1|"+student2.ID)); diff != "" {
		t.Fatalf("the expired session's summary (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"e1|" + student1.ID: 1, "e1|" + student2.ID: 1}, sb.Accepted("proctoring_summaries")); diff != "" {
		t.Fatalf("summaries accepted (-want +got):\n%s", diff)
	}
	if s1 := sb.Row("proctoring_summaries", "e1|"+student1.ID); s1["status"] != "submitted" {
		t.Fatalf("the submitted session's summary: %v", s1)
	}
}

// Retention purges what reached Supabase INVIGIL_RETENTION ago, and never
// what did not: a session whose summary Supabase refuses stays, with its
// exam, until its summary arrives.
func TestRetentionPurgesOnlyDelivered(t *testing.T) {
	sb := archivetest.New(t)
	refuse := map[string]bool{"e1|" + student2.ID: true}
	var mu sync.Mutex
	sb.Answer(func(q archivetest.Request) archivetest.Reply {
		mu.Lock()
		defer mu.Unlock()
		if refuse[q.Keys[0]] {
			return archivetest.Reply{Status: 503}
		}
		return archivetest.Reply{}
	})
	h := bootWithExams(t, withSupabase(sb), apptest.WithConfig(func(c *app.Config) { c.Retention = time.Hour }))
	ctx := context.Background()
	for _, sit := range []struct {
		u    identity.User
		exam string
	}{{student1, "e1"}, {student2, "e1"}, {student1, "e2"}} {
		call(t, h, sit.u, "proctoring.startSession", map[string]string{"exam_id": sit.exam})
		call(t, h, sit.u, "proctoring.logViolation", map[string]string{"exam_id": sit.exam, "type": "paste"})
		call(t, h, sit.u, "proctoring.endSession", map[string]string{"exam_id": sit.exam})
	}
	h.Exam(exam.Registration{ExamID: "e3", Title: "Exam three", TutorIDs: []string{tutor1.ID}, Status: exam.Open})
	call(t, h, student2, "proctoring.startSession", map[string]string{"exam_id": "e3"}) // never ends: never purged
	if _, err := h.App.Archive.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"e1", "e2"} {
		h.Exam(exam.Registration{ExamID: id, Title: "Exam", TutorIDs: []string{tutor1.ID, tutor2.ID}, Status: exam.Closed})
	}

	type state struct {
		Sessions, Violations []string // exam/student
		Exams                []string
		Outbox               int // items left, delivered or not
	}
	read := func() state {
		t.Helper()
		var st state
		for _, e := range []string{"e1", "e2", "e3"} {
			if _, err := h.App.DB.Exam(ctx, e); err == nil {
				st.Exams = append(st.Exams, e)
			}
			for _, u := range []identity.User{student1, student2} {
				if _, err := h.App.DB.Session(ctx, e, u.ID); err == nil {
					st.Sessions = append(st.Sessions, e+"/"+u.ID)
				} else if !errors.Is(err, store.ErrNotFound) {
					t.Fatal(err)
				}
				if vs, _ := h.App.DB.Violations(ctx, e, u.ID, 10); len(vs) > 0 {
					st.Violations = append(st.Violations, e+"/"+u.ID)
				}
			}
		}
		items, err := h.App.DB.PendingOutbox(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		st.Outbox = len(items)
		return st
	}
	everything := state{
		Sessions:   []string{"e1/" + student1.ID, "e1/" + student2.ID, "e2/" + student1.ID, "e3/" + student2.ID},
		Violations: []string{"e1/" + student1.ID, "e1/" + student2.ID, "e2/" + student1.ID},
		Exams:      []string{"e1", "e2", "e3"}, Outbox: 1,
	}
	h.Advance(time.Hour - time.Second)
	h.RunJob("purge")
	if diff := cmp.Diff(everything, read()); diff != "" {
		t.Fatalf("purged before INVIGIL_RETENTION (-want +got):\n%s", diff)
	}
	h.Advance(2 * time.Second)
	// The scheduled purge may run too, and take some of the rows first:
	// what is left is what counts.
	h.RunJob("purge")
	want := state{
		Sessions:   []string{"e1/" + student2.ID, "e3/" + student2.ID},
		Violations: []string{"e1/" + student2.ID},
		Exams:      []string{"e1", "e3"}, // e2 closed with no session left; e1 keeps one; e3 is open
		Outbox:     1,                    // the refused summary, kept
	}
	if diff := cmp.Diff(want, read()); diff != "" {
		t.Fatalf("after INVIGIL_RETENTION (-want +got):\n%s", diff)
	}
	code, body := h.Query(tutor1, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
	if rows := sessions(t, json.RawMessage(body)); code != 200 || len(rows) != 1 || rows[0].StudentID != student2.ID {
		t.Fatalf("the grid after the purge: %d %s", code, body)
	}

	// Supabase takes the last summary: an hour later it goes too, and e1
	// with it.
	mu.Lock()
	refuse = map[string]bool{}
	mu.Unlock()
	// A scheduled attempt may still be on its way with the old answer: once
	// it is recorded, its retry falls due within the hour.
	if err := h.App.Archive.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	h.Advance(time.Hour)
	// The scheduled delivery may take it first: either way it is delivered
	// when DeliverDue returns.
	if _, err := h.App.Archive.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	h.Advance(time.Hour + time.Second)
	h.RunJob("purge")
	want = state{Sessions: []string{"e3/" + student2.ID}, Exams: []string{"e3"}}
	if diff := cmp.Diff(want, read()); diff != "" {
		t.Fatalf("after the last delivery and INVIGIL_RETENTION (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"e1|" + student1.ID: 1, "e1|" + student2.ID: 1, "e2|" + student1.ID: 1},
		sb.Accepted("proctoring_summaries")); diff != "" {
		t.Fatalf("summaries accepted (-want +got):\n%s", diff)
	}
}

// A 4xx that retrying will not fix shows at /api/admin/outbox with its
// answer, and is kept.
func TestRefusedItemShowsAtAdminOutbox(t *testing.T) {
	sb := archivetest.New(t)
	sb.Answer(archivetest.Always(archivetest.Reply{Status: 422, Body: `{"code":"22P02","message":"invalid input syntax for type uuid"}`}))
	h := bootWithExams(t, withSupabase(sb))
	call(t, h, student1, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	call(t, h, student1, "proctoring.endSession", map[string]string{"exam_id": "e1"})
	if _, err := h.App.Archive.DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, h, admin, "/api/admin/outbox")
	var v app.OutboxView
	if code != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil || len(v.Items) != 1 {
		t.Fatalf("GET /api/admin/outbox: %d %s", code, body)
	}
	it := v.Items[0]
	if v.Pending != 1 || v.Rejected != 1 || it.Target != "proctoring_summaries" || it.Sink != "supabase" ||
		it.Attempts != 1 || it.LastStatus == nil || *it.LastStatus != 422 || it.RejectedAt == nil || it.Rows != 1 ||
		it.LastError == nil || *it.LastError != `answered 422: {"code":"22P02","message":"invalid input syntax for type uuid"}` ||
		it.NextAttemptAt != "2026-03-02T09:10:00.000Z" || it.Ref == "" {
		t.Fatalf("the refused item: %s", body)
	}
	for name, want := range map[string]float64{
		"invigil_outbox_pending": 1, `invigil_outbox_attempts_total{class="4xx"}`: 1,
		`invigil_outbox_attempts_total{class="5xx"}`: 0, "invigil_outbox_delivered_total": 0,
	} {
		if got := metric(t, h, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// A request to Supabase gives up before the job that started it would be
// cut short: a hanging Supabase makes failed attempts, recorded.
func TestOutboxTimeoutsNest(t *testing.T) {
	h := bootWithExams(t, withSupabase(archivetest.New(t)))
	for _, j := range h.App.Jobs() {
		if j.Name == "archive-outbox" {
			if archive.DefaultRequestTimeout >= jobs.Deadline(j.Every) {
				t.Fatalf("request timeout %s, job deadline %s", archive.DefaultRequestTimeout, jobs.Deadline(j.Every))
			}
			return
		}
	}
	t.Fatal("no archive-outbox job")
}

// reminders stands in for the platform's notification endpoint: it checks
// each post's signature against the secret invigil must sign with, and
// answers from a switch.
type reminders struct {
	t      *testing.T
	secret string
	clock  clockwork.Clock
	srv    *httptest.Server

	mu     sync.Mutex
	status int
	got    map[string][]string // webhook-id → bodies accepted
	tries  int
}

func newReminders(t *testing.T, secret string) *reminders {
	r := &reminders{t: t, secret: secret, status: http.StatusNoContent, got: map[string][]string{}}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *reminders) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	v, _ := webhook.NewVerifier(r.secret, r.clock)
	id, err := v.Verify(req.Header, b)
	if err != nil || req.Method != http.MethodPost || req.URL.Path != "/notify" {
		r.t.Errorf("reminder not signed with the first secret: %v %s %s", err, req.Method, req.URL)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.status/100 == 2 {
		r.got[id] = append(r.got[id], string(b))
	}
	w.WriteHeader(r.status)
}

func (r *reminders) answer(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
}

func (r *reminders) accepted() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for id, bodies := range r.got {
		out[id] = len(bodies)
	}
	return out
}

// A reminder goes once per exam and start, across a restart on the same
// database file, signed with the first of the secrets; one enqueued but
// not delivered when the process stops arrives after the restart, once.
func TestReminderFiresOnceAcrossARestart(t *testing.T) {
	const first = "whsec_Zmlyc3QtcmVtaW5kZXItc2VjcmV0LWZvci10ZXN0cw=="
	rem := newReminders(t, first)
	path := filepath.Join(t.TempDir(), "invigil.db")
	boot := func(t *testing.T) *apptest.Harness {
		h := apptest.Boot(t, apptest.WithConfig(func(c *app.Config) {
			c.DB, c.ReminderURL = path, rem.srv.URL+"/notify"
			c.WebhookSecret = first + "," + apptest.HookSecret // the harness signs hooks with the second
		}))
		rem.mu.Lock()
		rem.clock = h.Clock
		rem.mu.Unlock()
		return h
	}
	soon := "reminder_soon_2026-03-02T09:10:00.000Z"
	later := "reminder_later_2026-03-02T09:40:00.000Z"
	t.Run("first run", func(t *testing.T) {
		h := boot(t)
		for _, r := range []exam.Registration{
			{ExamID: "soon", Title: "Soon", TutorIDs: []string{tutor1.ID}, Status: exam.Scheduled, StartsAt: "2026-03-02T09:10:00Z", EndsAt: "2026-03-02T10:10:00Z", QuizCode: "Q1"},
			{ExamID: "later", Title: "Later", TutorIDs: []string{tutor1.ID}, Status: exam.Scheduled, StartsAt: "2026-03-02T09:40:00Z"},
			{ExamID: "closed", Title: "Closed", TutorIDs: []string{tutor1.ID}, Status: exam.Closed, StartsAt: "2026-03-02T09:05:00Z"},
			{ExamID: "started", Title: "Started", TutorIDs: []string{tutor1.ID}, Status: exam.Open, StartsAt: "2026-03-02T08:55:00Z"},
		} {
			h.Exam(r)
		}
		if n := h.RunJob("remind-exams"); n != 1 {
			t.Fatalf("reminders enqueued: %d, want 1 (soon)", n)
		}
		if n := h.RunJob("remind-exams"); n != 0 {
			t.Fatalf("enqueued again: %d", n)
		}
		if n, err := h.App.Archive.DeliverDue(context.Background()); err != nil || n != 1 {
			t.Fatalf("deliver: %d %v", n, err)
		}
		rem.mu.Lock()
		body := rem.got[soon][0]
		rem.mu.Unlock()
		want := `{"type":"exam.starting","exam_id":"soon","title":"Soon","quiz_code":"Q1","starts_at":"2026-03-02T09:10:00.000Z","ends_at":"2026-03-02T10:10:00.000Z"}`
		if body != want {
			t.Fatalf("reminder body:\n got %s\nwant %s", body, want)
		}
		// 09:26: "later" comes into its window while the endpoint is down.
		rem.answer(http.StatusServiceUnavailable)
		h.Advance(26 * time.Minute)
		if run := h.JobRun("remind-exams"); run.Rows != 1 || run.Err != nil {
			t.Fatalf("the scheduled run at 09:26: %+v, want 1 reminder (later)", run)
		}
		if _, err := h.App.Archive.DeliverDue(context.Background()); err != nil {
			t.Fatal(err)
		}
	}) // the process stops with "later" undelivered
	if diff := cmp.Diff(map[string]int{soon: 1}, rem.accepted()); diff != "" {
		t.Fatalf("after the first run (-want +got):\n%s", diff)
	}

	rem.answer(http.StatusOK)
	t.Run("after a restart", func(t *testing.T) {
		h := boot(t) // the harness's clock starts at 09:00 again
		h.Advance(30 * time.Minute)
		if n := h.RunJob("remind-exams"); n != 0 {
			t.Fatalf("reminders enqueued again after the restart: %d", n)
		}
		// The scheduled delivery may take it first: either way it is
		// delivered when DeliverDue returns, and nothing is left.
		if _, err := h.App.Archive.DeliverDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n, err := h.App.Archive.DeliverDue(context.Background()); err != nil || n != 0 {
			t.Fatalf("delivered again: %d %v", n, err)
		}
	})
	if diff := cmp.Diff(map[string]int{soon: 1, later: 1}, rem.accepted()); diff != "" {
		t.Fatalf("reminders accepted across the restart (-want +got):\n%s", diff)
	}
}
