// Package store is invigil's SQLite database: one file in WAL mode, one
// writer goroutine that group-commits queued writes, and a pool of readers.
// It is the only package that speaks SQL, and it knows nothing of the app:
// a write names the keys (and the rows under a key) it touched as plain
// strings, and whoever listens to commits (the reactive engine) decides what
// they mean.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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

// ParseTime reads a time stored in TimeFormat.
func ParseTime(s string) (time.Time, error) { return time.Parse(TimeFormat, s) }

// ErrClosed is returned by writes queued after Close.
var ErrClosed = errors.New("store: closed")

// ErrNotFound is returned when a row does not exist.
var ErrNotFound = errors.New("store: not found")

// Options configures Open.
type Options struct {
	Path     string
	Schema   string // the schema a new database gets (schema.sql)
	Clock    clockwork.Clock
	Logger   *slog.Logger
	Readers  int // reader pool size; default 2×GOMAXPROCS (at least 4)
	MaxBatch int // writes per group commit; default 256
	// Observe, when set, is told each committed batch's size and how long
	// its commit took (for metrics).
	Observe func(writes int, commit time.Duration)
	// CheckpointEvery is how often the WAL is copied into the database
	// file, off the writer; default 250ms.
	CheckpointEvery time.Duration
	// CheckpointFrames is the WAL length (in pages) past which the writer
	// finishes a checkpoint so that the WAL starts over; default 2000.
	CheckpointFrames int
}

// Rows are the rows touched under one key: each id with the row's value as
// the write left it, or nil when readers must read the row again.
type Rows map[string]any

// Changes is what a committed batch touched: for each key, the ids of the
// rows it changed under that key, or nil when the key changed as a whole.
type Changes map[string]Rows

// CommitHook is told, after a batch committed, its sequence number and what
// its writes touched. It is called from the writer, in commit order, and
// must not block.
type CommitHook func(seq uint64, ch Changes)

// DB is the store. It is safe for concurrent use.
type DB struct {
	path     string
	write    *sql.DB // one connection: the writer's, with its prepared statements
	read     *sql.DB
	clock    clockwork.Clock
	log      *slog.Logger
	maxBatch int
	observe  func(int, time.Duration)
	stmts    *statements // prepared on the writer's connection
	rstmts   *statements // prepared on the reader pool

	ckpt      *sql.DB // the background checkpointer's connection
	ckptEvery time.Duration
	ckptPages int
	restart   chan struct{} // asks the writer to finish a checkpoint
	queue     chan *writeReq
	waited    atomic.Int64 // ns the last batch's oldest write waited for the writer
	closeMu   sync.RWMutex // held shared while enqueueing, so Close sees every queued write
	closed    bool
	stop      chan struct{}
	stopped   chan struct{}
	ckptDone  chan struct{}
	closeOnce sync.Once

	committed atomic.Uint64
	health    health
	hooksMu   sync.RWMutex
	hooks     []CommitHook
}

type writeReq struct {
	queued time.Time // monotonic: how long it waits is a measure, not a record
	ctx    context.Context
	fn     func(*Tx) error
	err    error
	done   chan struct{}
}

// Open opens (creating if needed) the database at opts.Path, brings its
// schema up to date and starts the writer goroutine.
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
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 250 * time.Millisecond
	}
	if opts.CheckpointFrames <= 0 {
		opts.CheckpointFrames = 2000
	}
	if dir := filepath.Dir(opts.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", dir, err)
		}
	}
	ctx := context.Background()
	w, err := sql.Open("sqlite", dsn(opts.Path, false))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", opts.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	fail := func(err error) (*DB, error) {
		w.Close()
		return nil, err
	}
	if err := migrate(ctx, w, opts.Schema); err != nil {
		return fail(err)
	}
	// Prepared on the *sql.DB, not on a *sql.Conn: a transaction reuses a
	// statement only when it was prepared that way (Tx.StmtContext
	// re-prepares, and then closes, one that belongs to a Conn).
	stmts, err := prepare(ctx, w)
	if err != nil {
		return fail(err)
	}
	r, err := sql.Open("sqlite", dsn(opts.Path, true))
	if err != nil {
		stmts.close()
		return fail(fmt.Errorf("store: open readers: %w", err))
	}
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	rstmts, err := prepare(ctx, r)
	if err != nil {
		stmts.close()
		r.Close()
		return fail(err)
	}
	ckpt, err := sql.Open("sqlite", dsn(opts.Path, false))
	if err != nil {
		stmts.close()
		rstmts.close()
		r.Close()
		return fail(fmt.Errorf("store: open checkpointer: %w", err))
	}
	ckpt.SetMaxOpenConns(1)
	db := &DB{
		path: opts.Path, write: w, read: r, clock: opts.Clock, log: opts.Logger, maxBatch: opts.MaxBatch,
		observe: opts.Observe, stmts: stmts, rstmts: rstmts,
		ckpt: ckpt, ckptEvery: opts.CheckpointEvery, ckptPages: opts.CheckpointFrames,
		restart:  make(chan struct{}, 1),
		queue:    make(chan *writeReq, 4*opts.MaxBatch),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
		ckptDone: make(chan struct{}),
	}
	go db.writer()
	go db.checkpointer()
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
	// Pages read through a memory map, not a pread each (the WAL still
	// reads through the file).
	q.Add("_pragma", "mmap_size(268435456)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// BEGIN IMMEDIATE: a deferred transaction that upgrades skips the busy timeout.
		q.Set("_txlock", "immediate")
		// No checkpoint inside a commit: its fsyncs stalled every write
		// queued behind it (see checkpointer).
		q.Add("_pragma", "wal_autocheckpoint(0)")
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
	<-db.ckptDone
	return errors.Join(db.rstmts.close(), db.read.Close(), db.ckpt.Close(), db.stmts.close(), db.write.Close())
}

