// Package app wires invigil together: store, engine, features, auth, hooks,
// transport and jobs. main parses configuration and calls New and Run; the
// end-to-end tests boot the same wiring on a loopback port.
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
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/jobs"
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
	// KeySet and the demo's routes, set by the demo.
	AuthKeys auth.Config
	Extend   func(e *echo.Echo)
}

// App is a wired invigil.
type App struct {
	Config     Config
	DB         *store.DB
	Engine     *engine.Engine
	Exams      *exam.Registry
	Proctoring *proctoring.Service
	Server     *transport.Server
	Verifier   *auth.Verifier
	Archive    *archive.Deliverer // nil without SUPABASE_SERVICE_ROLE_KEY: the outbox waits

	log    *slog.Logger
	clock  clockwork.Clock
	jobs   *jobs.Scheduler
	cancel context.CancelFunc
}

// Pages maps page routes to files in static/.
var Pages = map[string]string{
	"/":                 "index.html",
	"/proctor/:exam_id": "proctor.html",
	"/exam/:exam_id":    "exam.html",
}

// New opens the store and builds everything; Close undoes it.
func New(ctx context.Context, cfg Config, d Deps) (*App, error) {
	if d.Clock == nil {
		d.Clock = clockwork.NewRealClock()
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	db, err := store.Open(store.Options{Path: cfg.DB, Schema: d.Schema, Clock: d.Clock, Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	a := &App{Config: cfg, DB: db, log: d.Logger, clock: d.Clock}
	ac := d.AuthKeys
	ac.Clock, ac.Logger = d.Clock, d.Logger
	if ac.Issuer == "" {
		ac.Issuer = cfg.Issuer()
	}
	if ac.KeySet == nil {
		ac.JWKSURL = cfg.JWKSURL
		if cfg.JWTSecret != "" {
			ac.HS256Secret = []byte(cfg.JWTSecret)
		}
	}
	if a.Verifier, err = auth.NewVerifier(ctx, ac); err != nil {
		db.Close()
		return nil, err
	}
	var hookAuth transport.HookVerifier
	if cfg.WebhookSecret != "" {
		v, err := webhook.NewVerifier(cfg.WebhookSecret, d.Clock)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("INVIGIL_WEBHOOK_SECRET: %w", err)
		}
		hookAuth = v
	} else if !cfg.Demo {
		d.Logger.Warn("INVIGIL_WEBHOOK_SECRET is not set: /hooks/* refuse every delivery")
	}

	if cfg.ServiceRoleKey != "" && !cfg.Demo {
		a.Archive, err = archive.New(db, archive.Config{
			SupabaseURL: cfg.SupabaseURL, ServiceRoleKey: cfg.ServiceRoleKey, Clock: d.Clock, Logger: d.Logger,
		})
		if err != nil {
			db.Close()
			return nil, err
		}
	} else if !cfg.Demo {
		d.Logger.Warn("SUPABASE_SERVICE_ROLE_KEY is not set: summaries wait in the outbox until it is")
	}

	a.Engine = engine.New(db, engine.Options{Logger: d.Logger})
	a.Exams = exam.NewRegistry(db)
	a.Proctoring = proctoring.New(db, a.Exams, proctoring.Config{
		HeartbeatMinInterval: cfg.HeartbeatMin, DisconnectAfter: cfg.DisconnectAfter,
		ViolationDetailCap: cfg.ViolationDetailCap, Logger: d.Logger,
	})
	a.Proctoring.Register(a.Engine)

	pages := map[string]string{}
	for k, v := range Pages {
		pages[k] = v
	}
	if cfg.Demo {
		pages["/signin"] = "signin.html"
	}
	a.Server = transport.New(transport.Options{
		Engine:          a.Engine,
		Verifier:        a.Verifier,
		Hooks:           map[string]transport.HookHandler{"exams": a.Exams.HandleHook},
		HookAuth:        hookAuth,
		AllowedOrigins:  cfg.AllowedOrigins,
		Static:          d.Static,
		Pages:           pages,
		Extend:          d.Extend,
		Clock:           d.Clock,
		Logger:          d.Logger,
		DisconnectAfter: cfg.DisconnectAfter,
		SendBuffer:      cfg.SendBuffer,
	})
	return a, nil
}

// Jobs are the scheduled tasks (exported so tests can run one directly).
func (a *App) Jobs() []jobs.Job {
	sweepEvery := max(time.Second, a.Config.DisconnectAfter/5)
	list := []jobs.Job{
		{Name: "disconnect-silent", Every: sweepEvery, Run: func(ctx context.Context) error {
			n, err := a.Proctoring.SweepSilent(ctx)
			if n > 0 {
				a.log.Info("disconnected silent sessions", "count", n)
			}
			return err
		}},
		{Name: "purge", Every: 10 * time.Minute, Run: func(ctx context.Context) error {
			return a.DB.Update(ctx, func(tx *store.Tx) error {
				if _, err := tx.PurgeHookReceipts(ctx, tx.Now().Add(-time.Hour)); err != nil {
					return err
				}
				_, err := tx.PurgeDelivered(ctx, tx.Now().Add(-a.Config.Retention))
				return err
			})
		}},
	}
	if a.Archive != nil {
		list = append(list, jobs.Job{Name: "archive-outbox", Every: 2 * time.Second, Run: func(ctx context.Context) error {
			_, err := a.Archive.DeliverDue(ctx)
			return err
		}})
	}
	return list
}

// Run starts the jobs and serves on l until ctx ends, then shuts down
// gracefully within 10 s.
func (a *App) Run(ctx context.Context, l net.Listener) error {
	var err error
	if a.jobs, err = jobs.Start(a.clock, a.log, a.Jobs()...); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- a.Server.Serve(l) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = a.Server.Shutdown(sctx)
		if serr := <-served; err == nil {
			err = serr
		}
	}
	return errors.Join(err, a.jobs.Shutdown())
}

// Close stops the engine and closes the store.
func (a *App) Close() error {
	a.Engine.Close()
	return a.DB.Close()
}
