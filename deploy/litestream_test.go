package deploy_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/litestream"
	"github.com/benbjohnson/litestream/file"

	"invigil/store"
	"invigil/store/storetest"
)

// Litestream, the version the image ships (Dockerfile LITESTREAM_VERSION,
// checked against go.mod in TestDockerfile), replicates a live invigil
// database (the store's own WAL and pragmas, written while it streams) to a
// file:// replica; a restore elsewhere finds every committed write.
//
// The restore is timed. INVIGIL_RESTORE_EXAMS scales the database (default
// 2,000 exams with padded titles, ~1 MB); docs/runbooks.md quotes a larger run.
func TestLitestreamReplicateAndRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	livePath := filepath.Join(dir, "live", "invigil.db")
	replicaDir := filepath.Join(dir, "replica")
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("INVIGIL_RESTORE_EXAMS")); err == nil && v > 0 {
		n = v
	}

	db, err := store.Open(store.Options{Path: livePath, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	writeExams(t, db, 0, n/2)

	// Litestream as the image runs it, through its library: one DB, one replica.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	lsdb := litestream.NewDB(livePath)
	lsdb.Logger = quiet
	client := file.NewReplicaClient(replicaDir)
	replica := litestream.NewReplicaWithClient(lsdb, client)
	lsdb.Replica = replica
	client.Replica = replica
	lstore := litestream.NewStore([]*litestream.DB{lsdb}, litestream.CompactionLevels{
		{Level: 0},
		{Level: 1, Interval: time.Second},
	})
	if err := lstore.Open(ctx); err != nil {
		t.Fatalf("litestream: open: %v", err)
	}
	storeClosed := false
	defer func() {
		if !storeClosed {
			lstore.Close(ctx)
		}
	}()

	// The server keeps writing while Litestream streams.
	var done atomic.Bool
	writer := make(chan error, 1)
	go func() {
		defer close(writer)
		for i := n / 2; i < n; i++ {
			if err := writeExam(db, i); err != nil {
				writer <- err
				return
			}
		}
		done.Store(true)
	}()
	for i := 0; !done.Load(); i++ {
		if err := lsdb.SyncAndWait(ctx); err != nil {
			t.Fatalf("litestream: sync while writing (round %d): %v", i, err)
		}
	}
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
	if err := lsdb.SyncAndWait(ctx); err != nil {
		t.Fatalf("litestream: final sync: %v", err)
	}
	if err := lstore.Close(ctx); err != nil {
		t.Fatalf("litestream: close: %v", err)
	}
	storeClosed = true
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	liveSize := fileSize(t, livePath) + fileSize(t, livePath+"-wal")

	// Restore elsewhere, as `litestream restore` does on an empty volume.
	restoredPath := filepath.Join(dir, "restored", "invigil.db")
	if err := os.MkdirAll(filepath.Dir(restoredPath), 0o755); err != nil {
		t.Fatal(err)
	}
	restorer := litestream.NewReplicaWithClient(nil, file.NewReplicaClient(replicaDir))
	opt := litestream.NewRestoreOptions()
	opt.OutputPath = restoredPath
	opt.IntegrityCheck = litestream.IntegrityCheckFull
	start := time.Now()
	if err := restorer.Restore(ctx, opt); err != nil {
		t.Fatalf("litestream: restore: %v", err)
	}
	took := time.Since(start)

	restored, err := sql.Open("sqlite", "file:"+restoredPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	var check string
	if err := restored.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check on the restored copy = %q, %v", check, err)
	}
	var count int
	if err := restored.QueryRow("SELECT count(*) FROM exams").Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != n {
		t.Fatalf("restored copy holds %d exams, want all %d committed", count, n)
	}
	var title string
	if err := restored.QueryRow("SELECT title FROM exams WHERE id = ?", examID(n-1)).Scan(&title); err != nil {
		t.Fatalf("the last committed exam is not in the restore: %v", err)
	}
	// For the runbook: `invigil backup` of the same database.
	start = time.Now()
	if err := store.Backup(ctx, livePath, filepath.Join(dir, "backup.db")); err != nil {
		t.Fatal(err)
	}
	backupTook := time.Since(start)
	t.Logf("litestream v0.5 restore: %d exams, live database %.1f MB, replica %.1f MB, restored (with full integrity check) in %s; invigil backup of it: %s",
		n, mb(liveSize), mb(dirSize(t, replicaDir)), took.Round(time.Millisecond), backupTook.Round(time.Millisecond))
}

func examID(i int) string { return fmt.Sprintf("exam-%07d", i) }

// writeExam commits one exam with a padded title, so that the database has
// some bulk per row, like sessions with their violations.
func writeExam(db *store.DB, i int) error {
	return db.Update(context.Background(), func(tx *store.Tx) error {
		_, err := tx.UpsertExam(store.Exam{
			ID: examID(i), Title: fmt.Sprintf("Exam %d %0400d", i, i), Status: "open",
			TutorIDs: []string{"tutor-1", "tutor-2"},
		})
		return err
	})
}

func writeExams(t *testing.T, db *store.DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := writeExam(db, i); err != nil {
			t.Fatal(err)
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
