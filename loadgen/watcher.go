package loadgen

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// watcher is a socket that only subscribes: a tutor's dashboard (the exam's
// sessions, its chat rooms) or a projector showing a quiz's leaderboard.
// Each subscription asks for deltas and keeps the rows a browser would,
// so that a server with deltas is checked as it is used; a server without
// them sends whole results, which Rows takes as well.
type watcher struct {
	r      *runner
	tutor  bool // else a projector
	userID string
	exam   *exam

	conn *websocket.Conn
	wmu  sync.Mutex
	gone chan struct{}

	mu      sync.Mutex
	subs    map[string]*sub
	watched []*room // chat rooms it subscribed to

	ready        atomic.Bool  // its first subscription answered with data
	rooms        atomic.Int64 // chat rooms it watches
	bytes        atomic.Int64 // frame payload bytes received
	bytes0       int64        // at the start of the measured phase
	sightings    atomic.Int64 // heartbeats (scores, for a projector) it timed
	msgSightings atomic.Int64 // chat messages it timed

	seenNick map[string]bool // projector: nicknames already timed (reader only)
}

type sub struct {
	id, fn   string
	rows     *Rows
	sent     time.Time
	settled  atomic.Bool // its first answer (data or error) was counted
	ready    chan string // "" or the error code of the first answer
	first    bool        // reader only: a data arrived
	onChange func(w *watcher, changes []Change, now time.Time)
}

// subscribe sends a sub asking for deltas; its ready channel says how the
// server answered.
func (w *watcher) subscribe(id, fn string, args any, rows *Rows, onChange func(*watcher, []Change, time.Time)) (*sub, error) {
	s := &sub{id: id, fn: fn, rows: rows, ready: make(chan string, 1), onChange: onChange}
	b, _ := json.Marshal(map[string]any{"type": "sub", "id": id, "query": fn, "args": args, "deltas": true})
	w.mu.Lock()
	w.subs[id] = s
	w.mu.Unlock()
	w.r.st.attempt(fn)
	s.sent = time.Now()
	w.wmu.Lock()
	w.conn.SetWriteDeadline(time.Now().Add(callTimeout))
	err := w.conn.WriteMessage(websocket.TextMessage, b)
	w.wmu.Unlock()
	if err != nil {
		w.settle(s, errIO, time.Now())
	}
	return s, err
}

// await waits for a subscription's first answer; "" means data came.
func (w *watcher) await(s *sub, timeout time.Duration) string {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case code := <-s.ready:
		return code
	case <-t.C:
		w.settle(s, errTimeout, time.Now())
		return <-s.ready
	}
}

// settle counts a subscription's first answer once.
func (w *watcher) settle(s *sub, code string, now time.Time) {
	if s.settled.CompareAndSwap(false, true) {
		w.r.st.done(s.fn, code, now.Sub(s.sent))
		s.ready <- code
	}
}

func (w *watcher) sub(id string) *sub {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.subs[id]
}

func (w *watcher) read() {
	defer w.closed()
	readFrames(w.conn, w.r.st, func(f frame, size int, now time.Time) {
		w.bytes.Add(int64(size))
		switch f.Type {
		case "data", "delta":
			s := w.sub(f.ID)
			if s == nil {
				w.r.st.anomaly("frame_for_unknown_subscription")
				return
			}
			changes, err := s.rows.Apply(f)
			if err != nil {
				w.r.st.anomaly(s.fn + ":" + err.Error())
			}
			if !s.first {
				s.first = true
				w.settle(s, "", now)
				return // the state before the run: nothing to time
			}
			if len(changes) > 0 && s.onChange != nil {
				s.onChange(w, changes, now)
			}
		case "error":
			if f.ID == "" {
				w.r.st.anomaly(w.kind() + "_socket_error:" + f.Code)
				return
			}
			s := w.sub(f.ID)
			if s == nil {
				return
			}
			w.mu.Lock()
			delete(w.subs, f.ID)
			w.mu.Unlock()
			if s.settled.Load() {
				w.r.st.anomaly("subscription_ended:" + f.Code)
			}
			w.settle(s, f.Code, now)
		}
	})
}

func (w *watcher) kind() string {
	if w.tutor {
		return "tutor"
	}
	return "projector"
}

func (w *watcher) closed() {
	if !w.r.closing.Load() {
		w.r.st.anomaly(w.kind() + "_socket_closed")
	}
	if w.tutor {
		w.r.st.tutorsOpen.Add(-1)
	} else {
		w.r.st.projectorsOpen.Add(-1)
	}
	// What it no longer watches is no longer expected to show.
	if w.ready.Swap(false) && w.tutor {
		w.exam.watching.Add(-1)
	}
	w.mu.Lock()
	subs, watched := w.subs, w.watched
	w.subs, w.watched = map[string]*sub{}, nil
	w.mu.Unlock()
	for _, rm := range watched {
		rm.watchers.Add(-1)
	}
	for _, s := range subs {
		w.settle(s, errIO, time.Now())
	}
	close(w.gone)
}

// sessionsChanged times each heartbeat that shows: a row whose
// answered_count moved to a value one of our students sent.
func sessionsChanged(w *watcher, changes []Change, now time.Time) {
	for _, c := range changes {
		n := num(field(c.Row, "answered_count"))
		if n < 0 || (c.Old != nil && num(field(c.Old, "answered_count")) == n) {
			continue
		}
		s := w.r.byStudentID[str(field(c.Row, "student_id"))]
		if s == nil {
			continue
		}
		if at := s.sentAt(int(n)); at != 0 {
			w.r.st.prop.record(now.Sub(time.Unix(0, at)))
			w.sightings.Add(1)
		}
	}
}

// messagesChanged times each new message of this run: its client_msg_id
// carries the moment it was sent.
func messagesChanged(w *watcher, changes []Change, now time.Time) {
	for _, c := range changes {
		if c.Old != nil {
			continue
		}
		if at := sentIn(str(field(c.Row, "client_msg_id")), w.r.msgPrefix); at != 0 {
			w.r.st.msgProp.record(now.Sub(time.Unix(0, at)))
			w.msgSightings.Add(1)
		}
	}
}

// leaderboardChanged times each score of this run the first time it shows
// (rows may be keyed by rank: a nickname is what identifies a score).
func leaderboardChanged(w *watcher, changes []Change, now time.Time) {
	for _, c := range changes {
		nick := str(field(c.Row, "nickname"))
		if w.seenNick[nick] {
			continue
		}
		if at := sentIn(nick, w.r.scorePrefix); at != 0 {
			if len(w.seenNick) > 100_000 {
				clear(w.seenNick) // at worst a few rows still shown are timed twice
			}
			w.seenNick[nick] = true
			w.r.st.scoreProp.record(now.Sub(time.Unix(0, at)))
			w.sightings.Add(1)
		}
	}
}

// sentIn reads the send time from "<prefix><unix ns>[-…]", 0 if s is not one.
func sentIn(s, prefix string) int64 {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return 0
	}
	digits, _, _ := strings.Cut(rest, "-")
	ns, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0
	}
	return ns
}
