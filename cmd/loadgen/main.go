// Command loadgen puts a proctoring load on a running invigil in --demo mode
// and reports what students and tutors experienced.
//
//	go run . --demo --demo-students 0                       # the target, elsewhere
//	go run ./cmd/loadgen -students 100 -interval 10s -duration 60s
//
// Each simulated student opens its own WebSocket, authenticates with a token
// from POST /demo/token, calls proctoring.startSession, then heartbeats every
// interval (±10 % jitter) and now and then logs a violation, timing every
// call's round trip. Each tutor subscribes to proctoring.getExamSessions and
// times how long a heartbeat takes to show on its screen: every heartbeat
// carries a fresh answered_count, so the tutor can tell which one it sees.
//
// It boots nothing, talks only to loopback addresses, stops by itself after
// -duration, and exits non-zero when more than 5 % of calls failed.
//
// The server refuses heartbeats closer than INVIGIL_HEARTBEAT_MIN_INTERVAL
// (5 s by default): for intervals under ~6 s start it with a smaller one.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Config is one load run.
type Config struct {
	URL       string        // the invigil to load; loopback only
	Students  int           // simulated students, each with its own socket
	Tutors    int           // tutor sockets watching the exam's sessions
	Interval  time.Duration // between a student's heartbeats
	Duration  time.Duration // of the measured phase (setup comes before it)
	Exam      string        // exam id; the demo's is "demo"
	TutorID   string        // user id the tutors sign in as (must be a tutor of Exam)
	Violation float64       // chance per tick that a student also logs a violation
	Seed      uint64        // for jitter and violations; 0 is random
}

// Limits keep a run bounded.
const (
	MaxStudents  = 20_000
	MaxTutors    = 500
	MaxDuration  = 30 * time.Minute
	MinInterval  = 100 * time.Millisecond // the server's per-user call budget is 20/s
	callTimeout  = 10 * time.Second
	setupTimeout = 2 * time.Minute
)

// Validate checks the flags and that the target is on this machine.
func (c Config) Validate() error {
	if err := checkLoopback(c.URL); err != nil {
		return err
	}
	switch {
	case c.Students < 1 || c.Students > MaxStudents:
		return fmt.Errorf("-students must be between 1 and %d", MaxStudents)
	case c.Tutors < 0 || c.Tutors > MaxTutors:
		return fmt.Errorf("-tutors must be between 0 and %d", MaxTutors)
	case c.Interval < MinInterval || c.Interval > 10*time.Minute:
		return fmt.Errorf("-interval must be between %s and 10m", MinInterval)
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("-duration must be positive and at most %s", MaxDuration)
	case c.Exam == "":
		return errors.New("-exam is required")
	case c.Violation < 0 || c.Violation > 1:
		return errors.New("-violations is a probability between 0 and 1")
	}
	return nil
}

// checkLoopback refuses any target that is not this machine.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("-url must be http(s)://, got %q", raw)
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
		return nil
	}
	return fmt.Errorf("-url %q: loadgen only targets loopback (127.0.0.1, localhost, ::1)", raw)
}

func main() {
	var c Config
	flag.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "invigil base URL (loopback only; the server must run with --demo)")
	flag.IntVar(&c.Students, "students", 100, "simulated students")
	flag.IntVar(&c.Tutors, "tutors", 5, "tutor sockets watching the exam")
	flag.DurationVar(&c.Interval, "interval", 10*time.Second, "heartbeat interval per student (±10% jitter)")
	flag.DurationVar(&c.Duration, "duration", 60*time.Second, "measured run time (at most 30m)")
	flag.StringVar(&c.Exam, "exam", "demo", "exam id")
	flag.StringVar(&c.TutorID, "tutor-id", "tutor-1", "user id the tutors sign in as (a tutor of -exam)")
	flag.Float64Var(&c.Violation, "violations", 0.02, "chance per tick that a student logs a violation")
	flag.Parse()
	if err := c.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "loadgen: %d students every %s, %d tutors, %s against %s (exam %q)\n",
		c.Students, c.Interval, c.Tutors, c.Duration, c.URL, c.Exam)
	r, err := Run(ctx, c, os.Stderr)
	if r != nil {
		r.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if r.ErrorPct() > 5 {
		fmt.Fprintf(os.Stderr, "loadgen: %.2f%% of calls failed (limit 5%%)\n", r.ErrorPct())
		os.Exit(1)
	}
}

