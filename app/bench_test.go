package app_test

// Full-stack benchmarks on loopback: real SQLite file, real HTTP and
// WebSockets, the real engine and transport; the clients are plain gorilla
// sockets that decode as little as they can, so that most of the CPU goes to
// the server (client and server share the machine's cores).
//
//	go test -run xxx -bench . -benchtime 3s ./app/
//
// BenchmarkHeartbeatWS: b.N proctoring.heartbeat calls spread in parallel over
// 1000 student sockets (each its own user, each in exam "bench"; the
// transport's 20 calls/s per user would cap 200 users at 4,000/s), with
// `inflight` calls outstanding at once and, with tutor=1, a tutor socket
// subscribed (with deltas) to the exam's sessions the whole time. Reports
// calls/s, the call round trip's p50/p99/max, and the frames the tutor got.
//
// BenchmarkFanout/N: N tutor sockets subscribed (with deltas) to the same
// proctoring.getExamSessions; one op is one student heartbeat, timed from
// the call's send until all N sockets got the frame showing it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/identity"
)

const benchExamID = "bench"

// benchBoot starts invigil on the real clock with heartbeats always accepted
// and registers the open exam "bench" watched by tutors.
func benchBoot(b *testing.B, tutors []string) *apptest.Harness {
	b.Helper()
	h := apptest.Boot(b, apptest.WithRealClock(), apptest.WithConfig(func(c *app.Config) {
		c.HeartbeatMin = time.Nanosecond
	}))
	h.Exam(exam.Registration{ExamID: benchExamID, Title: "Benchmark", TutorIDs: tutors, Status: exam.Open})
	return h
}

// benchFrame is the little of a server frame the clients look at.
type benchFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Code string `json:"code"`
}

// benchDial opens /ws and authenticates as u. It is safe to call from many
// goroutines (it does not use the harness's Fatal).
func benchDial(h *apptest.Harness, u identity.User, token string) (*websocket.Conn, error) {
	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial as %s: %w", u.ID, err)
	}
	if err := conn.WriteJSON(map[string]string{"type": "auth", "token": token}); err != nil {
		conn.Close()
		return nil, err
	}
	var f benchFrame
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := conn.ReadJSON(&f); err != nil || f.Type != "authed" {
		conn.Close()
		return nil, fmt.Errorf("auth as %s: %+v %v", u.ID, f, err)
	}
	conn.SetReadDeadline(time.Time{})
	return conn, nil
}

// benchCall sends one call on a socket nobody else reads and waits for its
// answer; it returns the error code ("" on success).
func benchCall(conn *websocket.Conn, id, fn string, args []byte) (string, error) {
	frame := make([]byte, 0, 160+len(args))
	frame = append(frame, `{"type":"call","id":"`...)
	frame = append(frame, id...)
	frame = append(frame, `","fn":"`...)
	frame = append(frame, fn...)
	frame = append(frame, `","args":`...)
	frame = append(frame, args...)
	frame = append(frame, '}')
	if err := conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		return "", err
	}
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return "", err
		}
		var f benchFrame
		if err := json.Unmarshal(msg, &f); err != nil {
			return "", err
		}
		if f.ID != id {
			continue
		}
		switch f.Type {
		case "result":
			return "", nil
		case "error":
			return f.Code, nil
		}
	}
}

func heartbeatArgs(n int) []byte {
	return []byte(`{"exam_id":"` + benchExamID + `","current_question":` + strconv.Itoa(n%50) +
		`,"answered_count":` + strconv.Itoa(n) + `,"network":{"rtt_ms":42,"effective_type":"4g"}}`)
}

