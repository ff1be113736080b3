// Command invigil is the live layer of an online exam platform on Supabase:
// live proctoring over WebSockets, in one process with one SQLite file.
//
//	go run . --demo   # everything on one machine, no accounts
//	go run .          # production: needs SUPABASE_URL (see README.md)
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/jonboulle/clockwork"

	"invigil/app"
	"invigil/app/demo"
	"invigil/loadgen"
	"invigil/static"
)

//go:embed schema.sql
var schema string

func main() {
	if len(os.Args) > 1 && os.Args[1] == "load" { // invigil load …: the load generator
		os.Exit(loadgen.Command(os.Args[2:]))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(log); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		log.Error("invigil stopped", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cfg, err := app.LoadConfig(os.Getenv, os.Args[1:])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	clock := clockwork.NewRealClock()
	deps := app.Deps{Schema: schema, Static: static.FS, Clock: clock, Logger: log}
	var issuer *demo.Issuer
	if cfg.Demo {
		if cfg.SupabaseURL == "" {
			cfg.SupabaseURL = "http://127.0.0.1:" + portOf(cfg.Addr)
		}
		if issuer, err = demo.NewIssuer(cfg.Issuer(), clock); err != nil {
			return err
		}
		deps.AuthKeys = issuer.AuthConfig(cfg.Issuer())
		deps.Extend = issuer.Routes
	}
	a, err := app.New(ctx, cfg, deps)
	if err != nil {
		return err
	}
	defer a.Close()

	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	if cfg.Demo {
		if err := demo.Seed(ctx, a.Exams); err != nil {
			return err
		}
		go demo.Simulate(ctx, a.Engine, cfg.DemoStudents, clock, log, a.Proctoring.ResetSession)
		fmt.Fprintf(os.Stderr, "\n  invigil demo: open http://%s/  (sign in as the tutor, then watch /proctor/demo)\n\n", l.Addr())
	}
	log.Info("invigil listening", "addr", l.Addr().String(), "db", cfg.DB, "demo", cfg.Demo)
	if err := a.Run(ctx, l); err != nil {
		return err
	}
	log.Info("invigil stopped cleanly")
	return nil
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "8080"
	}
	return port
}