// Backlog is how full the writer's queue is, from 0 to 1: past a half,
// writes arrive faster than they commit.
func (db *DB) Backlog() float64 { return float64(len(db.queue)) / float64(cap(db.queue)) }

// QueueDelay is how long writes wait for the writer: what the oldest write
// of the last batch waited, or 0 when no write is waiting. It rises as soon
// as writes come faster than they commit, long before the queue is full;
// a moment's stall (a collection, a checkpoint) raises it too, so a caller
// that sheds work on it should also look at the Backlog.
func (db *DB) QueueDelay() time.Duration {
	if len(db.queue) == 0 {
		return 0
	}
	return time.Duration(db.waited.Load())
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Now is the store's clock.
func (db *DB) Now() time.Time { return db.clock.Now() }

// OnCommit adds a hook told of every committed batch that touched a key.
func (db *DB) OnCommit(h CommitHook) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	db.hooks = append(db.hooks, h)
}

// CommittedSeq is the sequence number of the last committed batch.
func (db *DB) CommittedSeq() uint64 { return db.committed.Load() }

// Tx is one write inside a group-committed batch. Its writes are isolated
// from the others' by a savepoint: an error undoes this write alone.
type Tx struct {
	tx      *sql.Tx
	db      *DB
	ctx     context.Context // never cancelled by a caller: see commit
	now     time.Time
	changes Changes
}

// Touch records keys this write changed as a whole; they are published only
// if the batch commits.
func (tx *Tx) Touch(keys ...string) {
	for _, k := range keys {
		tx.changes[k] = nil
	}
}

// TouchRows records rows this write changed under key (a list's key, e.g.
// the ids of the sessions of "exam:e1:sessions"); readers of the list may
// re-read just those rows. A key touched as a whole stays whole.
func (tx *Tx) TouchRows(key string, ids ...string) {
	rows, seen := tx.changes[key]
	if seen && rows == nil {
		return
	}
	if rows == nil {
		rows = make(Rows, len(ids))
		tx.changes[key] = rows
	}
	for _, id := range ids {
		rows[id] = nil
	}
}

// TouchRow records one row this write changed under key with its value as
// the write left it (read back inside the write, e.g. with RETURNING), so
// that readers of the list need not read it again. A later touch of the same
// row, in this write or a later one, replaces the value.
func (tx *Tx) TouchRow(key, id string, value any) {
	rows, seen := tx.changes[key]
	if seen && rows == nil {
		return
	}
	if rows == nil {
		rows = make(Rows, 1)
		tx.changes[key] = rows
	}
	rows[id] = value
}

// Now is the time of this write, the same for all of its rows.
func (tx *Tx) Now() time.Time { return tx.now }

// Update queues fn to run in the writer's next batch and waits for the batch
// to commit. fn's error (or a failed commit) is returned and its changes are
// undone; no key it touched is published. fn runs only if ctx is still live
// when its turn comes; once it runs, its statements are not interruptible
// by ctx, since an interrupt would roll back the whole batch.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	req := &writeReq{queued: time.Now(), ctx: ctx, fn: fn, done: make(chan struct{})}
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
		case <-db.restart:
			db.finishCheckpoint()
			continue
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
		db.waited.Store(int64(time.Since(first.queued)))
		db.commit(batch)
	}
}

// checkpointer copies the WAL into the database file on its own
// connection, so that the copy and its fsyncs never hold up a commit. A
// checkpoint that runs beside the writer can never catch up with it, and
// the WAL starts over only once it has; so when the WAL grows long the
// writer is asked to finish the job between two batches, which costs it
// only the few pages written since (TestWALStartsOver).
func (db *DB) checkpointer() {
	defer close(db.ckptDone)
	tick := time.NewTicker(db.ckptEvery)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-db.stop:
			return
		case <-tick.C:
		}
		var busy, pages, copied int
		err := db.ckpt.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &pages, &copied)
		if err != nil {
			if !failing {
				db.log.Warn("store: checkpoint failed", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		if pages >= db.ckptPages {
			select {
			case db.restart <- struct{}{}:
			default:
			}
		}
	}
}

// finishCheckpoint copies what the checkpointer has not, from the writer's
// connection between batches; the next write then starts the WAL over.
func (db *DB) finishCheckpoint() {
	var busy, pages, copied int
	if err := db.write.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &pages, &copied); err != nil {
		db.log.Warn("store: checkpoint failed", "err", err)
	}
}