// Report is what a run measured.
type Report struct {
	Config      Config
	Setup       time.Duration // connecting, authenticating and starting sessions
	Elapsed     time.Duration // the measured phase
	Calls       map[string]int64
	Errors      map[string]int64 // by code ("io", "timeout", "dial", … for transport failures)
	Heartbeat   []time.Duration  // round trips of successful heartbeats, sorted
	Visibility  []time.Duration  // heartbeat send → a tutor sees it, sorted
	TutorFrames int64
	TutorBytes  int64
}

// TotalCalls counts every call attempted, setup included.
func (r *Report) TotalCalls() int64 {
	var n int64
	for _, v := range r.Calls {
		n += v
	}
	return n
}

// TotalErrors counts every failure.
func (r *Report) TotalErrors() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// ErrorPct is failed calls as a percentage of attempted ones.
func (r *Report) ErrorPct() float64 {
	if n := r.TotalCalls(); n > 0 {
		return 100 * float64(r.TotalErrors()) / float64(n)
	}
	return 0
}

// Pct returns a percentile of sorted durations.
func Pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func msStr(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + " ms"
}

// Print writes the summary.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "\ninvigil load: %d students every %s, %d tutors, exam %q, %s measured (setup %s)\n",
		c.Students, c.Interval, c.Tutors, c.Exam, r.Elapsed.Round(time.Millisecond), r.Setup.Round(time.Millisecond))
	fns := make([]string, 0, len(r.Calls))
	for fn := range r.Calls {
		fns = append(fns, fn)
	}
	sort.Strings(fns)
	parts := make([]string, len(fns))
	for i, fn := range fns {
		parts[i] = fmt.Sprintf("%s %d", fn, r.Calls[fn])
	}
	fmt.Fprintf(w, "  calls            %d (%s)\n", r.TotalCalls(), strings.Join(parts, ", "))
	codes := make([]string, 0, len(r.Errors))
	for code, n := range r.Errors {
		codes = append(codes, fmt.Sprintf("%s %d", code, n))
	}
	sort.Strings(codes)
	if len(codes) == 0 {
		codes = []string{"none"}
	}
	fmt.Fprintf(w, "  errors           %d (%s)\n", r.TotalErrors(), strings.Join(codes, ", "))
	fmt.Fprintf(w, "  error rate       %.3f%%\n", r.ErrorPct())
	h := r.Heartbeat
	fmt.Fprintf(w, "  heartbeat RTT    p50 %s  p90 %s  p99 %s  max %s  (%d ok)\n",
		msStr(Pct(h, .50)), msStr(Pct(h, .90)), msStr(Pct(h, .99)), msStr(Pct(h, 1)), len(h))
	v := r.Visibility
	fmt.Fprintf(w, "  tutor visibility p50 %s  p99 %s  max %s  (%d sightings, %d frames, %.1f KB/frame)\n",
		msStr(Pct(v, .50)), msStr(Pct(v, .99)), msStr(Pct(v, 1)), len(v), r.TutorFrames,
		float64(r.TutorBytes)/float64(max(1, r.TutorFrames))/1024)
	if secs := r.Elapsed.Seconds(); secs > 0 {
		ok := int64(len(h))
		fmt.Fprintf(w, "  throughput       %.1f heartbeats/s ok, %.1f calls/s\n", float64(ok)/secs,
			float64(r.TotalCalls()-r.Calls["proctoring.startSession"])/secs)
	}
}

// run state shared by students and tutors.
type runner struct {
	cfg    Config
	wsURL  string
	client *http.Client

	mu     sync.Mutex
	calls  map[string]int64
	errs   map[string]int64
	hbLat  []time.Duration
	visLat []time.Duration

	byID        map[string]*student // read-only once tutors read
	tutorFrames atomic.Int64
	tutorBytes  atomic.Int64
}

func (r *runner) count(fn, code string, lat time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[fn]++
	if code != "" {
		r.errs[code]++
	} else if fn == "proctoring.heartbeat" {
		r.hbLat = append(r.hbLat, lat)
	}
}

