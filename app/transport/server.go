// Package transport puts the engine on the wire: the WebSocket protocol on
// /ws (melody), the HTTP API, the signed Supabase hooks, health and metrics,
// and the static pages (echo). It knows the engine and the contract's
// frames, not the features: functions, queries and hook handlers are
// registered by name.
package transport

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/labstack/echo/v4"
	"github.com/olahol/melody"

	"invigil/app/engine"
	"invigil/app/identity"
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

// Options configures a Server.
type Options struct {
	Engine   *engine.Engine
	Verifier Verifier
	Hooks    map[string]HookHandler // by path under /hooks/, e.g. "exams"
	HookAuth HookVerifier           // nil: hooks are refused
	// AllowedOrigins for /ws; empty means the page's own origin only.
	AllowedOrigins []string
	// Static is served under /static/; Pages maps routes to files in it.
	Static fs.FS
	Pages  map[string]string
	// Extend registers extra routes (the demo's sign-in).
	Extend func(e *echo.Echo)

	Clock  clockwork.Clock
	Logger *slog.Logger

	AuthTimeout     time.Duration // first auth or public sub within this; default 10 s
	DisconnectAfter time.Duration // pong wait; pings go at a third of it; default 25 s
	MaxFrameBytes   int           // larger frames get too_large; default 64 KiB
	SendBuffer      int           // frames queued per socket before it is closed; default 512
	MaxSubs         int           // subscriptions per socket; default 200
	CallRate        float64       // calls per second per user, sustained; default 20
	CallBurst       float64       // default 60
}

// Server is the HTTP and WebSocket front of invigil.
type Server struct {
	opts   Options
	echo   *echo.Echo
	mel    *melody.Melody
	log    *slog.Logger
	clock  clockwork.Clock
	limits *limiter

	nextConn atomic.Uint64
	connsMu  sync.Mutex
	conns    map[uint64]*wsConn
	metrics  metrics
}

// New builds the server and its routes.
func New(opts Options) *Server {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AuthTimeout <= 0 {
		opts.AuthTimeout = 10 * time.Second
	}
	if opts.DisconnectAfter <= 0 {
		opts.DisconnectAfter = 25 * time.Second
	}
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = 64 << 10
	}
	if opts.SendBuffer <= 0 {
		opts.SendBuffer = 512
	}
	if opts.MaxSubs <= 0 {
		opts.MaxSubs = 200
	}
	if opts.CallRate <= 0 {
		opts.CallRate = 20
	}
	if opts.CallBurst <= 0 {
		opts.CallBurst = 60
	}
	s := &Server{
		opts: opts, log: opts.Logger, clock: opts.Clock,
		limits: newLimiter(opts.Clock, opts.CallRate, opts.CallBurst),
		conns:  map[uint64]*wsConn{},
	}
	s.echo = echo.New()
	s.echo.HideBanner, s.echo.HidePort = true, true
	s.echo.HTTPErrorHandler = s.httpError
	s.mel = s.newMelody()
	s.routes()
	return s
}

func (s *Server) routes() {
	e := s.echo
	e.GET("/ws", s.serveWS)
	e.POST("/api/call/:name", s.apiCall)
	e.POST("/api/query/:name", s.apiQuery)
	e.POST("/hooks/:name", s.hook)
	e.GET("/healthz", s.healthz)
	e.GET("/metrics", s.serveMetrics)
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

// Serve serves on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	srv := &http.Server{Handler: s.echo, ReadHeaderTimeout: 10 * time.Second}
	s.echo.Server = srv
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes every socket and waits for handlers.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mel.Close()
	return s.echo.Shutdown(ctx)
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
