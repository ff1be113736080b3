// Command invigil is the live layer of an online exam platform on Supabase:
// live proctoring, chat, presence and leaderboards over WebSockets, in one
// process with one SQLite file.
//
//	go run . --demo          # everything on one machine, no accounts
//	go run .                 # production: needs SUPABASE_URL (see README.md)
//	go run . load --url URL  # the load generator (loadgen/README.md)
//	go run . backup PATH     # an online copy of the database
package main

import (
	"cmp"
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

	"invigil/app"
	"invigil/app/gctune"
	"invigil/loadgen"
	"invigil/static"
	"invigil/store"
)

//go:embed schema.sql
var schema string

func main() {
	if len(os.Args) > 1 && os.Args[1] == "load" { // CONTRACT §7: the load generator
		os.Exit(loadgen.Command(os.Args[2:]))
	}
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			app.Usage(os.Stdout)
			return
		}
		fmt.Fprintln(os.Stderr, "invigil:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "backup" {
		return backup(args[1:])
	}
	cfg, err := app.LoadConfig(os.Getenv, args)
	if err != nil {
		return err
	}
	// JSON lines in production (for a log pipeline), text in --demo.
	var handler slog.Handler = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	if cfg.Demo {
		handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	}
	log := slog.New(handler)
	gctune.Apply(os.Getenv, gctune.Root(), log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	a, err := app.New(ctx, cfg, app.Deps{Schema: schema, Static: static.FS, Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	if cfg.Demo {
		fmt.Fprintf(os.Stderr, "\n  invigil demo: open http://%s/  (sign in as the tutor, then watch /proctor/demo)\n\n", l.Addr())
	}
	log.Info("invigil listening", "addr", l.Addr().String(), "db", cfg.DB, "demo", cfg.Demo)
	if err := a.Run(ctx, l); err != nil {
		return err
	}
	log.Info("invigil stopped cleanly")
	return nil
}

// backup is `invigil backup PATH` (CONTRACT §1): an online, consistent copy
// of INVIGIL_DB to PATH through SQLite's backup API, safe while serving.
func backup(args []string) error {
	if len(args) != 1 || args[0] == "" || args[0][0] == '-' {
		return errors.New("usage: invigil backup PATH (an online copy of INVIGIL_DB)")
	}
	src := cmp.Or(os.Getenv("INVIGIL_DB"), app.DefaultConfig().DB)
	if err := store.Backup(context.Background(), src, args[0]); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "invigil: backup of %s written to %s\n", src, args[0])
	return nil
}
