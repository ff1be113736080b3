package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"sync"
	"time"

	"invigil/app/apperr"
	"invigil/store"
)

var hashSeed = maphash.MakeSeed()

// invalidate is the store's commit hook: every instance under a touched key
// gets the rows to re-read (or a whole re-run) and is marked dirty.
func (e *Engine) invalidate(seq uint64, ch store.Changes) {
	now := e.clock.Now()
	marked := false
	var recheck []*Subscription
	e.mu.Lock()
	e.processed = seq
	for key, rows := range ch {
		for inst := range e.byKey[key] {
			if rows == nil || inst.plan.List == nil || key != inst.plan.List.Key {
				inst.pendingAll, inst.pendingRows = true, nil
			} else if !inst.pendingAll {
				if inst.pendingRows == nil {
					inst.pendingRows = make(store.Rows, len(rows))
				}
				maps.Copy(inst.pendingRows, rows) // later commits win
				if len(inst.pendingRows) > e.maxPatch {
					inst.pendingAll, inst.pendingRows = true, nil
				}
			}
			if inst.since.IsZero() {
				inst.since = now
			}
			if inst.running {
				inst.rerun = true
				continue
			}
			e.dirty[inst] = struct{}{}
			marked = true
		}
		for s := range e.rechecks[key] {
			recheck = append(recheck, s)
		}
	}
	e.mu.Unlock()
	if len(recheck) > 0 {
		go e.reauthorize(recheck)
	}
	if marked {
		e.kick()
	}
}

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// scheduler runs every dirty instance that its pace allows, once, with
// bounded concurrency (after gathering for Window, when set). Instances
// paced for later stay dirty and a timer wakes the scheduler for them.
func (e *Engine) scheduler() {
	defer close(e.stopped)
	sem := make(chan struct{}, e.workers)
	var wg sync.WaitGroup
	pacer := e.clock.NewTimer(time.Hour)
	pacer.Stop()
	for {
		select {
		case <-e.done:
			wg.Wait()
			return
		case <-e.wake:
		case <-pacer.Chan():
		}
		if e.window > 0 {
			select {
			case <-e.done:
				wg.Wait()
				return
			case <-e.clock.After(e.window):
			}
		}
		now := e.clock.Now()
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
		e.queued += len(batch)
		e.mu.Unlock()
		if !next.IsZero() {
			pacer.Reset(next.Sub(now))
		}
		for _, inst := range batch {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() {
					<-sem
					e.mu.Lock()
					e.queued--
					e.idle.Broadcast()
					e.mu.Unlock()
				}()
				e.execute(inst, false)
			})
		}
	}
}

// execute runs an instance and publishes what changed to its subscribers.
// One run per instance at a time: a change during a run queues exactly one
// more. With first, it runs only an instance that never ran (a new
// subscription's first value).
func (e *Engine) execute(inst *instance, first bool) {
	e.mu.Lock()
	if inst.gone || (first && (inst.hasRun || inst.running)) {
		e.mu.Unlock()
		return
	}
	if inst.running {
		inst.rerun = true
		e.mu.Unlock()
		return
	}
	inst.running, inst.rerun = true, false
	e.running++
	delete(e.dirty, inst)
	whole := inst.pendingAll || !inst.hasRun
	rows := inst.pendingRows
	since := inst.since
	inst.pendingAll, inst.pendingRows, inst.since = false, nil, time.Time{}
	e.mu.Unlock()

	if e.runHook != nil {
		e.runHook(inst.name, inst.plan.Share)
	}
	started := e.clock.Now()
	push, err := e.compute(inst, whole, rows)
	cost := e.clock.Since(started)
	// Published before the run counts as over: the next run patches what
	// this one published.
	switch {
	case err == nil && push != nil:
		push.Since = since
		e.publish(inst, push)
	case err != nil:
		e.failed(inst, err)
	}

	e.mu.Lock()
	inst.running = false
	e.running--
	// Paced from the run's start, each part capped, so that a clock that
	// jumped during the run (a fake one in tests, a stalled process) never
	// holds the instance for long after it.
	inst.readyAt = started.Add(max(e.minInterval, min(cost, e.maxPace)+min(time.Duration(e.paceFactor*float64(cost)), e.maxPace)))
	if err != nil {
		// Nothing was published: what this run took must be read again.
		inst.pendingAll = true
		if inst.since.IsZero() || (!since.IsZero() && since.Before(inst.since)) {
			inst.since = since
		}
	} else {
		inst.hasRun = true
	}
	again := inst.rerun && !inst.gone
	if again {
		e.dirty[inst] = struct{}{}
	}
	e.idle.Broadcast()
	e.mu.Unlock()
	if again {
		e.kick()
	}
}

