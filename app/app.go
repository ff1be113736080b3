// Package app wires invigil together: store, engine, features, auth, hooks,
// transport, metrics and jobs. main parses configuration and calls New and
// Run; the end-to-end tests boot the same wiring on a loopback port, --demo
// included.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
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
	"invigil/app/leaderboard"
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
	// AfterJob hears of every finished job run (tests wait on it).
	AfterJob func(jobs.Run)
}

// App is a wired invigil.
type App struct {
	Config     Config
	DB         *store.DB
	Engine     *engine.Engine
	Exams      *exam.Registry
	Proctoring *proctoring.Service
	Scores     *leaderboard.Service // the kids' leaderboard
	Chat       *chat.Service
	Presence   *presence.Service
	Server     *transport.Server
	Verifier   *auth.Verifier
	Metrics    *metrics.Metrics
	Archive    *archive.Deliverer // nil without SUPABASE_SERVICE_ROLE_KEY nor INVIGIL_REMINDER_URL: the outbox waits
	Demo       *demo.Issuer       // nil outside --demo

	log      *slog.Logger
	clock    clockwork.Clock
	afterRun func(jobs.Run)
}

// Pages maps page routes to files in static/.
var Pages = map[string]string{
	"/":                 "index.html",
	"/proctor/:exam_id": "proctor.html",
	"/exam/:exam_id":    "exam.html",
	"/kids/:quiz_code":  "kids.html", // the leaderboard's projector, public
	"/support":          "support.html",
}

// Heartbeats are shed once writes wait longer than heartbeatQueueDelay while
// a whole batch still waits behind them (heartbeatQueueFloor of the queue:
// a standing queue, not a moment's stall such as a collection, which at
// 1/16 shed 0.06 % of heartbeats at 18,000 sockets), or once the queue is
// half full (where new sockets are shed too). At twice the ceiling what is
// admitted keeps its ack p99 near 110 ms (README, Performance).
const (
	heartbeatQueueDelay = 20 * time.Millisecond
	heartbeatQueueFloor = 1.0 / 4 // 256 writes, the writer's batch
)

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
	a := &App{Config: cfg, DB: db, Metrics: m, log: d.Logger, clock: d.Clock, afterRun: d.AfterJob}
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
	if a.Archive, err = newArchive(db, cfg, d, m); err != nil {
		return fail(err)
	}

	pushInterval := cmp.Or(cfg.PushInterval, 5*time.Millisecond)
	a.Engine = engine.New(db, engine.Options{Logger: d.Logger, Clock: d.Clock, MinInterval: max(0, pushInterval)})
	a.Exams = exam.NewRegistry(db)
	a.Proctoring = proctoring.New(db, a.Exams, proctoring.Config{
		HeartbeatMinInterval: cfg.HeartbeatMin, DisconnectAfter: cfg.DisconnectAfter,
		ViolationDetailCap: cfg.ViolationDetailCap, ViolationsPerMinute: cfg.ViolationsPerMinute,
		StaleAfter: cfg.StaleAfter, Logger: d.Logger,
		Busy: func() bool {
			backlog := db.Backlog()
			return backlog >= 0.5 || backlog >= heartbeatQueueFloor && db.QueueDelay() > heartbeatQueueDelay
		},
	})
	a.Proctoring.Register(a.Engine)
	a.Scores = leaderboard.New(db, d.Logger)
	a.Scores.Register(a.Engine)
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

	hooks := map[string]transport.HookHandler{"exams": a.Exams.HandleHook, "scores": a.Scores.HandleHook}
	a.Server = transport.New(transport.Options{
		Engine:            a.Engine,
		Verifier:          a.Verifier,
		Hooks:             hooks,
		HookAuth:          hookAuth,
		Health:            db.Health,
		Backlog:           db.Backlog,
		AllowedOrigins:    cfg.AllowedOrigins,
		Static:            d.Static,
		Pages:             pages,
		Extend:            func(e *echo.Echo) { runAll(extend, e) },
		Admin:             a.adminEndpoints(),
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
		StallLag:          cfg.StallLag,
	})
	var jobNames []string
	for _, j := range a.Jobs() {
		jobNames = append(jobNames, j.Name)
	}
	m.Known(a.Engine.Funcs(), slices.Sorted(maps.Keys(hooks)), jobNames)
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
// Each is recorded in jobs_meta and shown at GET /api/admin/jobs.
func (a *App) Jobs() []jobs.Job {
	c := a.Config
	list := []jobs.Job{
		// Sessions nobody carries and that stopped heartbeating show disconnected.
		{Name: "disconnect-silent", Every: max(time.Second, c.DisconnectAfter/5), Run: a.Proctoring.SweepSilent},
		// Sessions of an exam that is over, silent for INVIGIL_STALE_AFTER,
		// end and are archived.
		{Name: "expire-stale", Every: clamp(c.StaleAfter/4, time.Second, time.Minute), Run: a.Proctoring.ExpireStale},
		// What reached Supabase INVIGIL_RETENTION ago leaves the database.
		{Name: "purge", Every: clamp(c.Retention/24, time.Second, 10*time.Minute), Run: a.purge},
	}
	if c.ReminderURL != "" {
		list = append(list, jobs.Job{Name: "remind-exams", Every: time.Minute, Run: a.Exams.EnqueueReminders})
	}
	// Chat and presence (issue 8).
	list = append(list,
		jobs.Job{Name: "typing-expiry", Every: time.Second, Run: a.Presence.ExpireTyping},
		jobs.Job{Name: "presence-expiry", Every: max(time.Second, a.Config.PresenceTTL/6), Run: a.Presence.ExpireStale},
		jobs.Job{Name: "chat-purge", Every: 10 * time.Minute, Run: a.Chat.PurgeEnded},
	)
	if a.Archive != nil {
		// Starts deliveries and returns; each finished delivery starts the
		// next, so this only picks up what became due since.
		list = append(list, jobs.Job{Name: "archive-outbox", Every: 2 * time.Second, Run: a.Archive.Kick})
	}
	return list
}

