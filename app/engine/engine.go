// Package engine is invigil's reactive core. Features register functions
// (writes) and queries (reads) by name. A subscription is a query with its
// arguments; it depends on the keys its plan names (for example
// "exam:e1:sessions"). Every committed write batch names the keys it touched,
// and the engine re-runs only the subscriptions under those keys, once per
// burst, shared among all subscribers of the same (query, args), and pushes a
// value to a subscriber only when it differs from the last one it got.
//
// Ordering (why nothing is missed): a subscription is registered under its
// keys before its first run; a write hands its keys to the engine only after
// it committed. A commit before the first run's snapshot is in that result;
// a commit after registration marks the subscription dirty and re-runs it.
// Commit sequence numbers let a run skip invalidations it has already seen.
package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

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
type Plan struct {
	// Keys are what the result depends on; a write touching one re-runs it.
	Keys []string
	// Share names the result among callers: subscribers of the same query
	// with the same Share get one execution. Empty: never shared. It must
	// include everything Run's result depends on (never just the caller's
	// right to see it, which Prepare has checked).
	Share string
	// Run computes the current value.
	Run func(ctx context.Context) (any, error)
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
	// Window is how long a burst of invalidations is gathered before the
	// dirty subscriptions re-run; every write in it costs one re-run.
	Window time.Duration
	// Workers bounds concurrent re-runs.
	Workers int
	// PaceFactor paces an expensive query: after a run that cost d, the
	// instance re-runs no sooner than PaceFactor×d later (at most MaxPace),
	// so one huge dashboard under a storm of writes takes at most about
	// 1/(1+PaceFactor) of a core, while cheap queries keep the bare window.
	PaceFactor float64
	MaxPace    time.Duration
}

// Engine runs functions and keeps subscriptions current.
type Engine struct {
	db         *store.DB
	log        *slog.Logger
	window     time.Duration
	workers    int
	paceFactor float64
	maxPace    time.Duration
	seed       maphash.Seed

	funcs   map[string]Func
	queries map[string]Query

	mu        sync.Mutex
	instances map[string]*instance              // by query name + share
	byKey     map[string]map[*instance]struct{} // dependency index
	rechecks  map[string]map[*Subscription]struct{}
	dirty     map[*instance]struct{}
	wake      chan struct{}
	closeOnce sync.Once
	done      chan struct{}
	stopped   chan struct{}

	runs      atomic.Uint64
	pushes    atomic.Uint64
	runHook   func(name, share string) // tests count re-executions
	closeHook []func(conn uint64)
}

// instance is one (query, share): its plan, its subscribers and the last
// value it computed.
type instance struct {
	name string
	id   string
	plan Plan
	subs map[*Subscription]struct{}
	gone bool // no subscriber left; removed from the indexes

	// guarded by Engine.mu
	running bool
	readyAt time.Time // paced: no scheduled re-run before this
	rerun   bool      // invalidated while running
	seen    uint64    // commits up to this seq are in the last finished run
	runSeq  uint64    // commits up to this seq are in the run under way
	version uint64
	value   json.RawMessage
	hash    uint64
}

