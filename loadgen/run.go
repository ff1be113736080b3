package loadgen

import (
	"context"
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
		rooms = roomsPerExam(c.ChatRate, c.Exams)
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
