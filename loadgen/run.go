package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// exam is one exam of this process's share: its students, its tutors'
// dashboards, its chat rooms and the projector showing its leaderboard.
type exam struct {
	index     int
	id, quiz  string
	tutorIDs  []string
	students  []*student
	tutors    []*watcher
	projector *watcher
	rooms     []*room
	watching  atomic.Int64 // tutors subscribed to its sessions
}

// room is an exam chat a student opened; the exam's tutors watch it.
type room struct {
	exam      *exam
	owner     *student
	sessionID string
	watchers  atomic.Int64
}

// control lets a parent process steer a child; nil in a single process.
type control struct {
	ready    func(ctx context.Context) error // setup done; returns when the measured phase may start
	progress func(r *Report)
	measured func() // the measured phase is over; the sockets are still open
	release  func() // returns when the sockets may close (all processes are done measuring)
}

type runner struct {
	cfg  Config
	log  io.Writer
	st   *stats
	ctl  *control
	base string
	ws   string

	http    *http.Client
	tokens  tokenSource
	dialers struct {
		student, watcher []*websocket.Dialer
	}

	exams       []*exam
	students    []*student
	byStudentID map[string]*student // read-only once the run starts
	tutors      []*watcher
	projectors  []*watcher
	rooms       []*room

	msgPrefix, scorePrefix string
	closing                atomic.Bool // we are closing the sockets: not an anomaly
	nextSrc                atomic.Int64
	server, self           *sampler
	serverNote             string
}

// Run puts the configured load on the server and returns what it measured.
// Progress lines go to log. It returns a report even when ctx ends during
// the measured phase (with the time measured so far), and an error.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	return run(ctx, cfg, log, nil)
}