// New builds an engine over db and starts its scheduler; Close stops it.
func New(db *store.DB, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Window <= 0 {
		opts.Window = 5 * time.Millisecond
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
	e := &Engine{
		db: db, log: opts.Logger, window: opts.Window, workers: opts.Workers,
		paceFactor: opts.PaceFactor, maxPace: opts.MaxPace,
		seed:      maphash.MakeSeed(),
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
	db.OnCommit(e.invalidate)
	go e.scheduler()
	return e
}

// Close stops the scheduler.
func (e *Engine) Close() {
	e.closeOnce.Do(func() { close(e.done) })
	<-e.stopped
}

// DB is the store the engine watches; features write through it.
func (e *Engine) DB() *store.DB { return e.db }

// Func registers a function. Registration happens before serving.
func (e *Engine) Func(name string, f Func) { e.funcs[name] = f }

// Query registers a query. Registration happens before serving.
func (e *Engine) Query(name string, q Query) { e.queries[name] = q }

// OnConnClosed registers a listener told when a connection ends.
func (e *Engine) OnConnClosed(f func(conn uint64)) { e.closeHook = append(e.closeHook, f) }

// ConnClosed tells the features that a connection ended.
func (e *Engine) ConnClosed(conn uint64) {
	for _, f := range e.closeHook {
		f(conn)
	}
}

// IsPublic reports whether name is a query anyone may subscribe to.
func (e *Engine) IsPublic(name string) bool { return e.queries[name].Public }

// Stats are counters for /metrics and benchmarks.
type Stats struct {
	Runs, Pushes  uint64
	Subscriptions int
	Instances     int
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, in := range e.instances {
		n += len(in.subs)
	}
	return Stats{Runs: e.runs.Load(), Pushes: e.pushes.Load(), Subscriptions: n, Instances: len(e.instances)}
}

// SetRunHook installs f, called before every query execution (tests).
func (e *Engine) SetRunHook(f func(name, share string)) { e.runHook = f }

// Call runs a registered function.
func (e *Engine) Call(ctx context.Context, c Caller, name string, args json.RawMessage) (any, error) {
	f, ok := e.funcs[name]
	if !ok {
		return nil, apperr.New(apperr.NotFound, "no function %q", name)
	}
	return f(ctx, c, args)
}

// Get runs a query once, for plain HTTP reads.
func (e *Engine) Get(ctx context.Context, c Caller, name string, args json.RawMessage) (json.RawMessage, error) {
	plan, err := e.prepare(ctx, c, name, args)
	if err != nil {
		return nil, err
	}
	v, err := plan.Run(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func (e *Engine) prepare(ctx context.Context, c Caller, name string, args json.RawMessage) (Plan, error) {
	q, ok := e.queries[name]
	if !ok {
		return Plan{}, apperr.New(apperr.NotFound, "no query %q", name)
	}
	if c.User.Anonymous() && !q.Public {
		return Plan{}, apperr.New(apperr.Unauthenticated, "sign in to use %s", name)
	}
	return q.Prepare(ctx, c, args)
}

// Sink receives a subscription's values. It must not block: a transport
// that cannot take a value must drop its connection, not the value. A
// non-nil err means the subscription ended (its caller may no longer see
// the result) and nothing follows.
type Sink func(value json.RawMessage, err error)

// Subscription is one subscriber of one instance.
type Subscription struct {
	e       *Engine
	inst    *instance
	sink    Sink
	recheck func(ctx context.Context) error
	rkeys   []string

	mu          sync.Mutex // orders deliveries to this subscriber
	lastVersion uint64
	lastHash    uint64
	delivered   bool
	closed      bool
}

// Subscribe prepares the query, registers the subscription under its keys
// and then delivers its first value (from a run, or the shared instance's
// current one); later values follow whenever the result changes.
func (e *Engine) Subscribe(ctx context.Context, c Caller, name string, args json.RawMessage, sink Sink) (*Subscription, error) {
	plan, err := e.prepare(ctx, c, name, args)
	if err != nil {
		return nil, err
	}
	sub := &Subscription{e: e, sink: sink, recheck: plan.Recheck, rkeys: plan.RecheckKeys}
	id := name + "\x00" + plan.Share
	e.mu.Lock()
	if sub.recheck != nil {
		for _, k := range sub.rkeys {
			set := e.rechecks[k]
			if set == nil {
				set = map[*Subscription]struct{}{}
				e.rechecks[k] = set
			}
			set[sub] = struct{}{}
		}
	}
	inst, ok := e.instances[id]
	if !ok || plan.Share == "" {
		inst = &instance{name: name, id: id, plan: plan, subs: map[*Subscription]struct{}{}}
		if plan.Share != "" {
			e.instances[id] = inst
		}
		for _, k := range plan.Keys {
			set := e.byKey[k]
			if set == nil {
				set = map[*instance]struct{}{}
				e.byKey[k] = set
			}
			set[inst] = struct{}{}
		}
	}
	inst.subs[sub] = struct{}{}
	sub.inst = inst
	value, version, hash := inst.value, inst.version, inst.hash
	e.mu.Unlock()

	if value != nil {
		sub.deliver(version, hash, value)
		return sub, nil
	}
	if err := e.execute(ctx, inst); err != nil {
		sub.Close()
		return nil, err
	}
	return sub, nil
}

// Close ends the subscription; an instance left without subscribers is
// dropped from the indexes.
func (s *Subscription) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range s.rkeys {
		if set := e.rechecks[k]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(e.rechecks, k)
			}
		}
	}
	inst := s.inst
	delete(inst.subs, s)
	if len(inst.subs) > 0 || inst.gone {
		return
	}
	inst.gone = true
	if e.instances[inst.id] == inst {
		delete(e.instances, inst.id)
	}
	delete(e.dirty, inst)
	for _, k := range inst.plan.Keys {
		if set := e.byKey[k]; set != nil {
			delete(set, inst)
			if len(set) == 0 {
				delete(e.byKey, k)
			}
		}
	}
}

// deliver sends a value unless a newer one was already delivered or it
// equals the last one sent.
func (s *Subscription) deliver(version, hash uint64, value json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || version < s.lastVersion || (s.delivered && hash == s.lastHash) {
		return
	}
	s.lastVersion, s.lastHash, s.delivered = version, hash, true
	s.e.pushes.Add(1)
	s.sink(value, nil)
}

// end closes the subscription and tells its sink why.
func (s *Subscription) end(err error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return
	}
	s.Close()
	s.sink(nil, err)
}

