package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"

	"invigil/store"
	"invigil/store/storetest"
)

// TestCancelledCallerDoesNotBreakTheBatch: one caller whose context is
// cancelled while its write runs must not undo the other writes of its
// group-committed batch: they commit, their keys are published, and every
// caller learns the true outcome.
func TestCancelledCallerDoesNotBreakTheBatch(t *testing.T) {
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	published := publishedKeys(db)
	bg := context.Background()
	const n = 5
	errs := oneBatch(t, db, n, func(ctx context.Context, cancel func(), tx *store.Tx, i int) error {
		if i == 2 {
			// The caller gives up while its write's statement runs.
			time.AfterFunc(5*time.Millisecond, cancel)
			return tx.SlowStatement()
		}
		return nil
	})

	var want []string
	for i, err := range errs {
		id := fmt.Sprintf("c%d", i)
		_, readErr := db.Exam(bg, id)
		stored := readErr == nil
		if stored != (err == nil) {
			t.Errorf("write %d: caller told err=%v but stored=%v (read: %v)", i, err, stored, readErr)
		}
		if i != 2 && err != nil {
			t.Errorf("write %d failed because another caller cancelled: %v", i, err)
		}
		if stored {
			want = append(want, "exam:"+id)
		} else if !errors.Is(readErr, store.ErrNotFound) {
			t.Fatal(readErr)
		}
	}
	if published := published(); !slices.Equal(published, want) {
		t.Fatalf("published keys %v, want the committed writes' %v", published, want)
	}
}

// oneBatch runs n writes in one group-committed batch; write i upserts exam
// c<i>, touches exam:c<i>, then runs then(…, i).
func oneBatch(t *testing.T, db *store.DB, n int, then func(ctx context.Context, cancel func(), tx *store.Tx, i int) error) []error {
	t.Helper()
	bg := context.Background()
	// Hold the writer so that the next writes queue into one batch.
	release := make(chan struct{})
	held := make(chan struct{})
	go db.Update(bg, func(tx *store.Tx) error { close(held); <-release; return nil })
	<-held
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			id := fmt.Sprintf("c%d", i)
			errs[i] = db.Update(ctx, func(tx *store.Tx) error {
				tx.Touch("exam:" + id)
				if _, err := tx.UpsertExam(store.Exam{ID: id, Title: "t", Status: "open"}); err != nil {
					return err
				}
				return then(ctx, cancel, tx, i)
			})
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for db.QueueLen() < n {
		if time.Now().After(deadline) {
			t.Fatal("writes never queued")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	return errs
}

// TestBrokenTransactionAbandonsTheBatch: when a write leaves the batch's
// transaction unusable (its savepoint cannot be undone), the whole batch is
// abandoned cleanly: every caller is told it failed, nothing is stored and
// no key is published; the writer goes on.
func TestBrokenTransactionAbandonsTheBatch(t *testing.T) {
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	published := 0
	db.OnCommit(func(uint64, store.Changes) { published++ })
	errs := oneBatch(t, db, 4, func(_ context.Context, _ func(), tx *store.Tx, i int) error {
		if i == 1 {
			return tx.BreakTransaction()
		}
		return nil
	})
	bg := context.Background()
	for i, err := range errs {
		if err == nil {
			t.Errorf("write %d reported success in an abandoned batch", i)
		}
		if _, err := db.Exam(bg, fmt.Sprintf("c%d", i)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("write %d left a row: %v", i, err)
		}
	}
	if published != 0 {
		t.Fatalf("an abandoned batch published keys")
	}
	if err := db.Update(bg, func(tx *store.Tx) error {
		_, err := tx.UpsertExam(store.Exam{ID: "after", Title: "t", Status: "open"})
		return err
	}); err != nil {
		t.Fatalf("the writer did not recover: %v", err)
	}
}

// TestChangesOfABatch: a batch publishes the union of its committed writes'
// changes: rows touched under a key are gathered, a key touched as a whole
// stays whole, and a failed write's rows are left out.
func TestChangesOfABatch(t *testing.T) {
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	var got []store.Changes
	db.OnCommit(func(_ uint64, ch store.Changes) { got = append(got, ch) })
	var ran []int // the batch's order, which need not be i's
	oneBatch(t, db, 4, func(_ context.Context, _ func(), tx *store.Tx, i int) error {
		ran = append(ran, i) // the writer runs one write at a time
		switch i {
		case 0:
			tx.TouchRows("list", "a")
			tx.TouchRow("vals", "a", "v1")
			tx.TouchRow("vals", "b", "v1")
		case 1:
			tx.TouchRows("list", "b", "a")
			tx.TouchRow("vals", "a", "v2") // a later value wins
			tx.TouchRows("vals", "b")      // and so does a later "read it again"
		case 2:
			tx.TouchRows("list", "c")
			tx.TouchRow("vals", "a", "refused")
			return errors.New("refused")
		case 3:
			tx.Touch("whole")
			tx.TouchRows("whole", "z")
		}
		return nil
	})
	want := store.Changes{
		"exam:c0": nil, "exam:c1": nil, "exam:c3": nil,
		"list":  store.Rows{"a": nil, "b": nil},
		"vals":  store.Rows{"a": "v2", "b": nil}, // write 1 after write 0
		"whole": nil,
	}
	if slices.Index(ran, 1) < slices.Index(ran, 0) { // write 0 ran last: its values win
		want["vals"] = store.Rows{"a": "v1", "b": "v1"}
	}
	if len(got) != 1 {
		t.Fatalf("want one commit, got %d", len(got))
	}
	if diff := cmp.Diff(want, got[0]); diff != "" {
		t.Fatalf("changes (-want +got):\n%s", diff)
	}
}