// commit runs a batch in one transaction, each write under its own
// savepoint. Statements run on a context no caller can cancel: modernc
// answers a cancelled context by interrupting SQLite, which rolls back the
// whole transaction, every other caller's write with it. If that (or a
// failed savepoint rollback) happens anyway, the batch is abandoned whole
// and every caller is told so.
func (db *DB) commit(batch []*writeReq) {
	ctx := context.Background()
	finish := func() {
		for _, r := range batch {
			close(r.done)
		}
	}
	fail := func(err error) {
		db.health.noteWrite(err)
		for _, r := range batch {
			r.err = err
		}
		finish()
	}
	started := time.Now()
	sqlTx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("store: begin: %w", err))
		return
	}
	now := db.clock.Now()
	changes := Changes{}
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err // the caller gave up before its turn: nothing ran
			continue
		}
		tx := &Tx{tx: sqlTx, db: db, ctx: ctx, now: now, changes: Changes{}}
		var broken error
		r.err, broken = runSavepoint(tx, r.fn)
		if broken != nil {
			sqlTx.Rollback()
			db.log.Error("store: write batch abandoned", "writes", len(batch), "err", broken)
			fail(fmt.Errorf("store: batch abandoned: %w", broken))
			return
		}
		if r.err == nil {
			changes.merge(tx.changes)
		} else if diskError(r.err) {
			db.health.noteWrite(r.err)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		fail(fmt.Errorf("store: commit: %w", err))
		return
	}
	seq := db.committed.Add(1)
	db.health.noteWrite(nil)
	if db.observe != nil {
		db.observe(len(batch), time.Since(started))
	}
	if len(changes) > 0 {
		db.hooksMu.RLock()
		for _, h := range db.hooks {
			h(seq, changes)
		}
		db.hooksMu.RUnlock()
	}
	finish()
}

// merge adds one write's changes to the batch's.
func (ch Changes) merge(w Changes) {
	for k, rows := range w {
		have, seen := ch[k]
		switch {
		case seen && have == nil:
		case rows == nil:
			ch[k] = nil
		case !seen:
			ch[k] = rows
		default:
			// Later writes win: their value is the row as committed.
			maps.Copy(have, rows)
		}
	}
}

// runSavepoint runs fn under a savepoint. err is fn's outcome; broken is
// set when the savepoint itself could not be undone or released, which
// means the transaction is no longer what the batch's writes expect.
func runSavepoint(tx *Tx, fn func(*Tx) error) (err, broken error) {
	if _, err := tx.stmt(tx.db.stmts.savepoint).ExecContext(tx.ctx); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: write panicked: %v", p)
		}
		if err != nil {
			if _, rbErr := tx.stmt(tx.db.stmts.rollbackTo).ExecContext(tx.ctx); rbErr != nil {
				broken = fmt.Errorf("rollback to savepoint: %w (after %w)", rbErr, err)
				return
			}
		}
		if _, relErr := tx.stmt(tx.db.stmts.release).ExecContext(tx.ctx); relErr != nil {
			broken = fmt.Errorf("release savepoint: %w", relErr)
		}
	}()
	return fn(tx), nil
}

func (tx *Tx) exec(query string, args ...any) (sql.Result, error) {
	return tx.tx.ExecContext(tx.ctx, query, args...)
}

// stmt returns a prepared statement of the writer's bound to this write.
func (tx *Tx) stmt(s *sql.Stmt) *sql.Stmt { return tx.tx.StmtContext(tx.ctx, s) }

// Read runs fn in one read-only transaction, so its queries see one snapshot.
func (db *DB) Read(ctx context.Context, fn func(*Reader) error) error {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("store: begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(&Reader{q: tx, stmts: db.rstmts, tx: tx})
}

// Reads are one statement each outside a transaction (a statement is its
// own snapshot): cheaper than Read for hot single-statement reads.
func (db *DB) reader() *Reader { return &Reader{q: db.read, stmts: db.rstmts} }

// Reader reads inside a Read or an Update.
type Reader struct {
	q     queryer
	stmts *statements
	tx    *sql.Tx         // nil outside a transaction
	fixed context.Context // inside a write: its uncancellable context
}

// Reader returns a reader over this write's transaction (it sees the
// batch's earlier writes and this one's). Its reads ignore the context a
// caller passes: inside the writer nothing may be cancelled.
func (tx *Tx) Reader() *Reader {
	return &Reader{q: tx.tx, stmts: tx.db.stmts, tx: tx.tx, fixed: tx.ctx}
}

func (r *Reader) ctx(ctx context.Context) context.Context {
	if r.fixed != nil {
		return r.fixed
	}
	return ctx
}

// stmt returns prepared statement s for this reader's connection.
func (r *Reader) stmt(ctx context.Context, s *sql.Stmt) *sql.Stmt {
	if r.tx != nil {
		return r.tx.StmtContext(r.ctx(ctx), s)
	}
	return s
}

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
	err := r.q.QueryRowContext(r.ctx(ctx), "PRAGMA "+name).Scan(&v)
	return v, err
}
