package loadgen

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// student is one exam candidate's browser tab: one socket, a heartbeat
// every interval, now and then a violation, and in a chat room its messages.
//
// Calls are sent without waiting for the previous answer, as a page's timer
// does: a slow server shows as slow answers, not as fewer calls (no
// coordinated omission). The reader goroutine matches answers by id.
type student struct {
	r    *runner
	idx  int // in the whole run, across processes
	id   string
	name string
	exam *exam
	rng  *rand.Rand // the heartbeat goroutine's only

	conn *websocket.Conn
	gone chan struct{} // closed when the socket is

	wmu sync.Mutex // one writer at a time (heartbeats, chat)
	out []byte

	mu      sync.Mutex
	seq     int
	pending []pendingCall
	ring    [ringSize]sentHeartbeat

	answered int    // the next answered_count; the heartbeat goroutine's only
	args     []byte // the heartbeat goroutine's scratch

	// holdUntil (unix ns) is when a server that shed a heartbeat asked to
	// hear again: like static/exam.js, no heartbeat goes before it.
	holdUntil atomic.Int64
}

// ringSize heartbeats of a student are remembered for tutors to time; one
// seen later than that many intervals is not timed.
const ringSize = 16

type sentHeartbeat struct {
	n  int
	at int64 // unix ns
}

type pendingCall struct {
	id   string
	sent time.Time
	callOpts
}

// callOpts says what a call's answer means beyond its own figures.
type callOpts struct {
	fn       string
	hb       int             // > 0: a heartbeat's answered_count, remembered with its send time
	first    bool            // the student's first heartbeat
	wait     chan callResult // setup calls wait for their answer; nil otherwise
	prop     *propStat       // a success means watchers sightings are due
	watchers *atomic.Int64
}

type callResult struct {
	code  string
	value []byte
}

// call sends o.fn(args) and returns at once with the call's id; the answer
// is counted when it comes.
func (s *student) call(args []byte, o callOpts) (string, error) {
	s.r.st.attempt(o.fn)
	now := time.Now()
	s.mu.Lock()
	s.seq++
	id := strconv.Itoa(s.seq)
	s.pending = append(s.pending, pendingCall{id: id, sent: now, callOpts: o})
	if o.hb > 0 {
		s.ring[o.hb%ringSize] = sentHeartbeat{n: o.hb, at: now.UnixNano()}
	}
	s.mu.Unlock()
	fn := o.fn

	s.wmu.Lock()
	s.out = append(s.out[:0], `{"type":"call","id":"`...)
	s.out = append(s.out, id...)
	s.out = append(s.out, `","fn":"`...)
	s.out = append(s.out, fn...)
	s.out = append(s.out, `","args":`...)
	s.out = append(s.out, args...)
	s.out = append(s.out, '}')
	s.conn.SetWriteDeadline(now.Add(callTimeout))
	err := s.conn.WriteMessage(websocket.TextMessage, s.out)
	s.wmu.Unlock()
	if err != nil {
		s.resolve(id, errIO, nil, time.Now())
	}
	return id, err
}

// callWait sends a call and waits for its answer (setup: startSession,
// startChat); it returns the error code ("" on success) and the value.
func (s *student) callWait(ctx context.Context, fn string, args []byte) (string, []byte) {
	wait := make(chan callResult, 1)
	id, err := s.call(args, callOpts{fn: fn, wait: wait})
	if err != nil {
		return errIO, nil
	}
	t := time.NewTimer(callTimeout)
	defer t.Stop()
	select {
	case res := <-wait:
		return res.code, res.value
	case <-t.C:
	case <-ctx.Done():
	}
	s.resolve(id, errTimeout, nil, time.Now()) // unless it was answered meanwhile
	res := <-wait
	return res.code, res.value
}

// resolve records the answer to call id; false when no call is waiting
// for it (an answer after its timeout).
func (s *student) resolve(id, code string, value []byte, now time.Time) bool {
	s.mu.Lock()
	i := -1
	for j := range s.pending {
		if s.pending[j].id == id {
			i = j
			break
		}
	}
	if i < 0 {
		s.mu.Unlock()
		return false
	}
	p := s.pending[i]
	last := len(s.pending) - 1
	s.pending[i] = s.pending[last]
	s.pending = s.pending[:last]
	s.mu.Unlock()

	s.finish(p, code, value, now)
	return true
}

func (s *student) finish(p pendingCall, code string, value []byte, now time.Time) {
	s.r.st.done(p.fn, code, now.Sub(p.sent))
	if code == "" && p.prop != nil {
		p.prop.expected.Add(p.watchers.Load())
	}
	if code == "rate_limited" && p.first {
		// Sent soon after startSession, which CONTRACT §4 says does not
		// count toward the minimum interval: worth telling apart.
		s.r.st.anomaly(anomalyFirstLimited)
	}
	if p.wait != nil {
		p.wait <- callResult{code: code, value: bytes.Clone(value)}
	}
}

