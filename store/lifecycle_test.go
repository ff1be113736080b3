package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"

	"invigil/store"
	"invigil/store/storetest"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func mustUpdate(t *testing.T, db *store.DB, fn func(*store.Tx) error) {
	t.Helper()
	if err := db.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// Which sessions are stale: not submitted nor expired, silent since before
// the cutoff, of an exam over (closed, or past ends_at) since before it.
func TestStaleSessions(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	db := storetest.MustOpen(t, clock)
	exams := []store.Exam{
		{ID: "ended", Status: "open", EndsAt: store.FormatTime(t0.Add(time.Minute))},
		{ID: "ends-later", Status: "open", EndsAt: store.FormatTime(t0.Add(time.Hour))},
		{ID: "open", Status: "open"},
		{ID: "closed", Status: "closed"}, // registered (closed) at t0
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		for _, e := range exams {
			e.Title = e.ID
			if _, err := tx.UpsertExam(e); err != nil {
				return err
			}
			for _, s := range []string{"silent", "submitted", "expired"} {
				if _, err := tx.StartSession(e.ID, s, s); err != nil {
					return err
				}
			}
			if err := tx.SetSessionStatus(e.ID, "submitted", store.StatusSubmitted); err != nil {
				return err
			}
			if _, err := tx.ExpireSession(e.ID, "expired"); err != nil {
				return err
			}
		}
		return nil
	})
	clock.Advance(2 * time.Minute)
	mustUpdate(t, db, func(tx *store.Tx) error { // a late heartbeat in the closed exam
		_, err := tx.StartSession("closed", "talker", "talker")
		return err
	})
	clock.Advance(2 * time.Minute) // t0+4m
	cases := []struct {
		cutoff time.Duration // after t0
		want   []string
	}{
		{0, nil}, // nothing is over before t0
		{30 * time.Second, []string{"closed/silent"}},                 // closed at t0
		{90 * time.Second, []string{"closed/silent", "ended/silent"}}, // ends_at t0+1m
		{3 * time.Minute, []string{"closed/silent", "closed/talker", "ended/silent"}},
	}
	for _, c := range cases {
		var got []string
		mustUpdate(t, db, func(tx *store.Tx) error {
			keys, err := tx.StaleSessions(t0.Add(c.cutoff), 100)
			for _, k := range keys {
				got = append(got, k.ExamID+"/"+k.StudentID)
			}
			return err
		})
		slices.Sort(got)
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("cutoff t0+%s (-want +got):\n%s", c.cutoff, diff)
		}
	}
	// Expiry is once: the second finds it expired.
	var first, again bool
	mustUpdate(t, db, func(tx *store.Tx) (err error) {
		if first, err = tx.ExpireSession("ended", "silent"); err != nil {
			return err
		}
		again, err = tx.ExpireSession("ended", "silent")
		return err
	})
	s, _ := db.Session(context.Background(), "ended", "silent")
	if !first || again || s.Status != store.StatusDisconnected || s.Disconnects != 1 || s.EndedAt != s.LastHeartbeat || s.ExpiredAt == "" {
		t.Fatalf("expired once: %v then %v; %+v", first, again, s)
	}
}

// A row is archived when the last item about it is delivered, and a new
// item about it un-archives it until that one is delivered too.
func TestArchivedWhenEveryItemIsDelivered(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	db := storetest.MustOpen(t, clock)
	var sess store.Session
	var a, b int64
	mustUpdate(t, db, func(tx *store.Tx) (err error) {
		if sess, err = tx.StartSession("e1", "s1", "Sam"); err != nil {
			return err
		}
		item := store.OutboxItem{Target: "proctoring_summaries", OnConflict: "exam_id,student_id", Body: "[]",
			RefTable: "exam_sessions", RefID: sess.ID}
		if a, err = tx.EnqueueItem(item); err != nil {
			return err
		}
		b, err = tx.EnqueueItem(item)
		return err
	})
	archived := func() string {
		s, err := db.Session(context.Background(), "e1", "s1")
		if err != nil {
			t.Fatal(err)
		}
		return s.ArchivedAt
	}
	clock.Advance(time.Second)
	mustUpdate(t, db, func(tx *store.Tx) error { return tx.OutboxDelivered(a, 201) })
	if got := archived(); got != "" {
		t.Fatalf("archived with an item still pending: %s", got)
	}
	clock.Advance(time.Second)
	mustUpdate(t, db, func(tx *store.Tx) error { return tx.OutboxDelivered(b, 201) })
	if got, want := archived(), store.FormatTime(t0.Add(2*time.Second)); got != want {
		t.Fatalf("archived_at %q, want %q", got, want)
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		_, err := tx.EnqueueItem(store.OutboxItem{Target: "proctoring_summaries", OnConflict: "exam_id,student_id",
			Body: "[]", RefTable: "exam_sessions", RefID: sess.ID})
		return err
	})
	if got := archived(); got != "" {
		t.Fatalf("still archived with a new item pending: %s", got)
	}
	err := db.Update(context.Background(), func(tx *store.Tx) error {
		_, err := tx.EnqueueItem(store.OutboxItem{Target: "x", Body: "[]", RefTable: "exams; DROP TABLE exams", RefID: "e1"})
		return err
	})
	if err == nil {
		t.Fatal("an item referring to a table that is not archived was enqueued")
	}
}

