package archive_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/archive"
	"invigil/store"
	"invigil/store/storetest"
)

const serviceKey = "service-role-key-for-tests"

// supabase stands in for Supabase REST: it checks every request as
// PostgREST behind Supabase's gateway would, and answers from a script.
type supabase struct {
	t       *testing.T
	mu      sync.Mutex
	answers []int // status per request; 201 once they run out
	got     []json.RawMessage
}

func (s *supabase) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	checks := map[string]bool{
		"POST":                                 r.Method == http.MethodPost,
		"path /rest/v1/proctoring_summaries":   r.URL.Path == "/rest/v1/proctoring_summaries",
		"on_conflict=exam_id,student_id":       r.URL.Query().Get("on_conflict") == "exam_id,student_id",
		"apikey header":                        r.Header.Get("apikey") == serviceKey,
		"Authorization: Bearer <service role>": r.Header.Get("Authorization") == "Bearer "+serviceKey,
		"Content-Type: application/json":       r.Header.Get("Content-Type") == "application/json",
		"Prefer: resolution=merge-duplicates":  r.Header.Get("Prefer") == "resolution=merge-duplicates,return=minimal",
	}
	for what, ok := range checks {
		if !ok {
			s.t.Errorf("request does not have %s: %s %s %v", what, r.Method, r.URL, r.Header)
			http.Error(w, `{"message":"bad request"}`, http.StatusBadRequest)
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	var rows []map[string]any
	if err := json.Unmarshal(body, &rows); err != nil || len(rows) == 0 {
		s.t.Errorf("body is not a JSON array of rows: %s", body)
	}
	status := http.StatusCreated
	if len(s.answers) > 0 {
		status, s.answers = s.answers[0], s.answers[1:]
	}
	if status/100 == 2 {
		s.got = append(s.got, body)
	}
	w.WriteHeader(status)
}

func (s *supabase) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func enqueue(t *testing.T, db *store.DB, body string) {
	t.Helper()
	err := db.Update(context.Background(), func(tx *store.Tx) error {
		return tx.Enqueue("proctoring_summaries", "exam_id,student_id", body)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRetriesWithBackoffUntilAccepted(t *testing.T) {
	clock := clockwork.NewFakeClock()
	db := storetest.MustOpen(t, clock)
	sb := &supabase{t: t, answers: []int{503, 500}}
	srv := httptest.NewServer(sb)
	defer srv.Close()
	d, err := archive.New(db, archive.Config{SupabaseURL: srv.URL, ServiceRoleKey: serviceKey, Clock: clock, Backoff: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, `[{"exam_id":"e1","student_id":"s1"}]`)
	ctx := context.Background()
	steps := []struct {
		advance       time.Duration
		wantDelivered int
		wantReceived  int
	}{
		{0, 0, 0},               // 503
		{0, 0, 0},               // not due again yet: nothing sent
		{2 * time.Second, 0, 0}, // 500; the next wait doubles
		{2 * time.Second, 0, 0}, // not due: 4 s after the second failure
		{2 * time.Second, 1, 1}, // accepted
		{time.Hour, 0, 1},       // delivered items are never sent again
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		n, err := d.DeliverDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != st.wantDelivered || sb.received() != st.wantReceived {
			t.Fatalf("step %d: delivered %d (want %d), Supabase has %d (want %d)", i, n, st.wantDelivered, sb.received(), st.wantReceived)
		}
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
	enqueue(t, db, `[{"exam_id":"e1","student_id":"s1"}]`)
	db.Close() // the process dies before any delivery

	db = open()
	defer db.Close()
	sb := &supabase{t: t}
	srv := httptest.NewServer(sb)
	defer srv.Close()
	d, _ := archive.New(db, archive.Config{SupabaseURL: srv.URL, ServiceRoleKey: serviceKey})
	if n, err := d.DeliverDue(context.Background()); err != nil || n != 1 || sb.received() != 1 {
		t.Fatalf("after restart: delivered %d, err %v, Supabase has %d", n, err, sb.received())
	}
}

func TestNeedsURLAndKey(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	if _, err := archive.New(db, archive.Config{SupabaseURL: "https://x.supabase.co"}); err == nil {
		t.Fatal("a deliverer without the service role key was built")
	}
}
