// Package app wires invigil together: store, engine, features, auth, hooks,
// transport, metrics and jobs. main parses configuration and calls New and
// Run; the end-to-end tests boot the same wiring on a loopback port, --demo
// included.
package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/labstack/echo/v4"

	"invigil/app/archive"
	"invigil/app/auth"
	"invigil/app/chat"
	"invigil/app/demo"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/jobs"
	"invigil/app/metrics"
	"invigil/app/presence"
	"invigil/app/proctoring"
	"invigil/app/transport"
	"invigil/app/webhook"
	"invigil/store"
)

// Deps are what the process hands in: the embedded schema and pages, a
// clock and a logger.
type Deps struct {
	Schema string
	Static fs.FS
	Clock  clockwork.Clock
	Logger *slog.Logger
	// AuthKeys adds ways to verify tokens (tests: a key set of their own).
	AuthKeys auth.Config
	// Extend registers extra routes.
	Extend func(e *echo.Echo)
	// Setup runs on the wired app before it serves (tests).
	Setup []func(*App)
}

// App is a wired invigil.
type App struct {
	Config     Config
	DB         *store.DB
	Engine     *engine.Engine
	Exams      *exam.Registry
	Proctoring *proctoring.Service
	Chat       *chat.Service
	Presence   *presence.Service
	Server     *transport.Server
	Verifier   *auth.Verifier
	Metrics    *metrics.Metrics
	Archive    *archive.Deliverer // nil without SUPABASE_SERVICE_ROLE_KEY: the outbox waits
	Demo       *demo.Issuer       // nil outside --demo

	log   *slog.Logger
	clock clockwork.Clock
}

// Pages maps page routes to files in static/.
var Pages = map[string]string{
	"/":                 "index.html",
	"/proctor/:exam_id": "proctor.html",
	"/exam/:exam_id":    "exam.html",
	"/support":          "support.html",
}

