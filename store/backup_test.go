package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"invigil/store"
	"invigil/store/storetest"
)

// The copy made while a writer keeps committing is whole and consistent: it
// holds every exam written before the backup began and, since the writer
// commits exams one by one in order, no gap after them (one snapshot).
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srcPath := filepath.Join(dir, "invigil.db")
	db, err := store.Open(store.Options{Path: srcPath, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	const before = 200
	for i := range before {
		mustUpsertExam(t, db, i)
	}

	// Keep writing, in order, until the backup is done.
	var written atomic.Int64
	written.Store(before)
	stop := make(chan struct{})
	racing := make(chan struct{}) // closed once the writer is well under way
	writerDone := make(chan error, 1)
	go func() {
		for i := before; ; i++ {
			if i == before+50 {
				close(racing)
			}
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			if err := upsertExam(db, i); err != nil {
				writerDone <- err
				return
			}
			written.Store(int64(i + 1))
		}
	}()
	// Let the writer get going, so the backup really races it.
	<-racing

	dstPath := filepath.Join(dir, "backups", "copy.db")
	if err := os.MkdirAll(filepath.Dir(dstPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := store.Backup(ctx, srcPath, dstPath); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}

	cp := mustOpenCopy(t, dstPath)
	if got := pragma(t, cp, "integrity_check"); got != "ok" {
		t.Fatalf("integrity_check on the copy = %q", got)
	}
	var n, maxSeq int
	if err := cp.QueryRow(`SELECT count(*), coalesce(max(CAST(substr(id, 6) AS INTEGER)), -1) FROM exams`).Scan(&n, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if n < before+50 {
		t.Fatalf("copy holds %d exams, want at least %d (those committed before the backup)", n, before+50)
	}
	if maxSeq != n-1 {
		t.Fatalf("copy holds %d exams but the newest is exam-%d: a gap, so not one snapshot", n, maxSeq)
	}
	if got := pragma(t, cp, "journal_mode"); got != "wal" {
		t.Errorf("the copy's journal_mode = %q, want wal like the source", got)
	}
	t.Logf("copied %d exams while the writer reached %d", n, written.Load())

	// The copy opens as a store (schema re-applied) and reads like the original.
	restored, err := store.Open(store.Options{Path: dstPath, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	e, err := restored.Exam(ctx, "exam-0000042")
	if err != nil || e.Title != "Exam 42" {
		t.Fatalf("exam 42 in the restored store: %+v, %v", e, err)
	}
}

// The server need not run: a database closed cleanly (no -wal, no -shm) is
// backed up too.
func TestBackupOfAClosedDatabase(t *testing.T) {
	dir := t.TempDir()
	srcPath := filepath.Join(dir, "invigil.db")
	db, err := store.Open(store.Options{Path: srcPath, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatal(err)
	}
	mustUpsertExam(t, db, 7)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	dstPath := filepath.Join(dir, "copy.db")
	if err := store.Backup(context.Background(), srcPath, dstPath); err != nil {
		t.Fatal(err)
	}
	var title string
	if err := mustOpenCopy(t, dstPath).QueryRow(`SELECT title FROM exams WHERE id = 'exam-0000007'`).Scan(&title); err != nil {
		t.Fatal(err)
	}
}

func TestBackupRefuses(t *testing.T) {
	dir := t.TempDir()
	srcPath := filepath.Join(dir, "invigil.db")
	db, err := store.Open(store.Options{Path: srcPath, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	existing := filepath.Join(dir, "existing.db")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, src, dst, want string
	}{
		{"missing source", filepath.Join(dir, "nope.db"), filepath.Join(dir, "a.db"), "no such file"},
		{"existing destination", srcPath, existing, "already exists"},
		{"onto itself", srcPath, srcPath, "already exists"},
		{"no destination", srcPath, "", "no destination"},
		{"missing destination folder", srcPath, filepath.Join(dir, "no", "such", "dir.db"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := store.Backup(context.Background(), tc.src, tc.dst)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Backup(%s, %s) = %v, want an error saying %q", tc.src, tc.dst, err, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatalf("an existing destination was overwritten")
	}
	if _, err := os.Stat(filepath.Join(dir, "nope.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing source was created: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp"))
	if len(left) > 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

func examID(i int) string { return fmt.Sprintf("exam-%07d", i) }

func upsertExam(db *store.DB, i int) error {
	return db.Update(context.Background(), func(tx *store.Tx) error {
		_, err := tx.UpsertExam(store.Exam{ID: examID(i), Title: fmt.Sprintf("Exam %d", i), Status: "open"})
		return err
	})
}

func mustUpsertExam(t *testing.T, db *store.DB, i int) {
	t.Helper()
	if err := upsertExam(db, i); err != nil {
		t.Fatal(err)
	}
}

// mustOpenCopy opens a backup with plain database/sql, as an operator's
// sqlite3 shell would, and closes it when the test ends.
func mustOpenCopy(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func pragma(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRow("PRAGMA " + name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}