func clamp(d, lo, hi time.Duration) time.Duration { return min(max(d, lo), hi) }

// purge deletes what reached Supabase INVIGIL_RETENTION ago, never before:
// ended sessions with their violations, closed exams with no session left,
// delivered outbox items; and hook receipts after an hour (a replay that
// old is refused by its timestamp anyway).
func (a *App) purge(ctx context.Context) (int, error) {
	cutoff := a.clock.Now().Add(-a.Config.Retention)
	sessions, err := a.Proctoring.PurgeArchived(ctx, cutoff)
	if err != nil {
		return sessions, err
	}
	// When chat merges: chats, err := a.Chat.PurgeArchived(ctx, cutoff) (ended
	// chats and their messages), before the exams.
	exams, err := a.Exams.PurgeClosed(ctx, cutoff)
	if err != nil {
		return sessions + exams, err
	}
	var rest int64
	err = a.DB.Update(ctx, func(tx *store.Tx) error {
		hooks, err := tx.PurgeHookReceipts(tx.Now().Add(-time.Hour))
		if err != nil {
			return err
		}
		items, err := tx.PurgeDelivered(cutoff)
		rest = hooks + items
		return err
	})
	return sessions + exams + int(rest), err
}

// Run starts the jobs (and, in --demo, the simulated students) and serves
// on l until ctx ends, then shuts down gracefully: sockets get their
// queued frames and a close frame, the jobs stop, and what the outbox
// holds gets one more chance to reach Supabase.
func (a *App) Run(ctx context.Context, l net.Listener) error {
	sched, err := jobs.Start(jobs.Options{Clock: a.clock, Logger: a.log, Metrics: a.Metrics, DB: a.DB,
		AfterRun: a.afterRun}, a.Jobs()...)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		if a.Config.Demo {
			// The demo quiz's scores go through the real hook, over HTTP, to l;
			// support chats and exam-room questions through the engine.
			var sims sync.WaitGroup
			sims.Go(func() {
				demo.PushScores(simCtx, "http://"+l.Addr().String(), a.Config.WebhookSecret, a.clock, a.log, a.Scores.Reset)
			})
			sims.Go(func() { demo.SimulateChats(simCtx, a.Engine, a.clock, a.log) })
			demo.Simulate(simCtx, a.Engine, a.Config.DemoStudents, a.clock, a.log, a.Proctoring.ResetSession)
			sims.Wait()
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
		// One more chance for what is due, then every attempt under way is
		// recorded (cut short at the deadline) before the store closes.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if n, ferr := a.Archive.DeliverDue(fctx); ferr != nil {
			a.log.Warn("final outbox delivery", "delivered", n, "err", ferr)
		}
		a.Archive.Stop(fctx)
	}
	return err
}

// Close stops the engine and closes the store (after its queued writes).
func (a *App) Close() error {
	a.Engine.Close()
	return a.DB.Close()
}