// A file from before this release: the summaries it has queued are linked
// to their sessions, and a session whose summary was delivered (or whose
// delivered item was already purged) is dated archived.
func TestUpgradeLinksQueuedSummaries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	makeV0(t, path)
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO exam_sessions (exam_id, student_id, id, student_name, status, last_heartbeat, started_at, ended_at)
		 VALUES ('e1', 's2', 's_two', 'Sue', 'submitted', '2026-03-01T08:01:00.000Z', '2026-03-01T08:00:30.000Z', '2026-03-01T08:30:00.000Z'),
		        ('e1', 's3', 's_three', 'Tim', 'submitted', '2026-03-01T08:01:00.000Z', '2026-03-01T08:00:30.000Z', '2026-03-01T08:40:00.000Z'),
		        ('e1', 's4', 's_four', 'Una', 'submitted', '2026-03-01T08:01:00.000Z', '2026-03-01T08:00:30.000Z', '2026-03-01T08:50:00.000Z')`,
		`INSERT INTO outbox (target, on_conflict, body, created_at, next_attempt_at, delivered_at) VALUES
		 ('proctoring_summaries', 'exam_id,student_id', '[{"exam_id":"e1","student_id":"s2"}]', '2026-03-01T08:30:00.000Z', '2026-03-01T08:30:00.000Z', '2026-03-01T08:31:00.000Z'),
		 ('proctoring_summaries', 'exam_id,student_id', '[{"exam_id":"e1","student_id":"s3"}]', '2026-03-01T08:40:00.000Z', '2026-03-01T08:40:00.000Z', NULL)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	db, err := store.Open(store.Options{Path: path, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	got := map[string]string{}
	for _, s := range []string{"s1", "s2", "s3", "s4"} {
		sess, err := db.Session(ctx, "e1", s)
		if err != nil {
			t.Fatal(err)
		}
		got[s] = sess.ArchivedAt
	}
	want := map[string]string{
		"s1": "",                         // active
		"s2": "2026-03-01T08:31:00.000Z", // its summary was delivered then
		"s3": "",                         // its summary waits
		"s4": "2026-03-01T08:50:00.000Z", // delivered and purged long ago: when it ended
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("archived_at after the upgrade (-want +got):\n%s", diff)
	}
	items, err := db.PendingOutbox(ctx, 10)
	if err != nil || len(items) != 1 || items[0].RefTable != "exam_sessions" || items[0].RefID != "s_three" || items[0].Sink != store.SinkSupabase {
		t.Fatalf("the queued summary after the upgrade: %+v %v", items, err)
	}
}

// Reminders: exams not closed starting in (from, to], once per starts_at.
func TestExamsToRemind(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	db := storetest.MustOpen(t, clock)
	at := func(d time.Duration) string { return store.FormatTime(t0.Add(d)) }
	mustUpdate(t, db, func(tx *store.Tx) error {
		for _, e := range []store.Exam{
			{ID: "soon", Status: "scheduled", StartsAt: at(10 * time.Minute)},
			{ID: "open-soon", Status: "open", StartsAt: at(15 * time.Minute)},
			{ID: "closed", Status: "closed", StartsAt: at(5 * time.Minute)},
			{ID: "later", Status: "scheduled", StartsAt: at(16 * time.Minute)},
			{ID: "started", Status: "open", StartsAt: at(-time.Minute)},
			{ID: "unscheduled", Status: "scheduled"},
		} {
			e.Title = e.ID
			if _, err := tx.UpsertExam(e); err != nil {
				return err
			}
		}
		return nil
	})
	remind := func() []string {
		var ids []string
		mustUpdate(t, db, func(tx *store.Tx) error {
			exams, err := tx.ExamsToRemind(t0, t0.Add(15*time.Minute))
			for _, e := range exams {
				ids = append(ids, e.ID)
				if err := tx.MarkReminded(e.ID, e.StartsAt); err != nil {
					return err
				}
			}
			return err
		})
		return ids
	}
	if diff := cmp.Diff([]string{"soon", "open-soon"}, remind()); diff != "" {
		t.Fatalf("first (-want +got):\n%s", diff)
	}
	if got := remind(); got != nil {
		t.Fatalf("reminded twice: %v", got)
	}
	// Rescheduled: a new start is a new reminder; a hook that keeps it changes nothing.
	mustUpdate(t, db, func(tx *store.Tx) error {
		_, err := tx.UpsertExam(store.Exam{ID: "soon", Title: "soon", Status: "scheduled", StartsAt: at(12 * time.Minute)})
		if err != nil {
			return err
		}
		_, err = tx.UpsertExam(store.Exam{ID: "open-soon", Title: "open-soon", Status: "open", StartsAt: at(15 * time.Minute)})
		return err
	})
	if diff := cmp.Diff([]string{"soon"}, remind()); diff != "" {
		t.Fatalf("after rescheduling (-want +got):\n%s", diff)
	}
}
