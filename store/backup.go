package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"modernc.org/sqlite"
)

// Backup writes a consistent copy of the SQLite database at srcPath to
// dstPath with SQLite's online backup API, safe while another process (the
// server) keeps writing to srcPath.
//
// It opens the source on its own, read-only, so it needs no running store:
// `invigil backup PATH` runs beside the server. The whole copy is made in one
// backup step, inside one read transaction: in WAL mode that snapshot does
// not block the server's writer, and a step-by-step copy would restart each
// time the server commits. The copy is written beside dstPath and renamed
// into place only once complete, so dstPath is either absent or whole; an
// existing dstPath is refused rather than overwritten (a stale -wal beside
// it could be replayed onto the new copy).
func Backup(ctx context.Context, srcPath, dstPath string) (err error) {
	if err := checkBackupPaths(srcPath, dstPath); err != nil {
		return err
	}
	src, err := sql.Open("sqlite", backupSourceDSN(srcPath))
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", srcPath, err)
	}
	defer src.Close()
	conn, err := src.Conn(ctx)
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", srcPath, err)
	}
	defer conn.Close()

	tmp, err := os.CreateTemp(filepath.Dir(dstPath), "."+filepath.Base(dstPath)+".*.tmp")
	if err != nil {
		return fmt.Errorf("backup: create beside %s: %w", dstPath, err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	defer func() {
		if err != nil {
			os.Remove(tmpPath)
			os.Remove(tmpPath + "-journal")
		}
	}()

	if err := conn.Raw(func(dc any) error { return copyPages(ctx, dc, tmpPath) }); err != nil {
		return fmt.Errorf("backup %s: %w", srcPath, err)
	}
	if err := os.Rename(tmpPath, dstPath); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return syncDir(filepath.Dir(dstPath))
}

// backuper is what modernc's driver connection offers for the backup API.
type backuper interface {
	NewBackup(dstURI string) (*sqlite.Backup, error)
}

// copyPages copies every page of dc's main database into dstPath in one step.
func copyPages(ctx context.Context, dc any, dstPath string) error {
	b, ok := dc.(backuper)
	if !ok {
		return errors.New("the sqlite driver offers no backup API")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bk, err := b.NewBackup(dstPath)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	// Step(-1) copies all pages under one read lock: one consistent snapshot.
	_, stepErr := bk.Step(-1)
	// Finish closes the destination, which SQLite has synced to disk.
	finishErr := bk.Finish()
	if stepErr != nil {
		return fmt.Errorf("copy: %w", stepErr)
	}
	if finishErr != nil {
		return fmt.Errorf("finish: %w", finishErr)
	}
	return nil
}

// checkBackupPaths refuses a missing source (opening it would create an
// empty database), an existing destination, and copying a file onto itself.
func checkBackupPaths(srcPath, dstPath string) error {
	if dstPath == "" {
		return errors.New("backup: no destination path")
	}
	fi, err := os.Stat(srcPath)
	if err != nil {
		return fmt.Errorf("backup: source: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("backup: source %s is not a file", srcPath)
	}
	if _, err := os.Lstat(dstPath); err == nil {
		return fmt.Errorf("backup: %s already exists; choose a new path", dstPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("backup: destination: %w", err)
	}
	return nil
}

// backupSourceDSN opens the source read-only (mode=ro: a missing file is an
// error, never a new empty database) with the busy timeout first, like dsn.
func backupSourceDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Set("mode", "ro")
	return "file:" + path + "?" + q.Encode()
}

// syncDir makes the rename durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", dir, err)
	}
	return nil
}
