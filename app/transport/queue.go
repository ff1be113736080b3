package transport

import (
	"sync"
	"sync/atomic"
	"time"

	"invigil/app/engine"
)

// sendQueue is one socket's outgoing frames, ahead of melody's own buffer.
//
// It holds at most one pending frame per subscription: a newer whole value
// replaces an unsent older one and an unsent delta merges with the next, so
// a socket that reads slowly gets fewer, fresher frames instead of a
// growing backlog. Other frames (results, errors) keep their order. The
// queue is bounded in bytes; past the bound the socket is closed (its
// client reconnects to current values), never a frame silently dropped.
//
// Frames go to melody only as fast as melody writes them (at most window
// in its buffer, released by its sent callback), so melody's buffer never
// overflows and everything that waits, waits here where it can coalesce.
//
// Its lock is a leaf: nothing is called under it but melody's non-blocking
// write, so sinks may enqueue while the engine holds an instance's lock;
// overflow is told after the lock is released, and takes no lock either.
type sendQueue struct {
	write    func([]byte)          // hands a frame to melody; never blocks
	overflow func(bytes int)       // told once when the bound is passed
	sent     func(since time.Time) // told, per written frame that carries a change, when it committed

	total     *atomic.Int64 // every queue's bytes, for the gauge
	bytesSent *atomic.Int64 // every byte handed to melody, for the counter

	mu         sync.Mutex
	items      []*queued // FIFO
	bySub      map[string]*queued
	bytes      int
	limit      int
	window     int
	inflight   []time.Time // per frame in melody's buffer, its change's time (zero: none)
	gone       int         // items replaced but still in the slice
	overflowed int         // bytes when the bound was passed, to tell overflow after unlocking
	closed     bool
}

// queued is one pending frame.
type queued struct {
	sub   string // the subscription it updates; "" for other frames
	frame []byte // nil while a merged delta waits to be encoded
	// A pending delta, kept to merge the next one into: prefix is its
	// frame's start, delta its (private) content.
	prefix []byte
	delta  *engine.Delta
	since  time.Time
	gone   bool // replaced by a frame queued later
}

func newSendQueue(limit, window int, total, sentBytes *atomic.Int64, write func([]byte), overflow func(int), sent func(time.Time)) *sendQueue {
	return &sendQueue{write: write, overflow: overflow, sent: sent, limit: limit, window: window, total: total,
		bytesSent: sentBytes, bySub: map[string]*queued{}}
}

// account moves the queue's byte count; q.mu held.
func (q *sendQueue) account(delta int) {
	q.bytes += delta
	q.total.Add(int64(delta))
}

// locked runs f under the lock, then tells overflow (outside it) if the
// bound was passed.
func (q *sendQueue) locked(f func()) {
	q.mu.Lock()
	f()
	n := q.overflowed
	q.overflowed = 0
	q.mu.Unlock()
	if n > 0 {
		q.overflow(n)
	}
}

// push queues a frame that never coalesces.
func (q *sendQueue) push(frame []byte) {
	q.locked(func() { q.append(&queued{frame: frame}) })
}

// pushValue queues a subscription's whole value, replacing its unsent frame.
func (q *sendQueue) pushValue(sub string, frame []byte, since time.Time) {
	q.locked(func() {
		q.drop(sub, &since)
		q.append(&queued{sub: sub, frame: frame, since: since})
	})
}

// pushDelta queues a subscription's delta: merged into its unsent delta,
// or, when a whole value is still unsent, turned into the newer whole
// value (whole makes it).
func (q *sendQueue) pushDelta(sub string, prefix, body []byte, d *engine.Delta, since time.Time, whole func() []byte) {
	q.locked(func() { q.mergeDelta(sub, prefix, body, d, since, whole) })
}

func (q *sendQueue) mergeDelta(sub string, prefix, body []byte, d *engine.Delta, since time.Time, whole func() []byte) {
	old := q.bySub[sub]
	switch {
	case old == nil:
		q.append(&queued{sub: sub, frame: append(append(make([]byte, 0, len(prefix)+len(body)), prefix...), body...),
			prefix: prefix, delta: d, since: since})
	case old.delta == nil:
		// Its whole value is still unsent: send the newest whole instead.
		q.drop(sub, &since)
		q.append(&queued{sub: sub, frame: whole(), since: since})
	default:
		merged := &engine.Delta{Upsert: append([]engine.RowJSON(nil), old.delta.Upsert...),
			Remove: append([]string(nil), old.delta.Remove...), Order: old.delta.Order}
		merged.Merge(d)
		q.drop(sub, &since)
		q.append(&queued{sub: sub, prefix: prefix, delta: merged, since: since})
	}
}

// drop forgets sub's pending frame, keeping the older of the two times.
func (q *sendQueue) drop(sub string, since *time.Time) {
	old := q.bySub[sub]
	if old == nil {
		return
	}
	old.gone = true
	q.gone++
	q.account(-old.size())
	delete(q.bySub, sub)
	if !old.since.IsZero() && (since.IsZero() || old.since.Before(*since)) {
		*since = old.since
	}
}

func (it *queued) size() int {
	if it.frame != nil {
		return len(it.frame)
	}
	n := len(it.prefix) + 32
	for _, r := range it.delta.Upsert {
		n += len(r.Raw) + 1
	}
	return n + 40*(len(it.delta.Remove)+len(it.delta.Order))
}

func (q *sendQueue) append(it *queued) {
	if q.closed {
		return
	}
	q.items = append(q.items, it)
	if it.sub != "" {
		q.bySub[it.sub] = it
	}
	q.account(it.size())
	// The bound is on backlog: one frame however large may wait (a big
	// first value), a growing pile may not.
	if q.bytes > q.limit && len(q.items)-q.gone > 1 {
		q.overflowed = q.bytes
		q.shut()
		return
	}
	q.pump()
}

// pump hands frames to melody while its buffer has room; q.mu held, so
// frames reach melody in queue order.
func (q *sendQueue) pump() {
	for len(q.inflight) < q.window && len(q.items) > 0 {
		it := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		if it.gone {
			q.gone--
			continue
		}
		if it.sub != "" {
			delete(q.bySub, it.sub)
		}
		q.account(-it.size())
		if it.frame == nil {
			it.frame = append(append(make([]byte, 0, 512), it.prefix...), it.delta.Body()...)
		}
		q.inflight = append(q.inflight, it.since)
		q.bytesSent.Add(int64(len(it.frame)))
		q.write(it.frame)
	}
	if len(q.items) == 0 && cap(q.items) > 64 {
		q.items = nil // let a burst's backing array go
	}
}

// written is melody's sent callback: one frame left its buffer.
func (q *sendQueue) written() {
	q.mu.Lock()
	var since time.Time
	if len(q.inflight) > 0 {
		since = q.inflight[0]
		q.inflight = q.inflight[1:]
	}
	q.pump()
	q.mu.Unlock()
	if !since.IsZero() {
		q.sent(since)
	}
}

// idle reports whether nothing waits and melody has written everything.
func (q *sendQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) == 0 && len(q.inflight) == 0
}

// shut drops everything and refuses more; q.mu held.
func (q *sendQueue) shut() {
	q.closed = true
	q.account(-q.bytes)
	q.items, q.bySub, q.gone = nil, map[string]*queued{}, 0
}

// close drops everything and refuses more.
func (q *sendQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shut()
}
