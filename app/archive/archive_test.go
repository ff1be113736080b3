package archive_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"

	"invigil/app/archive"
	"invigil/app/archive/archivetest"
	"invigil/app/metrics"
	"invigil/app/webhook"
	"invigil/store"
	"invigil/store/storetest"
)

// rig is a deliverer over a real store, a fake clock and the Supabase
// stand-in, without jitter so that every wait is exact.
type rig struct {
	t     *testing.T
	db    *store.DB
	clock *clockwork.FakeClock
	sb    *archivetest.Supabase
	m     *metrics.Metrics
	d     *archive.Deliverer
}

func newRig(t *testing.T, edit ...func(*archive.Config)) *rig {
	t.Helper()
	r := &rig{t: t, clock: clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)), m: metrics.New()}
	r.db = storetest.MustOpen(t, r.clock)
	r.sb = archivetest.New(t)
	cfg := archive.Config{
		SupabaseURL: r.sb.URL, ServiceRoleKey: archivetest.ServiceKey, Clock: r.clock, Metrics: r.m,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: 2 * time.Second, MaxBackoff: 10 * time.Minute,
		Jitter: func(d time.Duration) time.Duration { return d },
	}
	for _, f := range edit {
		f(&cfg)
	}
	d, err := archive.New(r.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(context.Background()) })
	r.d = d
	return r
}

func summaryBody(examID, studentID string) string {
	return fmt.Sprintf(`[{"exam_id":%q,"student_id":%q,"status":"submitted","started_at":"2026-03-02T09:00:00.000Z",`+
		`"ended_at":"2026-03-02T09:30:00.000Z","duration_s":1800,"violation_count":0,"violations_by_type":{},"disconnects":0}]`,
		examID, studentID)
}

func messageRow(id, body string) string {
	return fmt.Sprintf(`{"id":%q,"session_id":"chat_1","scope":"support","exam_id":null,"student_id":"s1",`+
		`"client_msg_id":"c_%s","sender_id":"s1","sender_name":"Sam","sender_role":"student","body":%q,`+
		`"attachments":[],"read_by":["s1"],"created_at":"2026-03-02T09:05:00.000Z"}`, id, id, body)
}

// summary enqueues a summary for student in exam e1 and returns its id.
func (r *rig) summary(student string) int64 {
	r.t.Helper()
	return r.enqueue(store.OutboxItem{Target: "proctoring_summaries", OnConflict: "exam_id,student_id", Body: summaryBody("e1", student)})
}

