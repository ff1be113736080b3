// Package store is invigil's SQLite database: one file in WAL mode, one
// writer goroutine that group-commits queued writes, and a pool of readers.
// It is the only package that speaks SQL, and it knows nothing of the app:
// a write names the keys it touched as plain strings, and whoever listens
// to commits (the reactive engine) decides what they mean.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// TimeFormat is how every time is stored and sent: RFC 3339 in UTC with
// milliseconds, fixed width so that text order is time order.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// FormatTime renders t in TimeFormat, in UTC.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// ErrClosed is returned by writes queued after Close.
var ErrClosed = errors.New("store: closed")

// Options configures Open.
type Options struct {
	Path     string
	Schema   string // SQL applied at every open; must be idempotent
	Clock    clockwork.Clock
	Logger   *slog.Logger
	Readers  int // reader pool size; default 2×GOMAXPROCS (at least 4)
	MaxBatch int // writes per group commit; default 256
}

// CommitHook is told, after a batch committed, its sequence number and the
// union of the keys its writes touched. It must not block.
type CommitHook func(seq uint64, keys []string)

// DB is the store. It is safe for concurrent use.
type DB struct {
	write    *sql.DB
	read     *sql.DB
	clock    clockwork.Clock
	log      *slog.Logger
	maxBatch int

	queue     chan *writeReq
	closeMu   sync.RWMutex // held shared while enqueueing, so Close sees every queued write
	closed    bool
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once

	committed atomic.Uint64
	hooksMu   sync.RWMutex
	hooks     []CommitHook
}

type writeReq struct {
	ctx  context.Context
	fn   func(*Tx) error
	err  error
	done chan struct{}
}

// Open opens (creating if needed) the database at opts.Path, applies the
// schema and starts the writer goroutine.
func Open(opts Options) (*DB, error) {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Readers <= 0 {
		opts.Readers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if dir := filepath.Dir(opts.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", dir, err)
		}
	}
	w, err := sql.Open("sqlite", dsn(opts.Path, false))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", opts.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if _, err := w.Exec(opts.Schema); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: apply schema: %w", err)
	}
	r, err := sql.Open("sqlite", dsn(opts.Path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open readers: %w", err)
	}
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	db := &DB{
		write: w, read: r, clock: opts.Clock, log: opts.Logger, maxBatch: opts.MaxBatch,
		queue:   make(chan *writeReq, 4*opts.MaxBatch),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go db.writer()
	return db, nil
}

// dsn puts every setting in the DSN so that each pooled connection gets it
// (modernc applies _pragma per connection; busy_timeout goes first).
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// BEGIN IMMEDIATE: a deferred transaction that upgrades skips the busy timeout.
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// Close stops the writer after the queued writes and closes the database.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.closeMu.Lock()
		db.closed = true
		db.closeMu.Unlock()
		close(db.stop)
	})
	<-db.stopped
	return errors.Join(db.read.Close(), db.write.Close())
}

// Ping reports whether the database answers (for /healthz).
func (db *DB) Ping(ctx context.Context) error {
	var one int
	return db.read.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// Now is the store's clock.
func (db *DB) Now() time.Time { return db.clock.Now() }

// OnCommit adds a hook told of every committed batch.
func (db *DB) OnCommit(h CommitHook) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	db.hooks = append(db.hooks, h)
}

// CommittedSeq is the sequence number of the last committed batch. A read
// that starts after loading it sees every batch up to it.
func (db *DB) CommittedSeq() uint64 { return db.committed.Load() }

// Tx is one write inside a group-committed batch. Its writes are isolated
// from the others' by a savepoint: an error undoes this write alone.
type Tx struct {
	tx   *sql.Tx
	now  time.Time
	keys []string
}

// Touch records keys this write changed; they are published only if the
// batch commits.
func (tx *Tx) Touch(keys ...string) { tx.keys = append(tx.keys, keys...) }

// Now is the time of this write, the same for all of its rows.
func (tx *Tx) Now() time.Time { return tx.now }

// Update queues fn to run in the writer's next batch and waits for the batch
// to commit. fn's error (or a failed commit) is returned and its changes are
// undone; no key it touched is published.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	req := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case db.queue <- req:
		db.closeMu.RUnlock()
	case <-ctx.Done():
		db.closeMu.RUnlock()
		return ctx.Err()
	}
	// Once queued, wait for the outcome even if ctx ends: the write may commit.
	<-req.done
	return req.err
}

func (db *DB) writer() {
	defer close(db.stopped)
	batch := make([]*writeReq, 0, db.maxBatch)
	for {
		var first *writeReq
		select {
		case first = <-db.queue:
		case <-db.stop:
			// Drain what was queued before Close.
			for {
				select {
				case r := <-db.queue:
					db.commit([]*writeReq{r})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < db.maxBatch {
			select {
			case r := <-db.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		db.commit(batch)
	}
}

// commit runs a batch in one transaction, each write under its own savepoint.
func (db *DB) commit(batch []*writeReq) {
	finish := func(err error) {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
			close(r.done)
		}
	}
	ctx := context.Background()
	sqlTx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		finish(fmt.Errorf("store: begin: %w", err))
		return
	}
	now := db.clock.Now()
	var keys []string
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		tx := &Tx{tx: sqlTx, now: now}
		if r.err = runSavepoint(ctx, tx, r.fn); r.err == nil {
			keys = append(keys, tx.keys...)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		// Every write of the batch is lost; tell each caller.
		for _, r := range batch {
			r.err = fmt.Errorf("store: commit: %w", err)
		}
		finish(nil)
		return
	}
	seq := db.committed.Add(1)
	if len(keys) > 0 {
		db.hooksMu.RLock()
		for _, h := range db.hooks {
			h(seq, keys)
		}
		db.hooksMu.RUnlock()
	}
	finish(nil)
}

func runSavepoint(ctx context.Context, tx *Tx, fn func(*Tx) error) (err error) {
	if _, err := tx.tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
		return fmt.Errorf("store: savepoint: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: write panicked: %v", p)
		}
		if err != nil {
			if _, rbErr := tx.tx.ExecContext(ctx, "ROLLBACK TO w"); rbErr != nil {
				err = errors.Join(err, rbErr)
			}
		}
		if _, relErr := tx.tx.ExecContext(ctx, "RELEASE w"); relErr != nil && err == nil {
			err = relErr
		}
	}()
	return fn(tx)
}

// Read runs fn in one read-only transaction, so its queries see one snapshot.
func (db *DB) Read(ctx context.Context, fn func(*Reader) error) error {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("store: begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(&Reader{q: tx})
}

// Reader reads inside a Read or an Update.
type Reader struct{ q queryer }

// Reader returns a reader over this write's transaction (it sees the
// batch's earlier writes and this one's).
func (tx *Tx) Reader() *Reader { return &Reader{q: tx.tx} }

type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// NewID returns a random, URL-safe, 20-character id with a time prefix so
// that ids sort roughly by creation.
func NewID(prefix string, now time.Time) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return fmt.Sprintf("%s%011x%s", prefix, now.UnixMilli(), hex.EncodeToString(b[:]))
}

// Pragma reads a pragma's value (tests check the DSN took effect).
func (r *Reader) Pragma(ctx context.Context, name string) (string, error) {
	var v string
	err := r.q.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v)
	return v, err
}
