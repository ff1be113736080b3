package transport

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"invigil/app/apperr"
)

// The server past its capacity sheds new work so that the users it serves
// stay served: new sockets and new subscriptions are refused with
// rate_limited and a retry_after_ms (the client comes back later, spread
// out), while the sockets it has keep working. And no socket is closed for
// a pong the server had no time to read.
//
// Two signals say "past capacity": the process itself falling behind (a
// ticker that wakes late means goroutines wait for a core), and the store's
// writer queue filling up (writes arrive faster than commits).

const (
	lagTick      = 100 * time.Millisecond
	stallMemory  = 2 * time.Second // how long a stall counts as "now"
	backlogLimit = 0.5             // of the writer queue's capacity
)

// loadMonitor watches the process's scheduling lag. One late tick (a GC
// pause, a burst) is a stall: pongs may have gone unread, so deadlines are
// extended. Lag that stays high (its moving average past the threshold) is
// overload: new work is shed.
type loadMonitor struct {
	stallLag  time.Duration // a tick this late: the process is behind
	lastStall atomic.Int64  // unix nanoseconds of the last late tick
	avgLag    atomic.Int64  // moving average of the lag, nanoseconds
	done      chan struct{}
}

func newLoadMonitor(stallLag time.Duration) *loadMonitor {
	m := &loadMonitor{stallLag: stallLag, done: make(chan struct{})}
	go m.run()
	return m
}

func (m *loadMonitor) run() {
	t := time.NewTicker(lagTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-m.done:
			return
		case now := <-t.C:
			// The ticker's own time is when it fired; now is when we ran.
			lag := time.Since(now) + max(0, now.Sub(last)-lagTick)
			last = now
			if lag > m.stallLag {
				m.markStalled()
			}
			// Over about a second of ticks.
			m.avgLag.Store((m.avgLag.Load()*7 + int64(lag)*3) / 10)
		}
	}
}

// markStalled records a stall now (the ticker's finding; tests too).
func (m *loadMonitor) markStalled() { m.lastStall.Store(time.Now().UnixNano()) }

func (m *loadMonitor) stalled() bool {
	last := m.lastStall.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < stallMemory
}

// overloaded reports lag that stayed high, not a single pause.
func (m *loadMonitor) overloaded() bool { return time.Duration(m.avgLag.Load()) > m.stallLag }

func (m *loadMonitor) stop() { close(m.done) }

// shed reports whether new work must wait, and for how long (2 to 10 s,
// spread so that refused clients do not come back together).
func (s *Server) shed() (time.Duration, bool) {
	if !s.load.overloaded() && (s.opts.Backlog == nil || s.opts.Backlog() < backlogLimit) {
		return 0, false
	}
	return 2*time.Second + rand.N(8*time.Second), true
}

// overloaded is the refusal of new work when shedding.
func (s *Server) overloaded() error {
	wait, shed := s.shed()
	if !shed {
		return nil
	}
	s.metrics.Shed.Inc()
	return &apperr.Error{Code: apperr.RateLimited, Message: "the server is busy: try again shortly", RetryAfterMs: wait.Milliseconds()}
}

// keepAlive extends every socket's read deadline while the process is
// behind: a pong it had no time to read is no sign that its client died.
func (s *Server) keepAlive() {
	t := time.NewTicker(min(time.Second, s.opts.DisconnectAfter/3))
	defer t.Stop()
	for {
		select {
		case <-s.load.done:
			return
		case <-t.C:
			if !s.load.stalled() {
				continue
			}
			deadline := time.Now().Add(s.opts.DisconnectAfter)
			s.connsMu.Lock()
			for _, c := range s.conns {
				if c.rec.conn != nil {
					c.rec.conn.SetReadDeadline(deadline)
				}
			}
			s.connsMu.Unlock()
		}
	}
}