func run(ctx context.Context, cfg Config, log io.Writer, ctl *control) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := newRunner(cfg, log, ctl)
	defer r.http.CloseIdleConnections()
	defer r.closeAll()

	setupStart := time.Now()
	setupCtx, cancel := context.WithTimeout(ctx, setupAllowance)
	defer cancel()
	if err := r.setup(setupCtx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	setup := time.Since(setupStart)
	r.logf("setup took %s: %d/%d students joined, %d/%d tutors watching; measuring for %s",
		setup.Round(time.Millisecond), r.st.studentsJoined.Load(), len(r.students),
		r.st.tutorsReady.Load(), len(r.tutors), cfg.Duration)
	if ctl != nil && ctl.ready != nil {
		if err := ctl.ready(ctx); err != nil { // the parent settles for all
			return nil, err
		}
	} else if cfg.Settle > 0 {
		r.logf("settling for %s", cfg.Settle)
		select {
		case <-time.After(cfg.Settle):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rep := r.measure(ctx)
	if ctl != nil && ctl.release != nil {
		ctl.release() // then closeAll
	}
	rep.SetupS = setup.Seconds()
	if ctx.Err() != nil {
		return rep, errors.New("interrupted: the figures cover the time measured so far")
	}
	return rep, nil
}

func newRunner(cfg Config, log io.Writer, ctl *control) *runner {
	base := strings.TrimRight(cfg.URL, "/")
	r := &runner{
		cfg: cfg, log: log, st: newStats(), ctl: ctl, base: base,
		ws:          "ws" + strings.TrimPrefix(base, "http") + "/ws",
		byStudentID: map[string]*student{},
		msgPrefix:   "lg-" + cfg.RunID + "-",
		scorePrefix: "lg" + cfg.RunID + "-",
	}
	r.http = &http.Client{Timeout: callTimeout, Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: setupWidth, IdleConnTimeout: 30 * time.Second,
	}}
	if cfg.Demo {
		r.tokens = demoTokens{base: base, client: r.http}
	} else {
		r.tokens = hs256{secret: []byte(cfg.JWTSecret), issuer: cfg.Issuer,
			exp: time.Now().Add(setupAllowance + cfg.Settle + cfg.Duration + 15*time.Minute)}
	}
	// Students get small buffers, lent from a pool only while writing: most
	// of their time is spent idle between heartbeats. Tutors read large frames.
	pool := &sync.Pool{}
	srcs := cfg.SourceAddrs
	if len(srcs) == 0 {
		srcs = []net.IP{nil}
	}
	for _, ip := range srcs {
		nd := &net.Dialer{Timeout: callTimeout}
		if ip != nil {
			nd.LocalAddr = &net.TCPAddr{IP: ip}
			nd.Control = bindNoPort
		}
		r.dialers.student = append(r.dialers.student, &websocket.Dialer{NetDialContext: nd.DialContext,
			HandshakeTimeout: callTimeout, ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: pool})
		r.dialers.watcher = append(r.dialers.watcher, &websocket.Dialer{NetDialContext: nd.DialContext,
			HandshakeTimeout: callTimeout, ReadBufferSize: 32 << 10, WriteBufferSize: 1024, WriteBufferPool: pool})
	}
	r.plan()
	return r
}

func (r *runner) logf(format string, a ...any) {
	if r.cfg.Child {
		return // the parent speaks for its children
	}
	fmt.Fprintf(r.log, "invigil load: "+format+"\n", a...)
}

// plan lays out this process's share: exams [lo, hi) of the run's, each with
// its students (students/exams of them), tutors and chat rooms.
func (r *runner) plan() {
	c := r.cfg
	seed := c.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	lo, hi := c.Shard*c.Exams/c.Shards, (c.Shard+1)*c.Exams/c.Shards
	rooms := 0
	if c.ChatRate > 0 {
		rooms = max(1, int(c.ChatRate/float64(c.Exams)/roomRate+0.999))
	}
	for i := lo; i < hi; i++ {
		e := &exam{index: i, id: fmt.Sprintf("load-%04d", i+1), quiz: fmt.Sprintf("L%s-%04d", c.RunID, i+1)}
		for t := range c.TutorsPerExam {
			e.tutorIDs = append(e.tutorIDs, fmt.Sprintf("load-%04d-t%d", i+1, t+1))
		}
		for j := i * c.Students / c.Exams; j < (i+1)*c.Students/c.Exams; j++ {
			s := &student{r: r, idx: j, id: fmt.Sprintf("load-s%06d", j+1), name: fmt.Sprintf("Load Student %06d", j+1),
				exam: e, rng: rand.New(rand.NewPCG(seed, uint64(j))), gone: make(chan struct{})}
			s.answered = 1 + s.rng.IntN(maxAnswered/2) // a fresh range per run
			e.students = append(e.students, s)
			r.students = append(r.students, s)
			r.byStudentID[s.id] = s
		}
		for k := range min(rooms, len(e.students)) {
			e.rooms = append(e.rooms, &room{exam: e, owner: e.students[k]})
		}
		r.exams = append(r.exams, e)
	}
}

// setup registers the exams, opens the tutors' dashboards and projectors,
// then the students' sockets, then the chat rooms.
func (r *runner) setup(ctx context.Context) error {
	r.server, r.serverNote = findServer(r.cfg)
	if err := r.registerExams(ctx); err != nil {
		return err
	}
	for _, e := range r.exams {
		for _, id := range e.tutorIDs {
			w := &watcher{r: r, tutor: true, userID: id, exam: e, subs: map[string]*sub{}, gone: make(chan struct{})}
			e.tutors = append(e.tutors, w)
			r.tutors = append(r.tutors, w)
		}
		if r.cfg.ScoresRate > 0 {
			e.projector = &watcher{r: r, exam: e, subs: map[string]*sub{}, gone: make(chan struct{}), seenNick: map[string]bool{}}
			r.projectors = append(r.projectors, e.projector)
		}
	}
	parallel(ctx, len(r.tutors), setupWidth, func(i int) { r.openTutor(ctx, r.tutors[i]) })
	parallel(ctx, len(r.projectors), setupWidth, func(i int) { r.openProjector(ctx, r.projectors[i]) })
	if len(r.tutors) > 0 && r.st.tutorsReady.Load() == 0 {
		return fmt.Errorf("no tutor could subscribe to its exam's sessions (errors: %v)%s", r.errorsOf(fnToken, fnConnect, fnSessions), r.authHint())
	}
	r.logf("%d/%d tutors watching; %d students joining…", r.st.tutorsReady.Load(), len(r.tutors), len(r.students))

	done := make(chan struct{})
	go r.setupProgress(ctx, done)
	start := time.Now()
	parallel(ctx, len(r.students), setupWidth, func(i int) {
		if r.cfg.Ramp > 0 {
			at := start.Add(time.Duration(int64(r.cfg.Ramp) * int64(i) / int64(len(r.students))))
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
				return
			}
		}
		r.openStudent(ctx, r.students[i])
	})
	close(done)
	if r.st.studentsJoined.Load() == 0 {
		return fmt.Errorf("no student could join (errors: %v)%s", r.errorsOf(fnToken, fnConnect, fnStart), r.authHint())
	}
	r.openRooms(ctx)
	return ctx.Err()
}

// authHint says what to check when the server refuses our tokens.
func (r *runner) authHint() string {
	if _, ok := r.st.fns[fnConnect].errs.Load("unauthenticated"); !ok || r.cfg.Demo {
		return ""
	}
	return fmt.Sprintf(": tokens are signed with --jwt-secret and carry iss %q (--issuer): are they the server's SUPABASE_JWT_SECRET and SUPABASE_JWT_ISSUER?", r.cfg.Issuer)
}

