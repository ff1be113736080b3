// Package loadgen is `invigil load`: it puts exam-day load on a running
// invigil and reports what students and tutors experienced (CONTRACT §7).
//
// Students heartbeat over their own sockets, sometimes log violations and
// write in exam chat rooms; tutors watch their exam's sessions and rooms with
// deltas, keeping the rows as a browser does; projectors watch leaderboards
// fed by signed score hooks. It times each call's answer and each write's
// propagation to every tutor's screen, counts the bytes a tutor receives,
// and samples the server's CPU and memory when it runs on this machine.
//
// It builds against the contract, not the server's internals: every figure
// comes from the wire (and /proc), so the same binary measures a staging
// server. It targets loopback only unless told otherwise.
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// Command runs `invigil load` with the process's arguments (those after
// "load") and returns its exit code: 0, 1 when the run failed or more than
// 5 % of its calls did, 2 for bad flags.
func Command(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Main(ctx, args, os.Stdout, os.Stderr)
}

// Main is Command with its context and outputs given.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := Parse(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "invigil load:", err)
		return 2
	}
	if cfg.CPUProfile != "" && !cfg.Child {
		f, err := os.Create(cfg.CPUProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "invigil load: --cpuprofile:", err)
			return 2
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if cfg.Child {
		return runChild(ctx, cfg, os.Stdin, stdout, stderr)
	}
	var rep *Report
	if cfg.Procs > 1 {
		rep, err = runParent(ctx, cfg, args, stderr)
	} else {
		rep, err = Run(ctx, cfg, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "invigil load:", err)
	}
	if rep == nil {
		return 1
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		rep.Print(stderr)
	} else {
		rep.Print(stdout)
	}
	if err != nil || rep.Failed() {
		return 1
	}
	return 0
}
