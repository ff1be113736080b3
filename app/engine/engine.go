// Package engine is invigil's reactive core. Features register functions
// (writes) and queries (reads) by name. A subscription is a query with its
// arguments; it depends on the keys its plan names (for example
// "exam:e1:sessions"). Every committed write batch names the keys it
// touched, and, for lists, the rows under them; the engine re-executes only
// the subscriptions under those keys, at the grain of rows where it can, and
// pushes to each subscriber only what changed.
//
// Two kinds of query:
//   - a value query (Plan.Run) computes its whole value; the engine pushes
//     it when its encoding changed;
//   - a list query (Plan.List) is a list of rows with "_id" in a documented
//     order. The engine keeps the rows it last pushed; a write that names
//     the rows it changed costs a fetch of those rows, a patch of the kept
//     list and a delta (changed rows, removed ids, the order if it moved)
//     computed once and shared by every subscriber. What cannot be judged
//     row by row (a whole-key touch, a top-N whose boundary moved, too many
//     rows at once) re-runs the list whole, and still pushes only the delta.
//
// Ordering (why nothing is missed): a subscription is registered under its
// keys before its first run; a write hands what it touched to the engine
// only after it committed, from the store's writer, in commit order. The
// engine records the rows each instance must re-read, and a run takes that
// set and the number of the last commit it was told of under one lock,
// before it reads: every change it was told of is in its snapshot, and every
// change it was not told of yet will mark it again.
//
// Locks: Engine.mu guards the indexes and the scheduling state; each
// instance's mu guards its subscribers and the value they were sent. The two
// are never held together. Sinks are called with the instance's lock held,
// so a sink must never block nor take a lock that someone calling
// Subscription.Close may hold.
package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/identity"
	"invigil/store"
)

// Caller is who makes a call or subscription, and over which connection
// (0 for plain HTTP), so features can tie state to a socket's life.
type Caller struct {
	User identity.User
	Conn uint64
}

// Func is a function (a write, or any call): it decodes its own arguments.
type Func func(ctx context.Context, c Caller, args json.RawMessage) (any, error)

// Plan is a prepared query: arguments decoded and the caller authorized.
// Exactly one of Run and List is set.
type Plan struct {
	// Keys are what the result depends on as a whole: a write touching one
	// re-runs it whole.
	Keys []string
	// Args are the arguments as Prepare decoded them; the subscription
	// keeps their encoding (unknown fields dropped, so a client cannot make
	// the server hold what the query ignores) to judge the caller again.
	// Nil keeps the raw arguments.
	Args any
	// Share names the result among callers: subscribers of the same query
	// with the same Share get one execution. Empty: never shared. It must
	// include everything the result depends on (never just the caller's
	// right to see it, which Prepare has checked).
	Share string
	// Run computes a value query's current value.
	Run func(ctx context.Context) (any, error)
	// List describes a list query.
	List *List
	// Recheck re-authorizes this caller when a key in RecheckKeys is
	// touched (say, the exam's tutor list changed); an error ends the
	// subscription. Unlike Run it is per subscriber, never shared.
	Recheck     func(ctx context.Context) error
	RecheckKeys []string
}

// Query prepares a plan; it returns an *apperr.Error for bad arguments or a
// caller who may not see the result.
type Query struct {
	Prepare func(ctx context.Context, c Caller, args json.RawMessage) (Plan, error)
	// Public queries may be subscribed without a token.
	Public bool
}

// Options tunes the engine.
type Options struct {
	Logger *slog.Logger
	Clock  clockwork.Clock
	// Window, when positive, gathers a burst of invalidations this long
	// before the dirty instances run. Zero runs them at once: bursts still
	// coalesce, because an instance runs one at a time and a change during
	// a run queues exactly one more.
	Window time.Duration
	// Workers bounds concurrent runs.
	Workers int
	// PaceFactor paces an expensive query: after a run that cost d, the
	// instance re-runs no sooner than PaceFactor×d later (at most MaxPace),
	// so one huge value under a storm of writes takes at most about
	// 1/(1+PaceFactor) of a core, while cheap queries keep running at once.
	PaceFactor float64
	MaxPace    time.Duration
	// MinInterval spaces an instance's runs at least this far apart: under
	// a storm of writes its subscribers get a few batched changes a second
	// per window instead of a frame per commit (each frame is a syscall per
	// subscriber). An instance idle for longer runs at once, so this adds
	// latency only under load. Zero: none.
	MinInterval time.Duration
	// MaxPatch is how many touched rows a list patches; more re-run it whole.
	MaxPatch int
}

