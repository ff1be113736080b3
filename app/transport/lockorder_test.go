package transport

import (
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/engine"
	"invigil/store/storetest"
)

// TestSinksAndKillTakeNoConnLock: the lock order that cannot be got wrong.
// A socket's closers (expiry, close) hold its mutex while they work, and
// the engine calls sinks under its instance locks, which closers wait for;
// so a sink, and kill (called from a sink when a client is too slow), must
// finish while another goroutine holds the socket's mutex.
func TestSinksAndKillTakeNoConnLock(t *testing.T) {
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	s := New(Options{Engine: e})
	c := &wsConn{srv: s, id: 1, rec: &hijackRecorder{}, subs: map[string]*wsSub{}}
	c.q = newSendQueue(1<<20, sendWindow, &s.queuedBytes, &s.sentBytes, func([]byte) {}, c.overflowed, c.pushed)
	sink := c.sink("q1", &wsSub{query: "some.query", deltas: true})

	c.mu.Lock()
	defer c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sink(engine.Update{Push: &engine.Push{}, Replace: true}, nil)
		sink(engine.Update{}, errors.New("ended"))
		c.kill("too slow")
		c.overflowed(1 << 30)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("a sink or kill waited for the socket's mutex: a closer holding it would deadlock")
	}
}
