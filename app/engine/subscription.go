package engine

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"invigil/app/apperr"
	"invigil/store"
)

// Push is one published change of an instance, shared by its subscribers.
type Push struct {
	Version uint64
	// Since is when the engine heard of the oldest change this push
	// carries (just after its commit); zero for a first value.
	Since time.Time
	value json.RawMessage // a value query's value
	list  *listState      // a list query's rows (never changed once published)
	delta *Delta          // what changed since the previous push; nil on the first
	body  []byte          // the delta's encoding, made once for every subscriber
}

// Whole is the value in full.
func (p *Push) Whole() json.RawMessage {
	if p.list != nil {
		if p.value == nil {
			p.value = p.list.whole()
		}
	}
	return p.value
}

// Delta is what changed since the previous push, or nil when there is none
// to give (a value query, or the first value).
func (p *Push) Delta() *Delta { return p.delta }

// DeltaBody is Delta().Body(), encoded once per push.
func (p *Push) DeltaBody() []byte {
	if p.body == nil && p.delta != nil {
		p.body = p.delta.Body()
	}
	return p.body
}

// Update is what a sink is given.
type Update struct {
	*Push
	// Replace is set when the subscriber must take Whole() in place of
	// what it holds (its first value, or a value query); otherwise Delta()
	// brings it from the previous push to this one.
	Replace bool
}

// Sink receives a subscription's updates, in order, each exactly once. It
// is called with the instance's lock held: it must not block and must not
// take a lock held by anyone who may call Subscription.Close. A transport
// that cannot keep up must drop its connection, never an update. A non-nil
// err means the subscription ended (its caller may no longer see the
// result, or its query failed) and nothing follows.
type Sink func(u Update, err error)

// instance is one (query, share): its plan, its subscribers and what it
// last published.
type instance struct {
	name, id string
	plan     Plan
	keys     []string // every key it is indexed under

	// guarded by Engine.mu
	members     int  // subscriptions, counted before they join subs
	gone        bool // no member left; removed from the indexes
	running     bool
	rerun       bool // changed while running
	hasRun      bool // published at least once
	readyAt     time.Time
	pendingAll  bool
	pendingRows store.Rows // touched rows, with the values writes carried
	since       time.Time  // when the oldest pending change was heard of

	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	version uint64
	current *Push // the last published push, nil before the first
	hash    uint64
}

// Subscription is one subscriber of one instance.
type Subscription struct {
	e      *Engine
	inst   *instance
	name   string
	args   json.RawMessage
	sink   Sink
	caller Caller

	// guarded by Engine.mu
	recheck func(ctx context.Context) error
	rkeys   []string

	// guarded by inst.mu
	has    bool // got a value
	closed bool
}

// Subscribe prepares the query for c, registers the subscription under its
// keys, and then delivers its first value to sink (from a run, or the
// shared instance's current value); later values follow whenever the result
// changes. Only preparing can fail here; a failing run ends the
// subscription through its sink.
func (e *Engine) Subscribe(ctx context.Context, c Caller, name string, args json.RawMessage, sink Sink) (sub *Subscription, err error) {
	defer e.recoverAs("subscribe "+name, &err)
	plan, err := e.prepare(ctx, c, name, args)
	if err != nil {
		return nil, err
	}
	if plan.Args != nil {
		if args, err = json.Marshal(plan.Args); err != nil {
			return nil, err
		}
	}
	sub = &Subscription{e: e, name: name, args: args, sink: sink, caller: c, recheck: plan.Recheck, rkeys: plan.RecheckKeys}
	inst := e.join(name, plan, sub)
	// The check in Prepare ran before the subscription was registered for
	// re-checks: a change of rights in between would be missed, so check
	// once more now that any later change will be heard.
	if sub.recheck != nil && len(sub.rkeys) > 0 {
		if err := sub.recheck(ctx); err != nil {
			sub.Close()
			return nil, err
		}
	}
	e.subscriptions.Add(1)
	inst.mu.Lock()
	inst.subs[sub] = struct{}{}
	if inst.current != nil {
		sub.deliver(Update{Push: inst.current, Replace: true})
	}
	inst.mu.Unlock()
	e.execute(inst, true)
	return sub, nil
}

// join finds or makes the instance for plan and counts sub as its member,
// registering the indexes first.
func (e *Engine) join(name string, plan Plan, sub *Subscription) *instance {
	id := name + "\x00" + plan.Share
	e.mu.Lock()
	defer e.mu.Unlock()
	if sub.recheck != nil {
		e.index(e.rechecks, sub.rkeys, sub)
	}
	inst := e.instances[id]
	if inst == nil || plan.Share == "" {
		inst = &instance{name: name, id: id, plan: plan, subs: map[*Subscription]struct{}{}}
		inst.keys = append(inst.keys, plan.Keys...)
		if plan.List != nil {
			inst.keys = append(inst.keys, plan.List.Key)
		}
		if plan.Share != "" {
			e.instances[id] = inst
		}
		for _, k := range inst.keys {
			set := e.byKey[k]
			if set == nil {
				set = map[*instance]struct{}{}
				e.byKey[k] = set
			}
			set[inst] = struct{}{}
		}
	}
	inst.members++
	sub.inst = inst
	return inst
}