// Stats are counters for /metrics and benchmarks.
type Stats struct {
	FullRuns, PatchRuns, RowsPatched, Pushes uint64
	// RowsCarried of the rows patched came with their write (Tx.TouchRow)
	// and were not read again.
	RowsCarried              uint64
	Subscriptions, Instances int
}

// Engine runs functions and keeps subscriptions current.
type Engine struct {
	db          *store.DB
	log         *slog.Logger
	clock       clockwork.Clock
	window      time.Duration
	workers     int
	paceFactor  float64
	maxPace     time.Duration
	minInterval time.Duration
	maxPatch    int

	funcs     map[string]Func
	queries   map[string]Query
	closeHook []func(conn uint64)

	mu        sync.Mutex
	instances map[string]*instance              // shared instances by query name + share
	byKey     map[string]map[*instance]struct{} // dependency index
	rechecks  map[string]map[*Subscription]struct{}
	dirty     map[*instance]struct{}
	running   int    // instances running
	queued    int    // instances taken by the scheduler, not yet run
	processed uint64 // the last commit whose changes were taken in
	idle      *sync.Cond

	wake      chan struct{}
	closeOnce sync.Once
	done      chan struct{}
	stopped   chan struct{}

	fullRuns, patchRuns, rowsPatched, rowsCarried, pushes atomic.Uint64
	subscriptions                                         atomic.Int64

	runHook func(name, share string) // tests count executions
}

// New builds an engine over db and starts its scheduler; Close stops it.
func New(db *store.DB, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.PaceFactor <= 0 {
		opts.PaceFactor = 4
	}
	if opts.MaxPace <= 0 {
		opts.MaxPace = 250 * time.Millisecond
	}
	if opts.MaxPatch <= 0 {
		opts.MaxPatch = 512
	}
	e := &Engine{
		db: db, log: opts.Logger, clock: opts.Clock, window: opts.Window, workers: opts.Workers,
		paceFactor: opts.PaceFactor, maxPace: opts.MaxPace, minInterval: opts.MinInterval, maxPatch: opts.MaxPatch,
		funcs:     map[string]Func{},
		queries:   map[string]Query{},
		instances: map[string]*instance{},
		byKey:     map[string]map[*instance]struct{}{},
		rechecks:  map[string]map[*Subscription]struct{}{},
		dirty:     map[*instance]struct{}{},
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	e.idle = sync.NewCond(&e.mu)
	db.OnCommit(e.invalidate)
	go e.scheduler()
	return e
}

// Close stops the scheduler.
func (e *Engine) Close() {
	e.closeOnce.Do(func() { close(e.done) })
	<-e.stopped
}

// Func registers a function. Registration happens before serving.
func (e *Engine) Func(name string, f Func) { e.funcs[name] = f }

// Query registers a query. Registration happens before serving.
func (e *Engine) Query(name string, q Query) { e.queries[name] = q }

// OnConnClosed registers a listener told when a connection ends.
func (e *Engine) OnConnClosed(f func(conn uint64)) { e.closeHook = append(e.closeHook, f) }

// ConnClosed tells the features that a connection ended. A listener's
// panic is contained: the others still hear of it.
func (e *Engine) ConnClosed(conn uint64) {
	for _, f := range e.closeHook {
		func() {
			defer e.recoverAs("conn closed", nil)
			f(conn)
		}()
	}
}

// IsPublic reports whether name is a query anyone may subscribe to.
func (e *Engine) IsPublic(name string) bool { return e.queries[name].Public }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	n := len(e.instances)
	e.mu.Unlock()
	return Stats{
		FullRuns: e.fullRuns.Load(), PatchRuns: e.patchRuns.Load(), RowsPatched: e.rowsPatched.Load(),
		RowsCarried: e.rowsCarried.Load(),
		Pushes:      e.pushes.Load(), Subscriptions: int(e.subscriptions.Load()), Instances: n,
	}
}

// SetRunHook installs f, called before every query execution (tests).
func (e *Engine) SetRunHook(f func(name, share string)) { e.runHook = f }

