package transport

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// limiter is a token bucket per user: rate calls per second sustained, up
// to burst at once.
type limiter struct {
	clock       clockwork.Clock
	rate, burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(clock clockwork.Clock, rate, burst float64) *limiter {
	return &limiter{clock: clock, rate: rate, burst: burst, buckets: map[string]*bucket{}}
}

// take spends one token for key; it returns 0, or how long until one is free.
func (l *limiter) take(key string) time.Duration {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) > 100_000 {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return 0
}

// prune forgets buckets that have refilled: they hold no state worth keeping.
func (l *limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
