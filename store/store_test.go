package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/store"
	"invigil/store/storetest"
)

func TestWALAndPragmas(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	err := db.Read(context.Background(), func(r *store.Reader) error {
		for pragma, want := range map[string]string{"journal_mode": "wal", "foreign_keys": "1", "synchronous": "1", "busy_timeout": "10000"} {
			got, err := r.Pragma(context.Background(), pragma)
			if err != nil {
				return err
			}
			if got != want {
				t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A failing write in a group-committed batch undoes itself alone, and only
// the committed writes' keys reach the commit hook.
func TestGroupCommitIsolatesWrites(t *testing.T) {
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	published := publishedKeys(db)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 100)
	for i := range 100 {
		wg.Go(func() {
			errs[i] = db.Update(ctx, func(tx *store.Tx) error {
				id := fmt.Sprintf("e%03d", i)
				tx.Touch("exam:" + id)
				if _, err := tx.UpsertExam(store.Exam{ID: id, Title: "t", Status: "open"}); err != nil {
					return err
				}
				if i%5 == 0 {
					return errors.New("refused")
				}
				return nil
			})
		})
	}
	wg.Wait()
	var wantKeys []string
	for i, err := range errs {
		id := fmt.Sprintf("e%03d", i)
		_, readErr := db.Exam(ctx, id)
		if i%5 == 0 {
			if err == nil || !errors.Is(readErr, store.ErrNotFound) {
				t.Fatalf("write %d should fail and leave nothing: err=%v read=%v", i, err, readErr)
			}
			continue
		}
		if err != nil || readErr != nil {
			t.Fatalf("write %d should commit: err=%v read=%v", i, err, readErr)
		}
		wantKeys = append(wantKeys, "exam:"+id)
	}
	if published := published(); !slices.Equal(published, wantKeys) {
		t.Fatalf("published keys differ from committed writes:\n got %v\nwant %v", published, wantKeys)
	}
}

func TestPanickingWriteIsContained(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	ctx := context.Background()
	err := db.Update(ctx, func(tx *store.Tx) error {
		tx.UpsertExam(store.Exam{ID: "p", Title: "t", Status: "open"})
		panic("boom")
	})
	if err == nil {
		t.Fatal("a panicking write must fail")
	}
	if _, err := db.Exam(ctx, "p"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a panicking write left a row: %v", err)
	}
	if err := db.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.UpsertExam(store.Exam{ID: "q", Title: "t", Status: "open"})
		return err
	}); err != nil {
		t.Fatalf("the writer died with the panic: %v", err)
	}
}

func TestSchemaCheckRefusesBadRows(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	ctx := context.Background()
	err := db.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.UpsertExam(store.Exam{ID: "x", Title: "t", Status: "bogus"})
		return err
	})
	if err == nil {
		t.Fatal("status outside the CHECK list was stored")
	}
}

