package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
)

// SQLite's primary result codes for a disk in trouble.
const (
	sqliteIOErr = 10
	sqliteFull  = 13
)

// diskError reports whether err is SQLite saying the disk is full or
// failing (extended codes carry the primary one in their low byte).
func diskError(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqliteIOErr, sqliteFull:
		return true
	}
	return false
}

// health remembers the writer's last disk error and last commit.
type health struct {
	lastDiskError atomic.Int64 // unix nanoseconds; 0 never
	lastCommit    atomic.Int64
}

// noteWrite records a batch's outcome.
func (h *health) noteWrite(err error) {
	now := time.Now().UnixNano()
	switch {
	case err == nil:
		h.lastCommit.Store(now)
	case diskError(err):
		h.lastDiskError.Store(now)
	}
}

// Below min(minFreeBytes, minFreeShare of the disk) of free space on the
// database's file system the service says it is unhealthy, before writes
// start failing.
const (
	minFreeBytes = 8 << 20
	minFreeShare = 0.02
)

// Health reports whether the database can serve: reads answer, the last
// disk error (full, I/O) is older than the last successful commit, the
// file system has room, and a probe write commits. A full disk makes it
// fail; it passes again by itself once writes succeed.
func (db *DB) Health(ctx context.Context) error {
	var one int
	if err := db.read.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if free, total, ok := space(filepath.Dir(db.path)); ok && float64(free) < min(minFreeBytes, minFreeShare*float64(total)) {
		return fmt.Errorf("only %d bytes free on the database's disk", free)
	}
	err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.exec(`UPDATE meta SET value = ? WHERE key = 'health'`, FormatTime(tx.now))
		return err
	})
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if bad, ok := db.health.lastDiskError.Load(), db.health.lastCommit.Load(); bad != 0 && bad >= ok {
		return errors.New("the last write failed on a full or failing disk")
	}
	return nil
}