// Call runs a registered function. A panic in it is this call's internal
// error, logged with its stack.
func (e *Engine) Call(ctx context.Context, c Caller, name string, args json.RawMessage) (v any, err error) {
	f, ok := e.funcs[name]
	if !ok {
		return nil, apperr.New(apperr.NotFound, "no function %q", name)
	}
	defer e.recoverAs("function "+name, &err)
	return f(ctx, c, args)
}

// Get runs a query once, for plain HTTP reads.
func (e *Engine) Get(ctx context.Context, c Caller, name string, args json.RawMessage) (raw json.RawMessage, err error) {
	defer e.recoverAs("query "+name, &err)
	plan, err := e.prepare(ctx, c, name, args)
	if err != nil {
		return nil, err
	}
	if plan.List == nil {
		v, err := plan.Run(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	}
	rows, err := plan.List.All(ctx)
	if err != nil {
		return nil, err
	}
	ls, err := plan.List.build(rows)
	if err != nil {
		return nil, err
	}
	return ls.whole(), nil
}

func (e *Engine) prepare(ctx context.Context, c Caller, name string, args json.RawMessage) (Plan, error) {
	q, ok := e.queries[name]
	if !ok {
		return Plan{}, apperr.New(apperr.NotFound, "no query %q", name)
	}
	if c.User.Anonymous() && !q.Public {
		return Plan{}, apperr.New(apperr.Unauthenticated, "sign in to use %s", name)
	}
	plan, err := q.Prepare(ctx, c, args)
	if err != nil {
		return Plan{}, err
	}
	if (plan.Run == nil) == (plan.List == nil) {
		return Plan{}, fmt.Errorf("engine: query %s must set exactly one of Run and List", name)
	}
	return plan, nil
}

// recoverAs turns a panic into err (internal for the caller) and logs it
// with its stack; with err nil the panic is only logged.
func (e *Engine) recoverAs(what string, err *error) {
	p := recover()
	if p == nil {
		return
	}
	e.log.Error("panic", "in", what, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	if err != nil {
		*err = &panicError{what: what, value: p}
	}
}

// panicError is a recovered panic: internal to the client, whose call or
// subscription it ends.
type panicError struct {
	what  string
	value any
}

func (p *panicError) Error() string { return fmt.Sprintf("panic in %s: %v", p.what, p.value) }

func (p *panicError) Unwrap() error {
	return &apperr.Error{Code: apperr.Internal, Message: "internal error"}
}

// Settle waits until every instance made dirty so far has run, paced ones
// included, for tests and benchmarks that must know the engine is at rest
// before they look.
func (e *Engine) Settle(ctx context.Context) error { return e.settle(ctx, true) }

// SettleReady is Settle without waiting for instances whose pace holds them
// back (tests that move a fake clock).
func (e *Engine) SettleReady(ctx context.Context) error { return e.settle(ctx, false) }

func (e *Engine) settle(ctx context.Context, paced bool) error {
	stop := context.AfterFunc(ctx, func() {
		e.mu.Lock()
		e.idle.Broadcast()
		e.mu.Unlock()
	})
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.running > 0 || e.queued > 0 || e.hasDirty(paced) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if paced && !e.hasDirty(false) && e.running == 0 && e.queued == 0 {
			// Only paced work is left: look again when it is due.
			e.mu.Unlock()
			select {
			case <-e.clock.After(time.Millisecond):
			case <-ctx.Done():
			}
			e.mu.Lock()
			continue
		}
		e.idle.Wait()
	}
	return nil
}

// hasDirty reports whether an instance is dirty and due (or, with paced,
// dirty at all); e.mu held.
func (e *Engine) hasDirty(paced bool) bool {
	if paced {
		return len(e.dirty) > 0
	}
	now := e.clock.Now()
	for inst := range e.dirty {
		if !inst.readyAt.After(now) {
			return true
		}
	}
	return false
}

// HasFunc reports whether a function is registered under name.
func (e *Engine) HasFunc(name string) bool { _, ok := e.funcs[name]; return ok }

// Funcs lists the registered functions' names.
func (e *Engine) Funcs() []string { return slices.Sorted(maps.Keys(e.funcs)) }

// Queries lists the registered queries' names.
func (e *Engine) Queries() []string { return slices.Sorted(maps.Keys(e.queries)) }
