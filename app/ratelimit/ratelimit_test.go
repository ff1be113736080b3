package ratelimit_test

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/ratelimit"
)

// A burst of 10, then one a second: the eleventh waits a second, and keys
// do not share buckets.
func TestBurstThenRate(t *testing.T) {
	clock := clockwork.NewFakeClock()
	l := ratelimit.New(clock, 1, 10)
	for i := range 10 {
		if wait := l.Take("u1"); wait != 0 {
			t.Fatalf("take %d of the burst: wait %s", i+1, wait)
		}
	}
	if wait := l.Take("u1"); wait != time.Second {
		t.Fatalf("past the burst: wait %s, want 1s", wait)
	}
	if wait := l.Take("u2"); wait != 0 {
		t.Fatalf("another key: wait %s", wait)
	}
	clock.Advance(400 * time.Millisecond)
	if wait := l.Take("u1"); wait != 600*time.Millisecond {
		t.Fatalf("0.4 s later: wait %s, want 600ms", wait)
	}
	clock.Advance(600 * time.Millisecond)
	if wait := l.Take("u1"); wait != 0 {
		t.Fatalf("a second later: wait %s", wait)
	}
	if wait := l.Take("u1"); wait != time.Second {
		t.Fatalf("the refilled token is spent: wait %s", wait)
	}
}