// reauthorize rechecks subscriptions whose caller's rights may have changed.
func (e *Engine) reauthorize(subs []*Subscription) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range subs {
		err := s.recheck(ctx)
		if err == nil {
			continue
		}
		if apperr.CodeOf(err) == apperr.Internal {
			e.log.Error("recheck failed", "query", s.inst.name, "err", err)
			continue // a passing fault is no reason to end a view
		}
		s.end(err)
	}
}

// invalidate is the store's commit hook: it marks dirty every instance
// under a touched key that has not already seen this commit.
func (e *Engine) invalidate(seq uint64, keys []string) {
	marked := false
	e.mu.Lock()
	for _, k := range keys {
		for inst := range e.byKey[k] {
			if inst.running {
				inst.rerun = inst.rerun || seq > inst.runSeq
				continue
			}
			if seq <= inst.seen {
				continue
			}
			e.dirty[inst] = struct{}{}
			marked = true
		}
	}
	var recheck []*Subscription
	for _, k := range keys {
		for s := range e.rechecks[k] {
			recheck = append(recheck, s)
		}
	}
	e.mu.Unlock()
	if len(recheck) > 0 {
		go e.reauthorize(recheck)
	}
	if marked {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// scheduler gathers invalidations for one window, then re-runs every dirty
// instance that its pace allows, once, with bounded concurrency. Instances
// paced for later stay dirty and a timer wakes the scheduler for them.
func (e *Engine) scheduler() {
	defer close(e.stopped)
	sem := make(chan struct{}, e.workers)
	var wg sync.WaitGroup
	pacer := time.NewTimer(time.Hour)
	pacer.Stop()
	for {
		select {
		case <-e.done:
			wg.Wait()
			return
		case <-e.wake:
		case <-pacer.C:
		}
		timer := time.NewTimer(e.window)
		select {
		case <-e.done:
			timer.Stop()
			wg.Wait()
			return
		case <-timer.C:
		}
		now := time.Now()
		var next time.Time
		e.mu.Lock()
		batch := make([]*instance, 0, len(e.dirty))
		for inst := range e.dirty {
			if inst.readyAt.After(now) {
				if next.IsZero() || inst.readyAt.Before(next) {
					next = inst.readyAt
				}
				continue
			}
			batch = append(batch, inst)
			delete(e.dirty, inst)
		}
		e.mu.Unlock()
		if !next.IsZero() {
			pacer.Reset(next.Sub(now))
		}
		for _, inst := range batch {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				e.execute(context.Background(), inst)
			}()
		}
	}
}

// execute runs an instance's query and delivers the result to its
// subscribers. One run per instance at a time: an invalidation during a run
// queues one more run after it. It returns the run's error, if it ran.
func (e *Engine) execute(ctx context.Context, inst *instance) error {
	e.mu.Lock()
	if inst.gone {
		e.mu.Unlock()
		return nil
	}
	if inst.running {
		inst.rerun = true
		e.mu.Unlock()
		return nil
	}
	inst.running, inst.rerun = true, false
	delete(e.dirty, inst)
	inst.version++
	version := inst.version
	// Loaded before the query's snapshot: every commit up to seq is in it.
	seq := e.db.CommittedSeq()
	inst.runSeq = seq
	e.mu.Unlock()

	e.runs.Add(1)
	if e.runHook != nil {
		e.runHook(inst.name, inst.plan.Share)
	}
	started := time.Now()
	value, err := e.run(ctx, inst)
	cost := time.Since(started)

	e.mu.Lock()
	inst.running = false
	inst.readyAt = started.Add(cost + min(time.Duration(e.paceFactor*float64(cost)), e.maxPace))
	var subs []*Subscription
	hash := inst.hash
	if err == nil {
		inst.seen = seq // a failed run saw nothing: the next write re-runs it
		hash = maphash.Bytes(e.seed, value)
		inst.value, inst.hash = value, hash
		subs = make([]*Subscription, 0, len(inst.subs))
		for s := range inst.subs {
			subs = append(subs, s)
		}
	}
	again := inst.rerun && !inst.gone
	if again {
		e.dirty[inst] = struct{}{}
	}
	e.mu.Unlock()

	if err != nil {
		e.log.Error("query run failed", "query", inst.name, "share", inst.plan.Share, "err", err)
	}
	for _, s := range subs {
		s.deliver(version, hash, value)
	}
	if again {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
	return err
}

func (e *Engine) run(ctx context.Context, inst *instance) (json.RawMessage, error) {
	v, err := inst.plan.Run(ctx)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", inst.name, err)
	}
	return b, nil
}
