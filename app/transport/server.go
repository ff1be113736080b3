// Package transport puts the engine on the wire: the WebSocket protocol on
// /ws (melody), the HTTP API, the signed Supabase hooks, health and metrics,
// and the static pages (echo). It knows the engine and the contract's
// frames, not the features nor the store: functions, queries and hook
// handlers are registered by name, and health comes in as a function.
package transport

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/labstack/echo/v4"
	"github.com/olahol/melody"

	"invigil/app/engine"
	"invigil/app/identity"
	"invigil/app/metrics"
	"invigil/app/ratelimit"
)

// Verifier checks an access token (auth.Verifier in production).
type Verifier interface {
	Verify(ctx context.Context, token string) (identity.User, time.Time, error)
}

// HookVerifier checks a signed hook delivery and returns its webhook id.
type HookVerifier interface {
	Verify(h http.Header, body []byte) (string, error)
}

// HookHandler applies a verified hook delivery; it must make a replayed
// webhook id change nothing.
type HookHandler func(ctx context.Context, hookID string, body []byte) error

// AdminHandler answers a read-only admin endpoint with a JSON value.
type AdminHandler func(ctx context.Context) (any, error)

// Options configures a Server.
type Options struct {
	Engine   *engine.Engine
	Verifier Verifier
	Hooks    map[string]HookHandler // by path under /hooks/, e.g. "exams"
	HookAuth HookVerifier           // nil: hooks are refused
	// Backlog is how full the store's writer queue is, 0 to 1 (overload
	// control sheds new work past half); nil is never full.
	Backlog func() float64
	// Health reports whether the service can serve (the database answers
	// reads and writes); nil is always healthy.
	Health func(ctx context.Context) error
	// AllowedOrigins for /ws; empty means the page's own origin only.
	AllowedOrigins []string
	// Static is served under /static/; Pages maps routes to files in it.
	Static fs.FS
	Pages  map[string]string
	// Extend registers extra routes (the demo's sign-in).
	Extend func(e *echo.Echo)
	// Admin are read-only endpoints for admins (a token with role admin):
	// GET /api/admin/{name}.
	Admin map[string]AdminHandler

	Metrics      *metrics.Metrics // nil: a private set
	MetricsToken string           // when set, /metrics wants it as a bearer token
	Pprof        bool             // serve /debug/pprof/ (behind MetricsToken)

	Clock  clockwork.Clock
	Logger *slog.Logger

	AuthTimeout       time.Duration // first auth or public sub within this; default 10 s
	DisconnectAfter   time.Duration // pong wait; pings go at a third of it; default 25 s
	MaxFrameBytes     int           // larger frames get too_large; default 64 KiB
	SendQueueBytes    int           // bytes a socket may have waiting before it is closed; default 4 MiB
	MaxSubs           int           // subscriptions per socket; default 200
	CallRate          float64       // calls per second per user, sustained; default 20
	CallBurst         float64       // default 60
	SubRate           float64       // subscriptions and HTTP queries per second per user; default 20
	SubBurst          float64       // default 200 (a reconnect re-subscribes everything at once)
	MaxSocketsPerUser int           // sockets one user may have open; default 10
	ReadHeaderTimeout time.Duration // default 10 s
	IdleTimeout       time.Duration // keep-alive connections idle this long are closed; default 120 s
	DrainTimeout      time.Duration // Shutdown waits this long for queued frames; default 5 s
	WriteTimeout      time.Duration // a socket write blocked this long closes it (client too slow); default 10 s
	StallLag          time.Duration // the process this late on a 100 ms tick is past capacity; default 250 ms
}

// Server is the HTTP and WebSocket front of invigil.
type Server struct {
	opts    Options
	echo    *echo.Echo
	mel     *melody.Melody
	log     *slog.Logger
	clock   clockwork.Clock
	load    *loadMonitor
	limits  *ratelimit.Limiter // calls per user
	reads   *ratelimit.Limiter // subscriptions and queries per user (or per address when anonymous)
	metrics *metrics.Metrics

	nextConn    atomic.Uint64
	queuedBytes atomic.Int64
	sentBytes   atomic.Int64
	connsMu     sync.Mutex
	conns       map[uint64]*wsConn
	byUser      map[string]int // authenticated sockets per user
	httpSrv     *http.Server
	stopping    bool // Shutdown has begun: a later Serve returns at once
}