// errorsOf lists the error codes of fns so far, for a setup failure.
func (r *runner) errorsOf(fns ...string) map[string]int64 {
	out := map[string]int64{}
	for _, fn := range fns {
		r.st.fns[fn].errs.Range(func(k, v any) bool {
			out[fn+" "+k.(string)] += v.(*atomic.Int64).Load()
			return true
		})
	}
	return out
}

func (r *runner) setupProgress(ctx context.Context, done chan struct{}) {
	if r.cfg.Progress <= 0 {
		return
	}
	t := time.NewTicker(r.cfg.Progress)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			if r.ctl != nil && r.ctl.progress != nil {
				r.ctl.progress(r.snapshot(0))
				continue
			}
			r.logf("setup: %d/%d students joined, %d errors", r.st.studentsJoined.Load(), len(r.students), r.errorCount())
		}
	}
}

func (r *runner) errorCount() int64 {
	var n int64
	for _, f := range r.st.fns {
		f.errs.Range(func(_, v any) bool {
			n += v.(*atomic.Int64).Load()
			return true
		})
	}
	return n
}

// parallel runs f(0..n-1) on at most width goroutines, until ctx ends.
func parallel(ctx context.Context, n, width int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, width) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// registerExams sends each exam of this share to /hooks/exams, open, with
// its tutors; any student may join. A refusal stops the run: without its
// exams every join would fail.
func (r *runner) registerExams(ctx context.Context) error {
	var (
		mu    sync.Mutex
		first error
	)
	parallel(ctx, len(r.exams), 8, func(i int) {
		e := r.exams[i]
		body, _ := json.Marshal(map[string]any{
			"exam_id": e.id, "title": "invigil load " + e.id, "tutor_ids": append([]string{}, e.tutorIDs...),
			"status": "open", "quiz_code": e.quiz,
		})
		r.st.attempt(fnHookExams)
		start := time.Now()
		code, detail := postHook(ctx, r.http, r.base, r.cfg.WebhookSecret, "/hooks/exams",
			fmt.Sprintf("load-%s-exam-%s", r.cfg.RunID, e.id), body)
		r.st.done(fnHookExams, code, time.Since(start))
		if code != "" {
			mu.Lock()
			if first == nil {
				first = fmt.Errorf("register exam %s through /hooks/exams: %s %s (is --webhook-secret the server's INVIGIL_WEBHOOK_SECRET?)", e.id, code, detail)
			}
			mu.Unlock()
		}
	})
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// dial opens /ws from the next source address, and authenticates when
// token is not empty. It returns the error code for the stats, or "".
func (r *runner) dial(ctx context.Context, dialers []*websocket.Dialer, i int, token string) (*websocket.Conn, string) {
	r.st.attempt(fnConnect)
	start := time.Now()
	conn, res, err := dialers[i%len(dialers)].DialContext(ctx, r.ws, nil)
	if err != nil {
		code := dialCode(err, res)
		r.st.done(fnConnect, code, 0)
		return nil, code
	}
	if token != "" {
		if code := authenticate(conn, token); code != "" {
			conn.Close()
			r.st.done(fnConnect, code, 0)
			return nil, code
		}
	}
	r.st.done(fnConnect, "", time.Since(start))
	return conn, ""
}

// dialCode names why a socket did not open: the limits a large run meets
// first are descriptors and ports, on either side.
func dialCode(err error, res *http.Response) string {
	var ne net.Error
	switch {
	case res != nil:
		return fmt.Sprintf("http_%d", res.StatusCode)
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "dial_too_many_open_files"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "dial_no_free_port"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "dial_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "dial_reset"
	case errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	}
	return errDial
}

// authenticate sends auth and reads the answer: "" when authed, else the
// server's error code.
func authenticate(conn *websocket.Conn, token string) string {
	b, _ := json.Marshal(map[string]string{"type": "auth", "token": token})
	conn.SetWriteDeadline(time.Now().Add(callTimeout))
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return errIO
	}
	conn.SetReadDeadline(time.Now().Add(callTimeout))
	defer conn.SetReadDeadline(time.Time{})
	_, msg, err := conn.ReadMessage()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errTimeout
		}
		return errIO
	}
	f, err := parseFrame(msg)
	switch {
	case err != nil:
		return "unreadable_frame"
	case f.Type == "authed":
		return ""
	case f.Code != "":
		return f.Code
	}
	return "unexpected_" + f.Type
}

func (r *runner) token(ctx context.Context, userID, role, name string) (string, bool) {
	if !r.cfg.Demo {
		tok, err := r.tokens.Token(ctx, userID, role, name)
		return tok, err == nil
	}
	r.st.attempt(fnToken)
	start := time.Now()
	tok, err := r.tokens.Token(ctx, userID, role, name)
	if err != nil {
		code := errIO
		if m := strings.Fields(err.Error()); len(m) > 2 && m[0] == "POST" {
			code = "http_" + strings.TrimSuffix(m[2], ":")
		}
		r.st.done(fnToken, code, 0)
		return "", false
	}
	r.st.done(fnToken, "", time.Since(start))
	return tok, true
}