// New opens the store and builds everything; Close undoes it. With
// cfg.Demo it also builds the demo: a dev token issuer, its sign-in page
// and the seeded exam (Run starts the simulated students).
func New(ctx context.Context, cfg Config, d Deps) (*App, error) {
	if d.Clock == nil {
		d.Clock = clockwork.NewRealClock()
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if cfg.Demo {
		if cfg.SupabaseURL == "" {
			_, port, _ := net.SplitHostPort(cfg.Addr)
			cfg.SupabaseURL = "http://127.0.0.1:" + port
		}
		if cfg.WebhookSecret == "" {
			cfg.WebhookSecret = demo.WebhookSecret
		}
	}
	m := metrics.New()
	db, err := store.Open(store.Options{Path: cfg.DB, Schema: d.Schema, Clock: d.Clock, Logger: d.Logger, Observe: m.ObserveCommit})
	if err != nil {
		return nil, err
	}
	a := &App{Config: cfg, DB: db, Metrics: m, log: d.Logger, clock: d.Clock}
	fail := func(err error) (*App, error) {
		db.Close()
		return nil, err
	}
	pages := map[string]string{}
	for k, v := range Pages {
		pages[k] = v
	}
	extend := []func(*echo.Echo){}
	if d.Extend != nil {
		extend = append(extend, d.Extend)
	}
	ac := d.AuthKeys
	if cfg.Demo && ac.KeySet == nil {
		if a.Demo, err = demo.NewIssuer(cfg.Issuer(), d.Clock); err != nil {
			return fail(err)
		}
		ac = a.Demo.AuthConfig(cfg.Issuer())
		extend = append(extend, a.Demo.Routes)
		pages["/signin"] = "signin.html"
	}
	ac.Clock, ac.Logger = d.Clock, d.Logger
	if ac.Issuer == "" && !ac.NoIssuer {
		ac.Issuer, ac.NoIssuer = cfg.Issuer(), cfg.Issuer() == ""
	}
	if ac.KeySet == nil {
		ac.JWKSURL = cfg.JWKSURL
	}
	if cfg.JWTSecret != "" && len(ac.HS256Secret) == 0 {
		ac.HS256Secret = []byte(cfg.JWTSecret)
	}
	if a.Verifier, err = auth.NewVerifier(ctx, ac); err != nil {
		return fail(err)
	}
	var hookAuth transport.HookVerifier
	if cfg.WebhookSecret != "" {
		v, err := webhook.NewVerifier(cfg.WebhookSecret, d.Clock)
		if err != nil {
			return fail(fmt.Errorf("INVIGIL_WEBHOOK_SECRET: %w", err))
		}
		hookAuth = v
	} else {
		d.Logger.Warn("INVIGIL_WEBHOOK_SECRET is not set: /hooks/* refuse every delivery")
	}
	if cfg.ServiceRoleKey != "" && !cfg.Demo {
		a.Archive, err = archive.New(db, archive.Config{
			SupabaseURL: cfg.SupabaseURL, ServiceRoleKey: cfg.ServiceRoleKey, Clock: d.Clock, Logger: d.Logger,
		})
		if err != nil {
			return fail(err)
		}
	} else if !cfg.Demo {
		d.Logger.Warn("SUPABASE_SERVICE_ROLE_KEY is not set: summaries wait in the outbox until it is")
	}

	a.Engine = engine.New(db, engine.Options{Logger: d.Logger, Clock: d.Clock})
	a.Exams = exam.NewRegistry(db)
	a.Proctoring = proctoring.New(db, a.Exams, proctoring.Config{
		HeartbeatMinInterval: cfg.HeartbeatMin, DisconnectAfter: cfg.DisconnectAfter,
		ViolationDetailCap: cfg.ViolationDetailCap, Logger: d.Logger,
	})
	a.Proctoring.Register(a.Engine)
	// Chat and presence (issue 8): presence asks chat who may be in a
	// chat's scope; chat sets typing flags through presence.
	a.Presence = presence.New(db, a.Exams, presence.Config{
		TTL: cfg.PresenceTTL, TypingTTL: cfg.TypingTTL, Logger: d.Logger,
		ChatAccess: func(ctx context.Context, u identity.User, id string) ([]string, error) {
			return a.Chat.Access(ctx, u, id)
		},
	})
	a.Chat = chat.New(db, a.Exams, a.Presence, chat.Config{Retention: cfg.Retention, Clock: d.Clock, Logger: d.Logger})
	a.Presence.Register(a.Engine)
	a.Chat.Register(a.Engine)
	a.registerMetrics()

	a.Server = transport.New(transport.Options{
		Engine:            a.Engine,
		Verifier:          a.Verifier,
		Hooks:             map[string]transport.HookHandler{"exams": a.Exams.HandleHook},
		HookAuth:          hookAuth,
		Health:            db.Ping,
		AllowedOrigins:    cfg.AllowedOrigins,
		Static:            d.Static,
		Pages:             pages,
		Extend:            func(e *echo.Echo) { runAll(extend, e) },
		Metrics:           m,
		MetricsToken:      cfg.MetricsToken,
		Pprof:             cfg.Pprof,
		Clock:             d.Clock,
		Logger:            d.Logger,
		DisconnectAfter:   cfg.DisconnectAfter,
		SendQueueBytes:    cfg.SendQueueBytes,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		DrainTimeout:      cfg.DrainTimeout,
		WriteTimeout:      cfg.WriteTimeout,
	})
	if cfg.Demo {
		if err := demo.Seed(ctx, a.Exams); err != nil {
			a.Close()
			return nil, err
		}
	}
	for _, f := range d.Setup {
		f(a)
	}
	return a, nil
}

func runAll(fs []func(*echo.Echo), e *echo.Echo) {
	for _, f := range fs {
		f(e)
	}
}

// registerMetrics exposes the engine's and the outbox's figures.
func (a *App) registerMetrics() {
	m, e := a.Metrics, a.Engine
	m.Gauge("invigil_subscriptions", "Live subscriptions.", func() float64 { return float64(e.Stats().Subscriptions) })
	m.Gauge("invigil_query_instances", "Distinct (query, args) kept current.", func() float64 { return float64(e.Stats().Instances) })
	m.Counter("invigil_engine_rows_patched_total", "Rows re-read by id to patch a list.", func() float64 { return float64(e.Stats().RowsPatched) })
	m.Counter("invigil_engine_pushes_total", "Updates handed to subscribers.", func() float64 { return float64(e.Stats().Pushes) })
	m.Registry.MustRegister(engineRuns{e})
	m.Gauge("invigil_outbox_pending", "Deliveries to Supabase not yet accepted.", func() float64 {
		st, err := a.DB.OutboxStats(context.Background(), a.clock.Now())
		if err != nil {
			return -1 // a scrape must show the store failing, never a reassuring 0
		}
		return float64(st.Pending)
	})
	m.Gauge("invigil_outbox_oldest_pending_seconds", "Age of the oldest delivery to Supabase not yet accepted.", func() float64 {
		st, err := a.DB.OutboxStats(context.Background(), a.clock.Now())
		if err != nil {
			return -1
		}
		return st.OldestAge.Seconds()
	})
}

// Jobs are the scheduled tasks (exported so tests can run one directly).
func (a *App) Jobs() []jobs.Job {
	sweepEvery := max(time.Second, a.Config.DisconnectAfter/5)
	list := []jobs.Job{
		{Name: "disconnect-silent", Every: sweepEvery, Run: func(ctx context.Context) (int, error) {
			return a.Proctoring.SweepSilent(ctx)
		}},
		{Name: "purge", Every: 10 * time.Minute, Run: func(ctx context.Context) (int, error) {
			n := 0
			err := a.DB.Update(ctx, func(tx *store.Tx) error {
				hooks, err := tx.PurgeHookReceipts(tx.Now().Add(-time.Hour))
				if err != nil {
					return err
				}
				items, err := tx.PurgeDelivered(tx.Now().Add(-a.Config.Retention))
				n = int(hooks + items)
				return err
			})
			return n, err
		}},
	}
	// Chat and presence (issue 8).
	list = append(list,
		jobs.Job{Name: "typing-expiry", Every: time.Second, Run: a.Presence.ExpireTyping},
		jobs.Job{Name: "presence-expiry", Every: max(time.Second, a.Config.PresenceTTL/6), Run: a.Presence.ExpireStale},
		jobs.Job{Name: "chat-purge", Every: 10 * time.Minute, Run: a.Chat.PurgeEnded},
	)
	if a.Archive != nil {
		list = append(list, jobs.Job{Name: "archive-outbox", Every: 2 * time.Second, Run: a.Archive.DeliverDue})
	}
	return list
}

// Run starts the jobs (and, in --demo, the simulated students) and serves
// on l until ctx ends, then shuts down gracefully: sockets get their
// queued frames and a close frame, the jobs stop, and what the outbox
// holds gets one more chance to reach Supabase.
func (a *App) Run(ctx context.Context, l net.Listener) error {
	sched, err := jobs.Start(a.clock, a.log, a.Metrics, a.Jobs()...)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		if a.Config.Demo {
			chats := make(chan struct{})
			go func() { // support chats and exam-room questions (issue 8)
				defer close(chats)
				demo.SimulateChats(simCtx, a.Engine, a.clock, a.log)
			}()
			demo.Simulate(simCtx, a.Engine, a.Config.DemoStudents, a.clock, a.log, a.Proctoring.ResetSession)
			<-chats
		}
	}()
	served := make(chan error, 1)
	go func() { served <- a.Server.Serve(l) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		a.log.Info("shutting down: draining sockets")
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = a.Server.Shutdown(sctx)
		if serr := <-served; err == nil {
			err = serr
		}
	}
	stopSim()
	<-simDone
	err = errors.Join(err, sched.Shutdown())
	if a.Archive != nil {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if n, ferr := a.Archive.DeliverDue(fctx); ferr != nil {
			a.log.Warn("final outbox delivery", "delivered", n, "err", ferr)
		}
	}
	return err
}

// Close stops the engine and closes the store (after its queued writes).
func (a *App) Close() error {
	a.Engine.Close()
	return a.DB.Close()
}