// compute reads what changed and returns the push to publish, nil when
// nothing visible changed.
func (e *Engine) compute(inst *instance, whole bool, rows store.Rows) (push *Push, err error) {
	defer e.recoverAs("query "+inst.name, &err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst.mu.Lock()
	current, hash := inst.current, inst.hash
	inst.mu.Unlock()
	if inst.plan.List == nil {
		e.fullRuns.Add(1)
		v, err := inst.plan.Run(ctx)
		if err != nil {
			return nil, err
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", inst.name, err)
		}
		if current != nil && maphash.Bytes(hashSeed, raw) == hash && string(raw) == string(current.value) {
			return nil, nil
		}
		return &Push{value: raw}, nil
	}
	l := inst.plan.List
	if !whole && current != nil {
		if len(rows) == 0 {
			return nil, nil
		}
		ids, fetched, carried, err := l.changed(ctx, rows)
		if err != nil {
			return nil, err
		}
		ls, d, ok, err := l.patch(current.list, ids, fetched)
		if err != nil {
			return nil, err
		}
		if ok {
			e.patchRuns.Add(1)
			e.rowsPatched.Add(uint64(len(rows)))
			e.rowsCarried.Add(uint64(carried))
			if d.Empty() {
				return nil, nil
			}
			return &Push{list: ls, delta: d}, nil
		}
	}
	var ls *listState
	{
		e.fullRuns.Add(1)
		all, err := l.All(ctx)
		if err != nil {
			return nil, err
		}
		if ls, err = l.build(all); err != nil {
			return nil, err
		}
	}
	if current == nil {
		return &Push{list: ls}, nil
	}
	d := diff(current.list, ls)
	if d.Empty() {
		return nil, nil
	}
	return &Push{list: ls, delta: d}, nil
}

// publish makes push the instance's current value and delivers it to every
// subscriber, in order.
func (e *Engine) publish(inst *instance, push *Push) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	inst.version++
	push.Version = inst.version
	if push.list == nil {
		inst.hash = maphash.Bytes(hashSeed, push.value)
	}
	inst.current = push
	replace := push.delta == nil
	for s := range inst.subs {
		s.deliver(Update{Push: push, Replace: replace})
	}
}

// failed handles a run that returned an error. A panic, or a first run
// that failed, ends the subscriptions waiting on it (internal, or the
// query's own code); a re-run that failed keeps them on their last value
// and is tried again at the next change.
func (e *Engine) failed(inst *instance, err error) {
	code := apperr.CodeOf(err)
	inst.mu.Lock()
	var ending []*Subscription
	for s := range inst.subs {
		if !s.has || code != apperr.Internal || isPanic(err) {
			ending = append(ending, s)
		}
	}
	inst.mu.Unlock()
	if code == apperr.Internal {
		e.log.Error("query run failed", "query", inst.name, "share", inst.plan.Share, "err", err)
	}
	for _, s := range ending {
		s.end(err, true)
	}
}

func isPanic(err error) bool {
	var p *panicError
	return errors.As(err, &p)
}
