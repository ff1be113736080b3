package loadgen

import (
	"sync"
	"sync/atomic"
	"time"
)

// What the load generator calls, by the names the report uses. Subscriptions
// count as calls of their query (attempted once, answered by the first data).
const (
	fnToken        = "demo.token"
	fnConnect      = "ws.connect" // dial and auth
	fnStart        = "proctoring.startSession"
	fnHeartbeat    = "proctoring.heartbeat"
	fnViolation    = "proctoring.logViolation"
	fnStartChat    = "chat.startChat"
	fnSend         = "chat.sendMessage"
	fnSessions     = "proctoring.getExamSessions"
	fnMessages     = "chat.getMessages"
	fnLeaderboard  = "leaderboard.getLeaderboard"
	fnHookExams    = "hooks/exams"
	fnHookScores   = "hooks/scores"
	errTimeout     = "timeout"
	errIO          = "io"
	errDial        = "dial"
	callTimeout    = 10 * time.Second
	setupWidth     = 64 // sockets connecting at once
	endGrace       = 3 * time.Second
	propagationLag = 500 * time.Millisecond // after the last send, for tutors to see it

	anomalyFirstLimited = "first_heartbeat_rate_limited"
)

var allFns = []string{fnToken, fnConnect, fnStart, fnHeartbeat, fnViolation, fnStartChat, fnSend,
	fnSessions, fnMessages, fnLeaderboard, fnHookExams, fnHookScores}

// fnStat counts one function's calls. Everything is atomic: the hot path
// (a heartbeat's answer) takes no lock shared with other sockets.
type fnStat struct {
	calls    atomic.Int64 // attempted, setup included
	measured atomic.Int64 // attempted during the measured phase
	ack      Histogram    // send → answer, successful calls
	errs     sync.Map     // code → *atomic.Int64
}

func (f *fnStat) fail(code string) {
	if code == "" {
		code = "unknown"
	}
	c, ok := f.errs.Load(code)
	if !ok {
		c, _ = f.errs.LoadOrStore(code, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(1)
}

// propStat is a write → watcher's frame delay and how many of the expected
// sightings were made (coalescing may merge two writes into one frame).
type propStat struct {
	hist     Histogram
	expected atomic.Int64
	seen     atomic.Int64
}

func (p *propStat) record(d time.Duration) {
	p.hist.Record(d)
	p.seen.Add(1)
}

// stats is everything one process measures.
type stats struct {
	fns       map[string]*fnStat // fixed at start; read without a lock
	measuring atomic.Bool

	prop, msgProp, scoreProp propStat

	anomalies sync.Map // code → *atomic.Int64

	studentsOpen, tutorsOpen, projectorsOpen     atomic.Int64
	studentsJoined, tutorsReady, projectorsReady atomic.Int64
}

func newStats() *stats {
	s := &stats{fns: map[string]*fnStat{}}
	for _, fn := range allFns {
		s.fns[fn] = &fnStat{}
	}
	return s
}

// attempt counts a call about to be made.
func (s *stats) attempt(fn string) *fnStat {
	f := s.fns[fn]
	f.calls.Add(1)
	if s.measuring.Load() {
		f.measured.Add(1)
	}
	return f
}

// done records a call's outcome: code "" is success.
func (s *stats) done(fn string, code string, d time.Duration) {
	f := s.fns[fn]
	if code == "" {
		f.ack.Record(d)
	} else {
		f.fail(code)
	}
}

// anomaly counts something that is not a failed call: a socket closed by
// the server, a delta that does not fit what the client holds.
func (s *stats) anomaly(code string) {
	c, ok := s.anomalies.Load(code)
	if !ok {
		c, _ = s.anomalies.LoadOrStore(code, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(1)
}