// New builds the server and its routes.
func New(opts Options) *Server {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	setDefault(&opts.AuthTimeout, 10*time.Second)
	setDefault(&opts.DisconnectAfter, 25*time.Second)
	setDefault(&opts.MaxFrameBytes, 64<<10)
	setDefault(&opts.SendQueueBytes, 4<<20)
	setDefault(&opts.MaxSubs, 200)
	setDefault(&opts.CallRate, 20)
	setDefault(&opts.CallBurst, 60)
	setDefault(&opts.SubRate, 20)
	setDefault(&opts.SubBurst, 200)
	setDefault(&opts.MaxSocketsPerUser, 10)
	setDefault(&opts.ReadHeaderTimeout, 10*time.Second)
	setDefault(&opts.IdleTimeout, 120*time.Second)
	setDefault(&opts.DrainTimeout, 5*time.Second)
	setDefault(&opts.WriteTimeout, 10*time.Second)
	setDefault(&opts.StallLag, 250*time.Millisecond)
	s := &Server{
		opts: opts, log: opts.Logger, clock: opts.Clock, metrics: opts.Metrics,
		limits: ratelimit.New(opts.Clock, opts.CallRate, opts.CallBurst),
		reads:  ratelimit.New(opts.Clock, opts.SubRate, opts.SubBurst),
		conns:  map[uint64]*wsConn{},
		byUser: map[string]int{},
	}
	s.load = newLoadMonitor(opts.StallLag)
	go s.keepAlive()
	s.metrics.Gauge("invigil_ws_send_queue_bytes", "Bytes of frames waiting in sockets' send queues.",
		func() float64 { return float64(s.queuedBytes.Load()) })
	s.metrics.Counter("invigil_ws_sent_bytes_total", "Bytes of frames written to sockets.",
		func() float64 { return float64(s.sentBytes.Load()) })
	s.echo = echo.New()
	s.echo.HideBanner, s.echo.HidePort = true, true
	s.echo.HTTPErrorHandler = s.httpError
	s.mel = s.newMelody()
	s.routes()
	return s
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (s *Server) routes() {
	e := s.echo
	e.GET("/ws", s.serveWS)
	e.POST("/api/call/:name", s.apiCall)
	e.POST("/api/query/:name", s.apiQuery)
	e.POST("/hooks/:name", s.hook, s.countHook)
	e.GET("/api/admin/:name", s.admin)
	e.GET("/healthz", s.healthz)
	e.GET("/metrics", echo.WrapHandler(s.metrics.Handler(s.opts.MetricsToken)))
	if s.opts.Pprof {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		e.Any("/debug/pprof/*", echo.WrapHandler(metrics.BearerOnly(s.opts.MetricsToken, mux)))
	}
	if s.opts.Static != nil {
		e.StaticFS("/static", s.opts.Static)
		for route, file := range s.opts.Pages {
			e.GET(route, s.page(file))
		}
	}
	if s.opts.Extend != nil {
		s.opts.Extend(e)
	}
}

func (s *Server) page(file string) echo.HandlerFunc {
	return func(c echo.Context) error {
		b, err := fs.ReadFile(s.opts.Static, file)
		if err != nil {
			return err
		}
		c.Response().Header().Set("Cache-Control", "no-cache")
		return c.HTMLBlob(http.StatusOK, b)
	}
}

// Handler is the server's http.Handler (tests serve it on httptest).
func (s *Server) Handler() http.Handler { return s.echo }

// Serve serves on l until Shutdown. Slow or idle clients cannot hold a
// connection for ever: headers must arrive within ReadHeaderTimeout and a
// kept-alive connection closes after IdleTimeout (WebSockets, hijacked,
// are judged by ping and pong instead).
func (s *Server) Serve(l net.Listener) error {
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       time.Minute,
		IdleTimeout:       s.opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.connsMu.Lock()
	if s.stopping {
		// Shutdown came first: serving now would never be stopped.
		s.connsMu.Unlock()
		l.Close()
		return nil
	}
	s.httpSrv = srv
	s.connsMu.Unlock()
	err := srv.Serve(&fdLimitListener{Listener: l, log: s.log, now: time.Now})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets each socket's queued frames go out (up to
// DrainTimeout), closes every socket with a close frame, and waits for the
// HTTP handlers.
func (s *Server) Shutdown(ctx context.Context) error {
	s.connsMu.Lock()
	srv := s.httpSrv
	s.stopping = true
	s.connsMu.Unlock()
	var errs []error
	if srv != nil {
		// Stops the listener and idle connections now; waits below.
		srvDone := make(chan error, 1)
		go func() { srvDone <- srv.Shutdown(ctx) }()
		defer func() { errs = append(errs, <-srvDone) }()
	}
	// Real time, whatever the clock: a shutdown waits for real sockets.
	deadline := time.After(s.opts.DrainTimeout)
drain:
	for !s.drained() {
		select {
		case <-deadline:
			s.log.Warn("shutdown: some sockets still had frames queued")
			break drain
		case <-ctx.Done():
			break drain
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Close each socket (melody's own Close races its hub: a socket that
	// ends while the hub stops never runs its close handler), then wait for
	// every socket's close handling, so the features hear of it.
	s.connsMu.Lock()
	for _, c := range s.conns {
		c.ms.CloseWithMsg(closeFrame)
	}
	s.connsMu.Unlock()
	for s.openSockets() > 0 {
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.mel.Close()
	s.load.stop()
	if srv == nil {
		return s.echo.Shutdown(ctx)
	}
	return errors.Join(errs...)
}

func (s *Server) drained() bool {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	for _, c := range s.conns {
		if !c.q.idle() {
			return false
		}
	}
	return true
}

func (s *Server) openSockets() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.conns)
}

// track adds or removes a socket from the server's set.
func (s *Server) track(c *wsConn, open bool) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if open {
		s.conns[c.id] = c
	} else {
		delete(s.conns, c.id)
	}
}

// BytesSent is how many bytes of frames went to sockets so far.
func (s *Server) BytesSent() int64 { return s.sentBytes.Load() }

// claimSocket counts one more socket for user; false when they have the
// most they may.
func (s *Server) claimSocket(user string) bool {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.byUser[user] >= s.opts.MaxSocketsPerUser {
		return false
	}
	s.byUser[user]++
	return true
}

func (s *Server) releaseSocket(user string) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.byUser[user]--; s.byUser[user] <= 0 {
		delete(s.byUser, user)
	}
}

// KillConnections drops every socket abruptly, as a crashed proxy would
// (tests of client reconnects).
func (s *Server) KillConnections() {
	s.connsMu.Lock()
	conns := make([]*wsConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.connsMu.Unlock()
	for _, c := range conns {
		c.kill("killed by the server")
	}
}

// sameOrigin allows browsers from AllowedOrigins, or the page's own origin
// when none are configured. Non-browser clients send no Origin.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(s.opts.AllowedOrigins) == 0 {
		host := strings.TrimPrefix(strings.TrimPrefix(origin, "https://"), "http://")
		return host == r.Host
	}
	for _, o := range s.opts.AllowedOrigins {
		if strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}