// Run sets up the sockets, runs the load for cfg.Duration and returns what
// it measured. Progress notes go to logw.
func Run(ctx context.Context, cfg Config, logw io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TutorID == "" {
		cfg.TutorID = "tutor-1"
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	base := strings.TrimRight(cfg.URL, "/")
	r := &runner{
		cfg: cfg, wsURL: "ws" + strings.TrimPrefix(base, "http") + "/ws",
		client: &http.Client{Timeout: callTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		calls:  map[string]int64{}, errs: map[string]int64{}, byID: map[string]*student{},
	}
	defer r.client.CloseIdleConnections()
	rep := &Report{Config: cfg}

	setupStart := time.Now()
	setupCtx, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()

	// Tutors first, so that they see every heartbeat.
	students := make([]*student, cfg.Students)
	for i := range students {
		s := &student{r: r, id: fmt.Sprintf("lg-%05d", i+1), name: fmt.Sprintf("LG Student %05d", i+1),
			rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i))), sent: map[int]time.Time{}}
		s.seq = 1 + s.rng.IntN(50_000) // a fresh answered_count range per run
		students[i] = s
		r.byID[s.id] = s
	}
	tutors := make([]*tutor, cfg.Tutors)
	err := parallel(setupCtx, cfg.Tutors, 16, func(i int) error {
		t, err := r.openTutor(setupCtx, i)
		tutors[i] = t
		return err
	})
	defer func() {
		for _, t := range tutors {
			if t != nil {
				t.conn.Close()
			}
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("tutor setup: %w", err)
	}
	// Students arrive spread over one interval, so that their heartbeats
	// are spread over it too (a session's start counts as a heartbeat).
	fmt.Fprintf(logw, "loadgen: %d tutors watching; %d students joining over %s…\n", cfg.Tutors, cfg.Students, cfg.Interval)
	var (
		joined sync.WaitGroup
		slots  = make(chan struct{}, 64)
	)
	for i, s := range students {
		at := setupStart.Add(time.Duration(int64(cfg.Interval) * int64(i) / int64(cfg.Students)))
		select {
		case <-time.After(time.Until(at)):
		case <-setupCtx.Done():
		}
		if setupCtx.Err() != nil {
			break
		}
		slots <- struct{}{}
		joined.Go(func() {
			defer func() { <-slots }()
			s.open(setupCtx) // failures are counted as failed startSession calls
		})
	}
	joined.Wait()
	defer func() {
		for _, s := range students {
			if s.conn != nil {
				s.conn.Close()
			}
		}
	}()
	rep.Setup = time.Since(setupStart)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	fmt.Fprintf(logw, "loadgen: setup took %s; running for %s\n", rep.Setup.Round(time.Millisecond), cfg.Duration)

	// The measured phase.
	start := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range students {
		if s.conn != nil {
			wg.Go(func() { s.run(runCtx, start) })
		} else if s.in == nil && setupCtx.Err() != nil {
			r.count("proctoring.startSession", "setup_timeout", 0)
		}
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	// Give the tutors a moment to see the last heartbeats.
	select {
	case <-time.After(200 * time.Millisecond):
	case <-ctx.Done():
	}
	for _, t := range tutors {
		select {
		case <-t.done:
			r.count("tutor.subscribe", "tutor_socket_closed", 0)
		default:
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Calls, rep.Errors = r.calls, r.errs
	rep.Heartbeat, rep.Visibility = r.hbLat, r.visLat
	slices.Sort(rep.Heartbeat)
	slices.Sort(rep.Visibility)
	rep.TutorFrames, rep.TutorBytes = r.tutorFrames.Load(), r.tutorBytes.Load()
	return rep, nil
}

// parallel runs f(0..n-1) on at most width goroutines; the first error
// stops new starts and is returned.
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range min(n, width) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// token gets a dev token from the demo's sign-in endpoint.
func (r *runner) token(ctx context.Context, userID, role, name string) (string, error) {
	body, _ := json.Marshal(map[string]string{"user_id": userID, "role": role, "name": name})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(r.cfg.URL, "/")+"/demo/token", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := r.client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /demo/token: %d %s (is the server running with --demo?)", res.StatusCode, b)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("POST /demo/token: unexpected body %q", b)
	}
	return out.Token, nil
}

// frame is the part of a server frame loadgen reads.
type frame struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

var dialer = &websocket.Dialer{HandshakeTimeout: callTimeout, Proxy: nil}

// dial opens /ws and authenticates.
func (r *runner) dial(ctx context.Context, token string) (*websocket.Conn, error) {
	conn, _, err := dialer.DialContext(ctx, r.wsURL, nil)
	if err != nil {
		return nil, err
	}
	conn.SetReadDeadline(time.Now().Add(callTimeout))
	if err := conn.WriteJSON(map[string]string{"type": "auth", "token": token}); err != nil {
		conn.Close()
		return nil, err
	}
	var f frame
	if err := conn.ReadJSON(&f); err != nil {
		conn.Close()
		return nil, err
	}
	if f.Type != "authed" {
		conn.Close()
		return nil, fmt.Errorf("auth: %s %s", f.Code, f.Message)
	}
	conn.SetReadDeadline(time.Time{})
	return conn, nil
}

// tutor is a socket subscribed to the exam's sessions.
type tutor struct {
	r    *runner
	conn *websocket.Conn
	seen map[string]int // student id → last answered_count seen
	done chan struct{}
}

func (r *runner) openTutor(ctx context.Context, i int) (*tutor, error) {
	tok, err := r.token(ctx, r.cfg.TutorID, "tutor", fmt.Sprintf("Loadgen Tutor %d", i+1))
	if err != nil {
		return nil, err
	}
	conn, err := r.dial(ctx, tok)
	if err != nil {
		return nil, err
	}
	t := &tutor{r: r, conn: conn, seen: map[string]int{}, done: make(chan struct{})}
	sub, _ := json.Marshal(map[string]any{"type": "sub", "id": "q1", "query": "proctoring.getExamSessions",
		"args": map[string]string{"exam_id": r.cfg.Exam}})
	if err := conn.WriteMessage(websocket.TextMessage, sub); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetReadDeadline(time.Now().Add(callTimeout))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if !bytes.HasPrefix(msg, dataPrefix) {
		conn.Close()
		return nil, fmt.Errorf("subscribe to %s as %s: %.300s", r.cfg.Exam, r.cfg.TutorID, msg)
	}
	conn.SetReadDeadline(time.Time{})
	t.observe(msg[len(dataPrefix):], time.Now(), false)
	go t.read()
	return t, nil
}

var (
	dataPrefix = []byte(`{"type":"data","id":"q1","value":`)
	kStudent   = []byte(`"student_id":"`)
	kAnswered  = []byte(`"answered_count":`)
)

func (t *tutor) read() {
	defer close(t.done)
	var buf bytes.Buffer
	for {
		_, rd, err := t.conn.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(rd); err != nil {
			return
		}
		now := time.Now()
		msg := buf.Bytes()
		t.r.tutorFrames.Add(1)
		t.r.tutorBytes.Add(int64(len(msg)))
		if bytes.HasPrefix(msg, dataPrefix) {
			t.observe(msg[len(dataPrefix):], now, true)
		}
	}
}

// observe scans a getExamSessions value for answered_count changes and
// times those it can match to a heartbeat's send. The scan leans on the
// encoder's field order (student_id before answered_count) and on keys
// never appearing unescaped inside string values; it decodes nothing else,
// so that the load generator spends its CPU on sockets, not JSON.
func (t *tutor) observe(v []byte, now time.Time, measure bool) {
	var delays []time.Duration
	for {
		i := bytes.Index(v, kStudent)
		if i < 0 {
			break
		}
		v = v[i+len(kStudent):]
		j := bytes.IndexByte(v, '"')
		if j < 0 {
			break
		}
		id := v[:j]
		v = v[j:]
		k := bytes.Index(v, kAnswered)
		if k < 0 {
			break
		}
		v = v[k+len(kAnswered):]
		n := 0
		for len(v) > 0 && v[0] >= '0' && v[0] <= '9' {
			n = n*10 + int(v[0]-'0')
			v = v[1:]
		}
		s := t.r.byID[string(id)]
		if s == nil {
			continue // not one of ours
		}
		if last, ok := t.seen[s.id]; ok && last == n {
			continue
		}
		t.seen[s.id] = n
		if !measure {
			continue
		}
		s.mu.Lock()
		sent, ok := s.sent[n]
		s.mu.Unlock()
		if ok {
			delays = append(delays, now.Sub(sent))
		}
	}
	if len(delays) > 0 {
		t.r.mu.Lock()
		t.r.visLat = append(t.r.visLat, delays...)
		t.r.mu.Unlock()
	}
}

// student is one simulated student with its own socket.
type student struct {
	r      *runner
	id     string
	name   string
	rng    *rand.Rand
	conn   *websocket.Conn
	in     chan frame // answers, from the reader goroutine
	gone   chan struct{}
	n      int       // call ids
	joined time.Time // when startSession answered

	mu   sync.Mutex
	seq  int               // the next answered_count
	sent map[int]time.Time // answered_count → when its heartbeat was sent
}

var violationTypes = []string{"tab_hidden", "window_blur", "fullscreen_exit", "copy", "paste", "context_menu"}

// open signs in, connects and starts the session; a failure is counted as
// a failed startSession.
func (s *student) open(ctx context.Context) {
	const fn = "proctoring.startSession"
	tok, err := s.r.token(ctx, s.id, "student", s.name)
	if err != nil {
		s.r.count(fn, "token", 0)
		return
	}
	conn, err := s.r.dial(ctx, tok)
	if err != nil {
		s.r.count(fn, "dial", 0)
		return
	}
	s.conn, s.in, s.gone = conn, make(chan frame, 4), make(chan struct{})
	go s.read()
	if code, _ := s.call(fn, map[string]any{"exam_id": s.r.cfg.Exam}); code != "" {
		conn.Close()
		s.conn = nil
	}
	s.joined = time.Now()
}

func (s *student) read() {
	defer close(s.gone)
	for {
		_, msg, err := s.conn.ReadMessage()
		if err != nil {
			return
		}
		var f frame
		if json.Unmarshal(msg, &f) == nil && (f.Type == "result" || f.Type == "error") {
			s.in <- f
		}
	}
}

// call sends one call and waits for its answer; it counts the outcome and
// returns the error code ("" on success) and the round trip.
func (s *student) call(fn string, args any) (string, time.Duration) {
	s.n++
	id := "c" + strconv.Itoa(s.n)
	b, _ := json.Marshal(map[string]any{"type": "call", "id": id, "fn": fn, "args": args})
	start := time.Now()
	code := s.exchange(id, b)
	d := time.Since(start)
	s.r.count(fn, code, d)
	return code, d
}

func (s *student) exchange(id string, b []byte) string {
	s.conn.SetWriteDeadline(time.Now().Add(callTimeout))
	if err := s.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return "io"
	}
	timeout := time.NewTimer(callTimeout)
	defer timeout.Stop()
	for {
		select {
		case f := <-s.in:
			if f.ID != id {
				continue // a late answer to a call that timed out
			}
			if f.Type == "error" {
				if f.Code == "" {
					return "error"
				}
				return f.Code
			}
			return ""
		case <-s.gone:
			return "io"
		case <-timeout.C:
			return "timeout"
		}
	}
}

// run heartbeats until ctx ends, every interval ±10 % after joining (the
// first one inside the measured phase, which starts at start).
func (s *student) run(ctx context.Context, start time.Time) {
	iv := s.r.cfg.Interval
	next := s.joined.Add(iv + time.Duration((s.rng.Float64()*0.2-0.1)*float64(iv)))
	for next.Before(start) {
		next = next.Add(iv)
	}
	for {
		wait := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			wait.Stop()
			return
		case <-wait.C:
		}
		if s.rng.Float64() < s.r.cfg.Violation {
			s.call("proctoring.logViolation", map[string]any{
				"exam_id": s.r.cfg.Exam, "type": violationTypes[s.rng.IntN(len(violationTypes))],
				"detail": "loadgen", "client_ts": time.Now().UTC().Format(time.RFC3339Nano),
			})
		}
		s.mu.Lock()
		n := s.seq
		s.seq++
		sent := time.Now()
		s.sent[n] = sent
		s.mu.Unlock()
		code, _ := s.call("proctoring.heartbeat", map[string]any{
			"exam_id": s.r.cfg.Exam, "current_question": n % 50, "answered_count": n,
			"network": map[string]any{"rtt_ms": 20 + s.rng.IntN(100), "effective_type": "4g"},
		})
		if code == "io" {
			return // the socket is gone; every later call would fail the same way
		}
		next = next.Add(iv + time.Duration((s.rng.Float64()*0.2-0.1)*float64(iv)))
		// Behind schedule (a slow call): no catch-up burst, and never closer
		// than 90 % of the interval to the last send.
		if floor := sent.Add(iv * 9 / 10); next.Before(floor) {
			next = floor
		}
	}
}
