// Package ratelimit is a token bucket per key (a user id): rate tokens a
// second sustained, up to burst at once. The transport limits every call
// with one; features with a rule of their own (chat messages) keep another.
// It knows nothing of HTTP or of the features: a caller turns a wait into
// its own error (apperr.RateLimited with retry_after_ms).
package ratelimit

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Limiter holds one bucket per key. It is safe for concurrent use.
type Limiter struct {
	clock       clockwork.Clock
	rate, burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New returns a limiter allowing rate tokens a second per key, burst at once.
func New(clock clockwork.Clock, rate, burst float64) *Limiter {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Limiter{clock: clock, rate: rate, burst: burst, buckets: map[string]*bucket{}}
}

// Take spends one token for key; it returns 0, or how long until one is
// free (nothing is spent then).
func (l *Limiter) Take(key string) time.Duration {
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
func (l *Limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