func TestClosedStoreRefusesWrites(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	db.Close()
	if err := db.Update(context.Background(), func(*store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
}

func TestHookClaimIsOnce(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	ctx := context.Background()
	var got []bool
	for range 2 {
		db.Update(ctx, func(tx *store.Tx) error {
			fresh, err := tx.ClaimHook("msg_1")
			got = append(got, fresh)
			return err
		})
	}
	if !slices.Equal(got, []bool{true, false}) {
		t.Fatalf("claims: want [true false], got %v", got)
	}
}

// TestWALStartsOver: checkpoints run beside the writer (none inside a
// commit), and under a write stream that never pauses the WAL still starts
// over instead of growing with every write: the writer finishes what the
// checkpointer could not catch up with.
func TestWALStartsOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "invigil.db")
	db, err := store.Open(store.Options{Path: path, Schema: storetest.Schema(t),
		CheckpointEvery: 5 * time.Millisecond, CheckpointFrames: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := db.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.UpsertExam(store.Exam{ID: "e1", Title: "Exam", Status: "open"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// 400 sessions (a few dozen pages), then heartbeats over all of them
	// with no pause: each commit appends its pages to the WAL.
	const students = 400
	for i := range students {
		if err := db.Update(ctx, func(tx *store.Tx) error {
			_, err := tx.StartSession("e1", fmt.Sprintf("s%03d", i), fmt.Sprintf("Student %03d with a longer name", i))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	maxWAL := int64(0)
	for round := range 20 {
		for i := range students {
			if err := db.Update(ctx, func(tx *store.Tx) error {
				_, _, err := tx.Beat("e1", fmt.Sprintf("s%03d", i), round, i, "", tx.Now().Add(time.Hour))
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		if st, err := os.Stat(path + "-wal"); err == nil {
			maxWAL = max(maxWAL, st.Size())
		}
	}
	// 8,000 one-page commits: a WAL that never started over would hold
	// ~8,000 pages (32 MB); one that starts over stays far below:
	// threshold of 100 pages (at most a fifth of that here).
	const bound = 2000 * 4096
	if maxWAL > bound {
		t.Fatalf("the WAL grew to %d bytes (bound %d): it never started over", maxWAL, bound)
	}
	t.Logf("largest WAL seen: %d KB", maxWAL>>10)
	got, err := db.Session(ctx, "e1", "s399")
	if err != nil || got.CurrentQuestion != 19 {
		t.Fatalf("the last heartbeat is not read back: %+v, %v", got, err)
	}
}

// QueueDelay is what the oldest write of the last batch waited for the
// writer while others still wait, and 0 once none does: the measure the
// app sheds heartbeats on.
func TestQueueDelay(t *testing.T) {
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	ctx := context.Background()
	// hold queues a write that blocks the writer until released.
	hold := func() (release func(), done <-chan error) {
		running, free, out := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		go func() {
			out <- db.Update(ctx, func(*store.Tx) error {
				close(running)
				<-free
				return nil
			})
		}()
		<-running
		return func() { close(free) }, out
	}
	queue := func() <-chan error {
		out := make(chan error, 1)
		go func() { out <- db.Update(ctx, func(*store.Tx) error { return nil }) }()
		return out
	}
	waitQueued := func(n int) {
		t.Helper()
		// storetest opens with the default MaxBatch of 256: a queue of 1,024.
		for deadline := time.Now().Add(5 * time.Second); db.Backlog()*float64(4*256) < float64(n); {
			if time.Now().After(deadline) {
				t.Fatalf("backlog %.4f, want %d queued", db.Backlog(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	if d := db.QueueDelay(); d != 0 {
		t.Fatalf("an idle writer: QueueDelay %v", d)
	}
	releaseA, doneA := hold()
	// B queues behind A and waits 50 ms; C will queue behind B.
	bRunning, freeB, doneB := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		doneB <- db.Update(ctx, func(*store.Tx) error { close(bRunning); <-freeB; return nil })
	}()
	waitQueued(1)
	time.Sleep(50 * time.Millisecond)
	releaseA()
	<-bRunning // B's batch began: it waited ≥ 50 ms
	doneC := queue()
	waitQueued(1)
	if d := db.QueueDelay(); d < 50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("with C waiting behind B, which waited 50 ms: QueueDelay %v", d)
	}
	close(freeB)
	for _, done := range []<-chan error{doneA, doneB, doneC} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if d := db.QueueDelay(); d != 0 {
		t.Fatalf("nothing waiting: QueueDelay %v", d)
	}
}

// publishedKeys records every key db publishes; the function it returns
// lists them so far, sorted.
func publishedKeys(db *store.DB) func() []string {
	var mu sync.Mutex
	var keys []string
	db.OnCommit(func(_ uint64, ch store.Changes) {
		mu.Lock()
		defer mu.Unlock()
		for k := range ch {
			keys = append(keys, k)
		}
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Sorted(slices.Values(keys))
	}
}