func (r *rig) enqueue(it store.OutboxItem) int64 {
	r.t.Helper()
	var id int64
	err := r.db.Update(context.Background(), func(tx *store.Tx) (err error) {
		id, err = tx.EnqueueItem(it)
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return id
}

// deliver runs DeliverDue and checks how many items it delivered.
func (r *rig) deliver(want int) {
	r.t.Helper()
	n, err := r.d.DeliverDue(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	if n != want {
		r.t.Fatalf("delivered %d items, want %d (Supabase answered %v)", n, want, r.sb.Replies())
	}
}

// item reads one outbox item as stored.
func (r *rig) item(id int64) store.OutboxItem {
	r.t.Helper()
	items, err := r.db.PendingOutbox(context.Background(), 1000)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, it := range items {
		if it.ID == id {
			return it
		}
	}
	return store.OutboxItem{ID: id, LastError: "(delivered)"}
}

// attempts reads invigil_outbox_attempts_total by class, and the delivered counter.
func attempts(t *testing.T, m *metrics.Metrics) (map[string]int, int) {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byClass, delivered := map[string]int{}, 0
	for _, f := range fams {
		switch f.GetName() {
		case "invigil_outbox_attempts_total":
			for _, s := range f.GetMetric() {
				if v := int(s.GetCounter().GetValue()); v > 0 {
					byClass[s.GetLabel()[0].GetValue()] = v
				}
			}
		case "invigil_outbox_delivered_total":
			delivered = int(f.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return byClass, delivered
}

// scripted answers each request with the next reply; 201 once they run out.
func scripted(replies ...archivetest.Reply) func(archivetest.Request) archivetest.Reply {
	var mu sync.Mutex
	return func(archivetest.Request) archivetest.Reply {
		mu.Lock()
		defer mu.Unlock()
		if len(replies) == 0 {
			return archivetest.Reply{}
		}
		r := replies[0]
		replies = replies[1:]
		return r
	}
}

func TestRetriesWithBackoffUntilAccepted(t *testing.T) {
	r := newRig(t)
	r.sb.Answer(scripted(archivetest.Reply{Status: 503}, archivetest.Reply{Status: 500, Body: `{"message":"boom"}`}))
	id := r.summary("s1")
	steps := []struct {
		advance       time.Duration
		wantDelivered int
		wantRequests  int
	}{
		{0, 0, 1},                                // 503
		{0, 0, 1},                                // not due again yet: nothing sent
		{2*time.Second - time.Millisecond, 0, 1}, // still not due
		{time.Millisecond, 0, 2},                 // 500; the next wait doubles
		{4*time.Second - time.Millisecond, 0, 2},
		{time.Millisecond, 1, 3}, // accepted
		{time.Hour, 0, 3},        // delivered items are never sent again
	}
	for i, st := range steps {
		r.clock.Advance(st.advance)
		r.deliver(st.wantDelivered)
		if got := len(r.sb.Requests()); got != st.wantRequests {
			t.Fatalf("step %d: Supabase got %d requests, want %d", i, got, st.wantRequests)
		}
		if i == 3 {
			it := r.item(id)
			if it.Attempts != 2 || it.LastStatus != 500 || it.LastError != `answered 500: {"message":"boom"}` || it.RejectedAt != "" {
				t.Fatalf("after two failures: %+v", it)
			}
		}
	}
	if n := r.sb.Accepted("proctoring_summaries")["e1|s1"]; n != 1 {
		t.Fatalf("the summary was accepted %d times, want once", n)
	}
	byClass, delivered := attempts(t, r.m)
	if diff := cmp.Diff(map[string]int{"5xx": 2, "2xx": 1}, byClass); diff != "" || delivered != 1 {
		t.Fatalf("attempts by class (-want +got):\n%s\ndelivered %d", diff, delivered)
	}
}

// Nothing is sent again before the answer's Retry-After, in either form;
// a Retry-After shorter than the backoff does not shorten it.
func TestHonoursRetryAfter(t *testing.T) {
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	cases := []struct {
		name       string
		reply      archivetest.Reply
		wantWait   time.Duration
		wantStatus int
	}{
		{"429 in seconds", archivetest.Reply{Status: 429, RetryAfter: "120"}, 120 * time.Second, 429},
		{"503 as an HTTP date", archivetest.Reply{Status: 503, RetryAfter: start.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second, 503},
		{"shorter than the backoff", archivetest.Reply{Status: 429, RetryAfter: "1"}, 2 * time.Second, 429},
		{"a date in the past", archivetest.Reply{Status: 503, RetryAfter: start.Add(-time.Hour).Format(http.TimeFormat)}, 2 * time.Second, 503},
		{"cut to MaxRetryAfter", archivetest.Reply{Status: 429, RetryAfter: "86400"}, time.Hour, 429},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.sb.Answer(scripted(c.reply))
			id := r.summary("s1")
			r.deliver(0)
			it := r.item(id)
			if want := store.FormatTime(start.Add(c.wantWait)); it.NextAttemptAt != want || it.LastStatus != c.wantStatus || it.RejectedAt != "" {
				t.Fatalf("after the refusal: next attempt %s (want %s), status %d, rejected %q", it.NextAttemptAt, want, it.LastStatus, it.RejectedAt)
			}
			r.clock.Advance(c.wantWait - time.Millisecond)
			r.deliver(0)
			if n := len(r.sb.Requests()); n != 1 {
				t.Fatalf("retried %d times before Retry-After", n-1)
			}
			r.clock.Advance(time.Millisecond)
			r.deliver(1)
		})
	}
}

// An item Supabase hangs on uses one request slot until the client's
// timeout, and nothing else: items behind it and items enqueued while it
// hangs are delivered at once; the hung attempt is recorded and counted.
func TestHangingItemHoldsBackNothing(t *testing.T) {
	r := newRig(t, func(c *archive.Config) { c.RequestTimeout = 2 * time.Second })
	r.sb.Answer(func(q archivetest.Request) archivetest.Reply {
		if q.Keys[0] == "e1|hangs" {
			return archivetest.Reply{Hang: true}
		}
		return archivetest.Reply{}
	})
	hung := r.summary("hangs") // oldest: first in line
	r.summary("s1")
	r.summary("s2")
	began := time.Now()
	if _, err := r.d.Kick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !r.sb.WaitRows("proctoring_summaries", 2, time.Second) {
		t.Fatalf("the items behind a hanging one did not arrive within a second: %v", r.sb.Replies())
	}
	r.summary("s3") // enqueued while the first still hangs
	if _, err := r.d.Kick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !r.sb.WaitRows("proctoring_summaries", 3, time.Second) {
		t.Fatalf("an item enqueued while another hangs did not arrive within a second")
	}
	if took := time.Since(began); took >= 2*time.Second {
		t.Fatalf("the others took %s: they waited for the hanging item's timeout", took)
	}
	if err := r.d.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	it := r.item(hung)
	if it.Attempts != 1 || it.LastStatus != 0 || !strings.Contains(it.LastError, "deadline exceeded") ||
		it.NextAttemptAt != store.FormatTime(r.clock.Now().Add(2*time.Second)) {
		t.Fatalf("the hung attempt was not recorded with its backoff: %+v", it)
	}
	byClass, delivered := attempts(t, r.m)
	if diff := cmp.Diff(map[string]int{"2xx": 3, "network": 1}, byClass); diff != "" || delivered != 3 {
		t.Fatalf("attempts by class (-want +got):\n%s\ndelivered %d", diff, delivered)
	}
}

// The review's finding: a caller whose deadline is shorter than the
// request's timeout gives up waiting, but the attempt is still recorded
// (on a context of its own) and backed off, never retried at every tick.
func TestAttemptRecordedAfterTheCallerGaveUp(t *testing.T) {
	r := newRig(t, func(c *archive.Config) { c.RequestTimeout = 500 * time.Millisecond })
	r.sb.Answer(archivetest.Always(archivetest.Reply{Hang: true}))
	id := r.summary("s1")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := r.d.DeliverDue(ctx); err == nil {
		t.Fatal("DeliverDue returned before the hanging request ended without saying its context ended")
	}
	if err := r.d.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if it := r.item(id); it.Attempts != 1 || it.NextAttemptAt <= store.FormatTime(r.clock.Now()) {
		t.Fatalf("the attempt was not recorded: %+v", it)
	}
	r.deliver(0) // backed off: not sent again now
	if n := len(r.sb.Requests()); n != 1 {
		t.Fatalf("sent %d times, want once", n)
	}
}

// A 4xx that retrying will not fix keeps the item, flagged with the
// answer, retried only at the backoff cap; 408 and 429 are ordinary
// failures. Nothing is dropped, and nothing else waits for it.
func TestLastingRefusalIsKeptAndFlagged(t *testing.T) {
	cases := []struct {
		status  int
		lasting bool
	}{
		{400, true}, {401, true}, {403, true}, {404, true}, {409, true}, {422, true},
		{408, false}, {429, false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.status), func(t *testing.T) {
			r := newRig(t)
			answer := `{"code":"23502","message":"null value in column"}`
			r.sb.Answer(func(q archivetest.Request) archivetest.Reply {
				if q.Keys[0] == "e1|bad" {
					return archivetest.Reply{Status: c.status, Body: answer}
				}
				return archivetest.Reply{}
			})
			bad := r.summary("bad")
			r.summary("good")
			r.deliver(1)
			it := r.item(bad)
			if got := it.RejectedAt != ""; got != c.lasting || it.LastStatus != c.status ||
				it.LastError != fmt.Sprintf("answered %d: %s", c.status, answer) {
				t.Fatalf("after %d: %+v", c.status, it)
			}
			wait := 2 * time.Second
			if c.lasting {
				wait = 10 * time.Minute // the cap
			}
			if want := store.FormatTime(r.clock.Now().Add(wait)); it.NextAttemptAt != want {
				t.Fatalf("next attempt %s, want %s", it.NextAttemptAt, want)
			}
			// Supabase is fixed; the item goes at its next attempt, and the flag goes with it.
			r.sb.Answer(nil)
			r.clock.Advance(wait - time.Millisecond)
			r.deliver(0)
			r.clock.Advance(time.Millisecond)
			r.deliver(1)
			st, _ := r.db.OutboxStats(context.Background(), r.clock.Now())
			if st.Pending != 0 || st.Rejected != 0 {
				t.Fatalf("after the fix: %+v", st)
			}
		})
	}
}

// Transcripts tried for the first time share a request; a batch refused
// for one bad row is split, and the bad row alone is flagged.
func TestTranscriptsAreBatched(t *testing.T) {
	r := newRig(t)
	r.sb.Answer(func(q archivetest.Request) archivetest.Reply {
		for _, row := range q.Rows {
			if row["body"] == "bad" {
				return archivetest.Reply{Status: 400, Body: `{"message":"check constraint"}`}
			}
		}
		return archivetest.Reply{}
	})
	chat := func(rows ...string) int64 {
		return r.enqueue(store.OutboxItem{Target: "chat_messages", OnConflict: "id", Body: "[" + strings.Join(rows, ",") + "]"})
	}
	chat(messageRow("m1", "hello"), messageRow("m2", "hi"))
	chat(messageRow("m3", "bye"))
	r.summary("s1") // summaries always go alone
	r.deliver(3)
	var shapes []string
	for _, q := range r.sb.Requests() {
		shapes = append(shapes, fmt.Sprintf("%s×%d", q.Table, len(q.Rows)))
	}
	if diff := cmp.Diff([]string{"chat_messages×3", "proctoring_summaries×1"}, sortedCopy(shapes)); diff != "" {
		t.Fatalf("requests (-want +got):\n%s", diff)
	}

	before := len(r.sb.Requests())
	chat(messageRow("m4", "ok"))
	bad := chat(messageRow("m5", "bad"))
	chat(messageRow("m6", "fine"))
	r.deliver(2)
	if n := len(r.sb.Requests()) - before; n != 4 {
		t.Fatalf("a refused batch of 3 and then each alone: %d requests, want 4", n)
	}
	if it := r.item(bad); it.RejectedAt == "" || it.LastStatus != 400 {
		t.Fatalf("the bad transcript: %+v", it)
	}
	for _, id := range []string{"m1", "m2", "m3", "m4", "m6"} {
		if n := r.sb.Accepted("chat_messages")[id]; n != 1 {
			t.Fatalf("message %s accepted %d times, want once", id, n)
		}
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// A stream of items through a flaky Supabase: each arrives exactly once as
// a row, and the counters agree with what Supabase saw.
func TestEveryAttemptIsCounted(t *testing.T) {
	r := newRig(t, func(c *archive.Config) { c.RequestTimeout = 300 * time.Millisecond })
	var mu sync.Mutex
	seen := map[string]int{}
	r.sb.Answer(func(q archivetest.Request) archivetest.Reply {
		mu.Lock()
		defer mu.Unlock()
		k := q.Keys[0]
		seen[k]++
		switch n := seen[k]; {
		case k == "e1|s3" && n == 1:
			return archivetest.Reply{Hang: true}
		case n == 1:
			return archivetest.Reply{Status: []int{500, 502, 429, 201}[len(seen)%4], RetryAfter: "3"}
		}
		return archivetest.Reply{}
	})
	const students = 12
	for i := range students {
		r.summary(fmt.Sprintf("s%d", i))
	}
	for range 6 {
		if _, err := r.d.DeliverDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.clock.Advance(10 * time.Second)
	}
	accepted := r.sb.Accepted("proctoring_summaries")
	if len(accepted) != students {
		t.Fatalf("%d of %d summaries arrived", len(accepted), students)
	}
	for k, n := range accepted {
		if n != 1 {
			t.Fatalf("%s arrived %d times", k, n)
		}
	}
	want := map[string]int{}
	for _, s := range r.sb.Replies() {
		if s == 0 {
			want["network"]++
		} else {
			want[fmt.Sprintf("%dxx", s/100)]++
		}
	}
	byClass, delivered := attempts(t, r.m)
	if diff := cmp.Diff(want, byClass); diff != "" || delivered != students {
		t.Fatalf("attempts by class (-Supabase +counted):\n%s\ndelivered %d", diff, delivered)
	}
}

func TestOutboxSurvivesARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "invigil.db")
	open := func() *store.DB {
		db, err := store.Open(store.Options{Path: path, Schema: storetest.Schema(t)})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	db.Update(context.Background(), func(tx *store.Tx) error {
		return tx.Enqueue("proctoring_summaries", "exam_id,student_id", summaryBody("e1", "s1"))
	})
	db.Close() // the process dies before any delivery

	db = open()
	defer db.Close()
	sb := archivetest.New(t)
	d, err := archive.New(db, archive.Config{SupabaseURL: sb.URL, ServiceRoleKey: archivetest.ServiceKey})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	if n, err := d.DeliverDue(context.Background()); err != nil || n != 1 || len(sb.Accepted("proctoring_summaries")) != 1 {
		t.Fatalf("after restart: delivered %d, err %v, Supabase has %v", n, err, sb.Accepted("proctoring_summaries"))
	}
}

func TestNeedsASink(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	for _, cfg := range []archive.Config{
		{SupabaseURL: "https://x.supabase.co"},
		{ServiceRoleKey: "k"},
		{},
		{ReminderURL: "https://platform.test/notify"},                         // nothing to sign with
		{ReminderURL: "https://platform.test/notify", ReminderSecret: "nope"}, // not a whsec_ secret
	} {
		if _, err := archive.New(db, cfg); err == nil {
			t.Errorf("a deliverer was built from %+v", cfg)
		}
	}
}

// Reminders are posted signed as our hooks are, with the FIRST secret of a
// comma list, and the item's id as webhook-id.
func TestReminderIsSignedWithTheFirstSecret(t *testing.T) {
	const newer, older = "whsec_bmV3ZXItc2VjcmV0LWZvci1yZW1pbmRlcnM=", "whsec_b2xkZXItc2VjcmV0LWZvci1yZW1pbmRlcnM="
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	d, err := archive.New(db, archive.Config{ReminderURL: srv.URL + "/notify", ReminderSecret: newer + "," + older, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	body := `{"type":"exam.reminder","exam_id":"e1"}`
	db.Update(context.Background(), func(tx *store.Tx) error {
		_, err := tx.EnqueueItem(store.OutboxItem{Sink: store.SinkReminder, Target: "exam_reminders", MsgID: "reminder_e1_x", Body: body})
		return err
	})
	if n, err := d.DeliverDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("deliver: %d %v", n, err)
	}
	r, b := <-got, <-bodies
	if r.URL.Path != "/notify" || r.Header.Get("webhook-id") != "reminder_e1_x" || string(b) != body ||
		r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("reminder request: %s %v %s", r.URL, r.Header, b)
	}
	for _, c := range []struct {
		secret string
		ok     bool
	}{{newer, true}, {older, false}} {
		v, _ := webhook.NewVerifier(c.secret, clock)
		if _, err := v.Verify(r.Header, b); (err == nil) != c.ok {
			t.Errorf("verified with %s: %v, want ok=%v", c.secret[:12], err, c.ok)
		}
	}
	var decoded map[string]any
	if json.Unmarshal(b, &decoded) != nil {
		t.Fatal("reminder body is not JSON")
	}
}