func (e *Engine) index(m map[string]map[*Subscription]struct{}, keys []string, s *Subscription) {
	for _, k := range keys {
		set := m[k]
		if set == nil {
			set = map[*Subscription]struct{}{}
			m[k] = set
		}
		set[s] = struct{}{}
	}
}

func (e *Engine) unindex(m map[string]map[*Subscription]struct{}, keys []string, s *Subscription) {
	for _, k := range keys {
		if set := m[k]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(m, k)
			}
		}
	}
}

// Args are the subscription's arguments as its query read them (unknown
// fields dropped): what to subscribe with again after a pause.
func (s *Subscription) Args() json.RawMessage { return s.args }

// Close ends the subscription: once it returns, its sink is not called
// again. An instance left without subscribers is dropped.
func (s *Subscription) Close() { s.end(nil, false) }

// end closes the subscription; with tell, its sink hears err.
func (s *Subscription) end(err error, tell bool) {
	inst := s.inst
	inst.mu.Lock()
	if s.closed {
		inst.mu.Unlock()
		return
	}
	s.closed = true
	_, joined := inst.subs[s]
	delete(inst.subs, s)
	if tell {
		s.sink(Update{}, err)
	}
	inst.mu.Unlock()
	if joined {
		s.e.subscriptions.Add(-1)
	}
	s.e.leave(s)
}

// leave forgets sub's indexes and drops its instance if it was the last.
func (e *Engine) leave(s *Subscription) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.unindex(e.rechecks, s.rkeys, s)
	inst := s.inst
	if inst.members--; inst.members > 0 || inst.gone {
		return
	}
	inst.gone = true
	if e.instances[inst.id] == inst {
		delete(e.instances, inst.id)
	}
	delete(e.dirty, inst)
	for _, k := range inst.keys {
		if set := e.byKey[k]; set != nil {
			delete(set, inst)
			if len(set) == 0 {
				delete(e.byKey, k)
			}
		}
	}
}

// deliver hands u to the subscriber; inst.mu held.
func (s *Subscription) deliver(u Update) {
	if s.closed {
		return
	}
	if !s.has {
		u.Replace = true
	}
	s.has = true
	s.e.pushes.Add(1)
	s.sink(u, nil)
}

// Reauthorize judges the subscription again for c, whose token changed
// (say, its role): a caller who may no longer see it has it ended with the
// error; one who may is kept, with its re-checks now made for c.
func (s *Subscription) Reauthorize(ctx context.Context, c Caller) {
	e := s.e
	plan, err := e.prepare(ctx, c, s.name, s.args)
	if err == nil && !e.sameInstance(s, plan) {
		err = apperr.New(apperr.Conflict, "this view changed with your new rights: subscribe again")
	}
	if err != nil {
		if apperr.CodeOf(err) == apperr.Internal {
			e.log.Error("reauthorize failed", "query", s.name, "err", err)
			return // a passing fault is no reason to end a view
		}
		s.end(err, true)
		return
	}
	e.mu.Lock()
	e.unindex(e.rechecks, s.rkeys, s)
	s.caller, s.recheck, s.rkeys = c, plan.Recheck, plan.RecheckKeys
	if s.recheck != nil {
		e.index(e.rechecks, s.rkeys, s)
	}
	e.mu.Unlock()
}

// sameInstance reports whether plan names the instance s is on; a caller
// whose new plan reads something else cannot be kept on the old one.
func (e *Engine) sameInstance(s *Subscription, plan Plan) bool {
	if s.inst.id == s.name+"\x00"+plan.Share {
		return true
	}
	e.log.Warn("reauthorize: a new plan for the same arguments reads other data; ending it", "query", s.name)
	return false
}

// reauthorize rechecks subscriptions whose caller's rights may have changed.
func (e *Engine) reauthorize(subs []*Subscription) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range subs {
		e.mu.Lock()
		recheck := s.recheck
		e.mu.Unlock()
		if recheck == nil {
			continue
		}
		err := func() (err error) {
			defer e.recoverAs("recheck "+s.name, &err)
			return recheck(ctx)
		}()
		if err == nil {
			continue
		}
		if apperr.CodeOf(err) == apperr.Internal {
			e.log.Error("recheck failed", "query", s.name, "err", err)
			continue
		}
		s.end(err, true)
	}
}