func (r *runner) openTutor(ctx context.Context, w *watcher) {
	tok, ok := r.token(ctx, w.userID, "tutor", "Load Tutor "+strings.TrimPrefix(w.userID, "load-"))
	if !ok {
		return
	}
	conn, code := r.dial(ctx, r.dialers.watcher, int(r.nextSrc.Add(1)), tok)
	if code != "" {
		return
	}
	w.conn = conn
	r.st.tutorsOpen.Add(1)
	go w.read()
	s, err := w.subscribe("s", fnSessions, map[string]string{"exam_id": w.exam.id}, NewRows(), sessionsChanged)
	if err != nil || w.await(s, callTimeout) != "" {
		return
	}
	w.ready.Store(true)
	r.st.tutorsReady.Add(1)
	w.exam.watching.Add(1)
}

func (r *runner) openProjector(ctx context.Context, w *watcher) {
	conn, code := r.dial(ctx, r.dialers.watcher, int(r.nextSrc.Add(1)), "")
	if code != "" {
		return
	}
	w.conn = conn
	r.st.projectorsOpen.Add(1)
	go w.read()
	s, err := w.subscribe("lb", fnLeaderboard, map[string]any{"quiz_code": w.exam.quiz, "limit": 10},
		NewRowsBy("_id", "nickname"), leaderboardChanged)
	if err != nil || w.await(s, callTimeout) != "" {
		return
	}
	w.ready.Store(true)
	r.st.projectorsReady.Add(1)
}

func (r *runner) openStudent(ctx context.Context, s *student) {
	tok, ok := r.token(ctx, s.id, "student", s.name)
	if !ok {
		return
	}
	conn, code := r.dial(ctx, r.dialers.student, s.idx, tok)
	if code != "" {
		return
	}
	s.conn = conn
	r.st.studentsOpen.Add(1)
	go s.read()
	if code, _ := s.callWait(ctx, fnStart, []byte(`{"exam_id":"`+s.exam.id+`"}`)); code == "" {
		r.st.studentsJoined.Add(1)
	}
}

// openRooms has each room's owner start an exam chat and the exam's tutors
// subscribe to its messages.
func (r *runner) openRooms(ctx context.Context) {
	for _, e := range r.exams {
		r.rooms = append(r.rooms, e.rooms...)
	}
	parallel(ctx, len(r.rooms), setupWidth, func(i int) {
		rm := r.rooms[i]
		if rm.owner.conn == nil {
			return
		}
		code, v := rm.owner.callWait(ctx, fnStartChat, []byte(`{"scope":"exam","exam_id":"`+rm.exam.id+`"}`))
		if code != "" {
			return
		}
		rm.sessionID = str(field(v, "_id"))
	})
	var wg sync.WaitGroup
	for _, e := range r.exams {
		for _, w := range e.tutors {
			if w.conn == nil {
				continue
			}
			wg.Go(func() {
				for k, rm := range e.rooms {
					if rm.sessionID == "" {
						continue
					}
					s, err := w.subscribe("m"+strconv.Itoa(k), fnMessages, map[string]string{"session_id": rm.sessionID}, NewRows(), messagesChanged)
					if err == nil && w.await(s, callTimeout) == "" {
						w.mu.Lock()
						w.watched = append(w.watched, rm)
						w.mu.Unlock()
						rm.watchers.Add(1)
						w.rooms.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
}

// findServer finds the process to sample: --server-pid, else the listener
// on the target's port when the target is this machine. Without one it
// says why.
func findServer(cfg Config) (*sampler, string) {
	pid := cfg.ServerPID
	if pid < 0 {
		return nil, ""
	}
	if pid == 0 {
		u, _ := url.Parse(cfg.URL)
		if !isLoopbackHost(u.Hostname()) {
			return nil, "not on this machine: no CPU or RSS"
		}
		port, _ := strconv.Atoi(u.Port())
		if port == 0 {
			port = map[string]int{"http": 80, "https": 443}[u.Scheme]
		}
		var err error
		if pid, err = findListener(port); err != nil {
			return nil, err.Error()
		}
	}
	s, err := newSampler(pid)
	if err != nil {
		return nil, fmt.Sprintf("pid %d: %v", pid, err)
	}
	return s, ""
}

// closeAll closes every socket, telling the readers it is on purpose.
func (r *runner) closeAll() {
	r.closing.Store(true)
	for _, s := range r.students {
		if s.conn != nil {
			s.conn.Close()
		}
	}
	for _, w := range append(r.tutors, r.projectors...) {
		if w.conn != nil {
			w.conn.Close()
		}
	}
}