// parallelDo runs f(0..n-1) on a few goroutines and returns the first error.
func parallelDo(n int, f func(i int) error) error {
	var (
		next    atomic.Int64
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	for range min(n, 16) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					errOnce.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// benchStudents opens n student sockets, each its own user with a started
// session in exam "bench".
func benchStudents(b *testing.B, h *apptest.Harness, n int) []*websocket.Conn {
	b.Helper()
	conns := make([]*websocket.Conn, n)
	tokens := make([]string, n)
	users := make([]identity.User, n)
	for i := range n {
		users[i] = identity.User{ID: fmt.Sprintf("bench-student-%04d", i), Role: identity.Student, Name: fmt.Sprintf("Student %04d", i)}
		tokens[i] = h.Token(users[i])
	}
	err := parallelDo(n, func(i int) error {
		c, err := benchDial(h, users[i], tokens[i])
		if err != nil {
			return err
		}
		conns[i] = c
		code, err := benchCall(c, "start", "proctoring.startSession", []byte(`{"exam_id":"`+benchExamID+`"}`))
		if err == nil && code != "" {
			err = fmt.Errorf("startSession as %s: %s", users[i].ID, code)
		}
		return err
	})
	b.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	return conns
}

// benchTutor is a tutor socket subscribed to the exam's sessions; a reader
// goroutine counts data frames and hands each to onData.
type benchTutor struct {
	conn   *websocket.Conn
	frames atomic.Int64
	bytes  atomic.Int64
	closed chan struct{}
	err    error // why the reader stopped; read after closed
}

func benchTutors(b *testing.B, h *apptest.Harness, users []identity.User, onData func(value []byte)) []*benchTutor {
	b.Helper()
	tokens := make([]string, len(users))
	for i, u := range users {
		tokens[i] = h.Token(u)
	}
	tutors := make([]*benchTutor, len(users))
	err := parallelDo(len(users), func(i int) error {
		c, err := benchDial(h, users[i], tokens[i])
		if err != nil {
			return err
		}
		t := &benchTutor{conn: c, closed: make(chan struct{})}
		tutors[i] = t
		sub := `{"type":"sub","id":"q1","query":"proctoring.getExamSessions","deltas":true,"args":{"exam_id":"` + benchExamID + `"}}`
		if err := c.WriteMessage(websocket.TextMessage, []byte(sub)); err != nil {
			return err
		}
		var f benchFrame
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := c.ReadJSON(&f); err != nil || f.Type != "data" {
			return fmt.Errorf("subscribe as %s: %+v %v", users[i].ID, f, err)
		}
		c.SetReadDeadline(time.Time{})
		go func() {
			defer close(t.closed)
			dataPrefix := []byte(`{"type":"data","id":"q1",`)
			deltaPrefix := []byte(`{"type":"delta","id":"q1",`)
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					t.err = err
					return
				}
				if !bytes.HasPrefix(msg, dataPrefix) && !bytes.HasPrefix(msg, deltaPrefix) {
					t.err = fmt.Errorf("unexpected frame %.200s", msg)
					return
				}
				t.frames.Add(1)
				t.bytes.Add(int64(len(msg)))
				if onData != nil {
					onData(msg)
				}
			}
		}()
		return nil
	})
	b.Cleanup(func() {
		for _, t := range tutors {
			if t != nil {
				t.conn.Close()
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	return tutors
}

func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func BenchmarkHeartbeatWS(b *testing.B) {
	// The transport allows each user 20 calls/s (burst 60): a closed loop
	// over few users measures that limiter, not the server. So the calls
	// rotate over many students' sockets (each its own user) while a fixed
	// number are in flight at once (one per RunParallel goroutine): 200
	// students could not go past 200 × 20 = 4,000 calls/s.
	//
	// tutor=1 is the realistic case: a tutor's getExamSessions (all 1000
	// rows) re-runs and is pushed while the heartbeats land; tutor=0 shows
	// what that costs.
	for _, tc := range []struct{ students, inflight, tutors int }{{1000, 200, 1}, {1000, 32, 1}, {1000, 200, 0}} {
		benchHeartbeat(b, tc.students, tc.inflight, tc.tutors)
	}
}

// connPool hands out idle sockets, longest idle first.
type connPool chan *websocket.Conn

func newConnPool(conns []*websocket.Conn) connPool {
	p := make(connPool, len(conns))
	for _, c := range conns {
		p <- c
	}
	return p
}

func (p connPool) Get() *websocket.Conn  { return <-p }
func (p connPool) Put(c *websocket.Conn) { p <- c }

// benchHeartbeat sets up once, in the parent benchmark (the sub-benchmark's
// function runs once per b.N tried), then runs the sub-benchmark.
func benchHeartbeat(parent *testing.B, students, inflight, tutors int) {
	tutorUser := identity.User{ID: "bench-tutor", Role: identity.Tutor, Name: "Bench Tutor"}
	h := benchBoot(parent, []string{tutorUser.ID})
	conns := benchStudents(parent, h, students)
	var tutor *benchTutor
	if tutors > 0 {
		tutor = benchTutors(parent, h, []identity.User{tutorUser}, nil)[0]
	}
	pool := newConnPool(conns)
	var seq atomic.Int64 // unique answered_count per call, and call ids
	parent.Run(fmt.Sprintf("students=%d/inflight=%d/tutor=%d", students, inflight, tutors), func(b *testing.B) {
		runHeartbeat(b, pool, tutor, &seq, inflight)
	})
}

func runHeartbeat(b *testing.B, pool connPool, tutor *benchTutor, seq *atomic.Int64, inflight int) {
	var (
		mu             sync.Mutex
		lat            = make([]time.Duration, 0, 1<<16)
		errs           = map[string]int{}
		frames, nbytes int64
	)
	if tutor != nil {
		frames, nbytes = tutor.frames.Load(), tutor.bytes.Load()
	}
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((inflight + procs - 1) / procs)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		myLat := make([]time.Duration, 0, 1024)
		myErrs := map[string]int{}
		for pb.Next() {
			conn := pool.Get() // the longest-idle socket: calls spread over every user
			n := int(seq.Add(1))
			start := time.Now()
			code, err := benchCall(conn, "h"+strconv.Itoa(n), "proctoring.heartbeat", heartbeatArgs(n%100_000))
			d := time.Since(start)
			pool.Put(conn)
			switch {
			case err != nil:
				myErrs["io: "+err.Error()]++
			case code != "":
				myErrs[code]++
			default:
				myLat = append(myLat, d)
			}
		}
		mu.Lock()
		lat = append(lat, myLat...)
		for k, v := range myErrs {
			errs[k] += v
		}
		mu.Unlock()
	})
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "calls/s")
	b.ReportMetric(ms(benchPercentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(benchPercentile(lat, 0.99)), "p99-ms")
	if len(lat) > 0 {
		b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	}
	if tutor != nil {
		df := tutor.frames.Load() - frames
		b.ReportMetric(float64(df)/b.Elapsed().Seconds(), "tutor-frames/s")
		if df > 0 {
			b.ReportMetric(float64(tutor.bytes.Load()-nbytes)/float64(df)/1024, "KB/frame")
		}
		select {
		case <-tutor.closed:
			b.Fatalf("the tutor's socket closed during the run: %v", tutor.err)
		default:
		}
	}
	if len(errs) > 0 {
		// rate_limited here means the machine outran the per-user limiter
		// (20 calls/s × students): raise students.
		b.Fatalf("%d calls failed: %v", b.N-len(lat), errs)
	}
}

func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, n int) {
	users := make([]identity.User, n)
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("bench-tutor-%04d", i)
		users[i] = identity.User{ID: ids[i], Role: identity.Tutor, Name: "Tutor " + ids[i]}
	}
	h := benchBoot(b, ids)
	// One op is ≥ the engine's 5 ms window, so ≤ 200 heartbeats/s: rotating
	// over 16 students keeps each under the transport's 20 calls/s per user.
	students := benchStudents(b, h, 16)

	var (
		want    atomic.Pointer[[]byte]
		got     atomic.Int64
		allDone = make(chan struct{}, 1)
	)
	tutors := benchTutors(b, h, users, func(value []byte) {
		if m := want.Load(); m != nil && bytes.Contains(value, *m) && got.Add(1) == int64(n) {
			allDone <- struct{}{}
		}
	})
	// The students' answers are read (and checked) off the timed path.
	studentErr := make(chan string, 1)
	for _, student := range students {
		go func() {
			for {
				_, msg, err := student.ReadMessage()
				if err != nil {
					return
				}
				var f benchFrame
				if json.Unmarshal(msg, &f) != nil || f.Type != "result" {
					select {
					case studentErr <- string(msg):
					default:
					}
				}
			}
		}()
	}

	lat := make([]time.Duration, 0, 1024)
	i := 0
	for b.Loop() {
		i++
		m := []byte(`"answered_count":` + strconv.Itoa(i) + `,`)
		got.Store(0)
		want.Store(&m)
		start := time.Now()
		frame := `{"type":"call","id":"h` + strconv.Itoa(i) + `","fn":"proctoring.heartbeat","args":` + string(heartbeatArgs(i)) + `}`
		if err := students[i%len(students)].WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			b.Fatal(err)
		}
		select {
		case <-allDone:
		case msg := <-studentErr:
			b.Fatalf("heartbeat %d: %s", i, msg)
		case <-time.After(10 * time.Second):
			b.Fatalf("heartbeat %d: %d of %d tutors saw it within 10s", i, got.Load(), n)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(ms(benchPercentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(benchPercentile(lat, 0.99)), "p99-ms")
	for _, t := range tutors {
		select {
		case <-t.closed:
			b.Fatalf("a tutor's socket closed during the run: %v", t.err)
		default:
		}
	}
}