// expire counts as timed out every call sent before cutoff.
func (s *student) expire(cutoff time.Time) {
	s.mu.Lock()
	var late []pendingCall
	kept := s.pending[:0]
	for _, p := range s.pending {
		if p.sent.Before(cutoff) {
			late = append(late, p)
		} else {
			kept = append(kept, p)
		}
	}
	s.pending = kept
	s.mu.Unlock()
	for _, p := range late {
		s.finish(p, errTimeout, nil, time.Now())
	}
}

// inFlight is the number of calls without an answer.
func (s *student) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// sentAt is when the heartbeat carrying answered_count n was sent (unix ns),
// or 0 when this student did not send it lately.
func (s *student) sentAt(n int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.ring[n%ringSize]; e.n == n {
		return e.at
	}
	return 0
}

// read matches answers to calls until the socket closes.
func (s *student) read() {
	defer s.closed()
	readFrames(s.conn, s.r.st, func(f frame, _ int, now time.Time) {
		switch f.Type {
		case "result":
			if !s.resolve(f.ID, "", f.Value, now) {
				s.r.st.anomaly("late_answer")
			}
		case "error":
			if f.ID == "" {
				s.r.st.anomaly("student_socket_error:" + f.Code)
			} else if !s.resolve(f.ID, f.Code, nil, now) {
				s.r.st.anomaly("late_answer")
			} else if f.Code == "rate_limited" && f.RetryAfterMs > 0 {
				s.holdUntil.Store(now.Add(time.Duration(f.RetryAfterMs) * time.Millisecond).UnixNano())
			}
		}
	})
}

// closed fails what is still waiting and counts a close the run did not ask for.
func (s *student) closed() {
	if !s.r.closing.Load() {
		s.r.st.anomaly("student_socket_closed")
	}
	s.r.st.studentsOpen.Add(-1)
	s.mu.Lock()
	late := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, p := range late {
		s.finish(p, errIO, nil, time.Now())
	}
	close(s.gone)
}

var violationTypes = []string{"tab_hidden", "window_blur", "fullscreen_exit", "copy", "paste", "context_menu"}

// run heartbeats until ctx ends: the first at a random moment of the first
// interval after start, then every interval ±10 %, never closer than 90 %
// of the interval to the last (the server refuses heartbeats that come too
// soon) and without bursts to catch up after a stall.
func (s *student) run(ctx context.Context, start time.Time) {
	iv := s.r.cfg.Interval
	next := start.Add(time.Duration(s.rng.Int64N(int64(iv))))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.gone:
			return
		case <-timer.C:
		}
		now := time.Now()
		s.expire(now.Add(-callTimeout))
		if hold := time.Unix(0, s.holdUntil.Load()); now.Before(hold) {
			next = hold
			timer.Reset(time.Until(next))
			continue
		}
		if s.r.cfg.Violations > 0 && s.rng.Float64() < s.r.cfg.Violations {
			s.call(s.violationArgs(now), callOpts{fn: fnViolation})
		}
		n := s.answered
		if s.answered++; s.answered > maxAnswered {
			s.answered = 1
		}
		o := callOpts{fn: fnHeartbeat, hb: n, first: first, prop: &s.r.st.prop, watchers: &s.exam.watching}
		first = false
		if _, err := s.call(s.heartbeatArgs(n), o); err != nil {
			return // the socket is gone: the reader counts it
		}
		next = next.Add(iv + time.Duration((s.rng.Float64()*0.2-0.1)*float64(iv)))
		if floor := now.Add(iv * 9 / 10); next.Before(floor) {
			next = floor
		}
		timer.Reset(time.Until(next))
	}
}

// maxAnswered is the largest answered_count the server takes.
const maxAnswered = 100_000

// heartbeatArgs carries n as answered_count: each heartbeat of a student
// has its own, so that a tutor can tell which one it sees.
func (s *student) heartbeatArgs(n int) []byte {
	b := append(s.args[:0], `{"exam_id":"`...)
	b = append(b, s.exam.id...)
	b = append(b, `","current_question":`...)
	b = strconv.AppendInt(b, int64(n%50), 10)
	b = append(b, `,"answered_count":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"network":{"rtt_ms":`...)
	b = strconv.AppendInt(b, int64(20+s.rng.IntN(100)), 10)
	b = append(b, `,"effective_type":"4g"}}`...)
	s.args = b
	return b
}

func (s *student) violationArgs(now time.Time) []byte {
	b := []byte(`{"exam_id":"`)
	b = append(b, s.exam.id...)
	b = append(b, `","type":"`...)
	b = append(b, violationTypes[s.rng.IntN(len(violationTypes))]...)
	b = append(b, `","detail":"invigil load","client_ts":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","client_id":"lg-`...)
	b = append(b, s.r.cfg.RunID...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(s.idx), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, now.UnixNano(), 10)
	b = append(b, `"}`...)
	return b
}
