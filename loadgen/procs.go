package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// --procs N runs the load as N children of this same binary, each taking
// whole exams (--shard k/N): a process here may hold at most 20,000
// descriptors. The parent starts them, waits until every one has set up,
// starts their measured phases together, merges their progress into one
// line and their reports into one (histograms merged bucket by bucket),
// and samples the server itself.
//
// A child speaks JSON lines on stdout (childEvent), waits for "go" on stdin
// before measuring and for "close" before closing its sockets; its stdin
// closing means the parent is gone, and it stops.

// ChildEnv marks a child process; a test binary checks it in TestMain to
// run Main instead of its tests.
const ChildEnv = "INVIGIL_LOAD_CHILD"

type childEvent struct {
	Event   string  `json:"event"` // ready, progress, measured, done, error
	Report  *Report `json:"report,omitempty"`
	Message string  `json:"message,omitempty"`
}

func runChild(ctx context.Context, cfg Config, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(e childEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(e)
	}
	start := make(chan error, 1)
	release := make(chan struct{})
	go func() {
		defer close(release)
		in := bufio.NewScanner(stdin)
		if in.Scan() && strings.TrimSpace(in.Text()) == "go" {
			start <- nil
		} else {
			start <- errors.New("the parent process went away")
			cancel()
			return
		}
		for in.Scan() {
			if strings.TrimSpace(in.Text()) == "close" {
				return
			}
		}
		cancel() // stdin closed: the parent is gone
	}()
	ctl := &control{
		ready: func(ctx context.Context) error {
			emit(childEvent{Event: "ready"})
			select {
			case err := <-start:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		progress: func(r *Report) { emit(childEvent{Event: "progress", Report: r}) },
		measured: func() { emit(childEvent{Event: "measured"}) },
		// Sockets stay open until every child has measured: one that closed
		// its own early would change the server's work under the others.
		release: func() {
			select {
			case <-release:
			case <-ctx.Done():
			}
		},
	}
	rep, err := run(ctx, cfg, stderr, ctl)
	ev := childEvent{Event: "done", Report: rep}
	if err != nil {
		ev.Message = err.Error()
		if rep == nil {
			ev.Event = "error"
		}
	}
	emit(ev)
	if err != nil {
		return 1
	}
	return 0
}

type childMsg struct {
	k   int
	ev  childEvent
	err error // with ev.Event "exit": how the process ended
}

type child struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	ready    bool
	measured bool
	last     *Report // latest progress
	final    *Report
	exit     bool
}

func runParent(ctx context.Context, cfg Config, args []string, stderr io.Writer) (*Report, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("--procs: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &lockedWriter{w: stderr}
	logf := func(format string, a ...any) { fmt.Fprintf(out, "invigil load: "+format+"\n", a...) }
	msgs := make(chan childMsg, 16)
	kids := make([]*child, cfg.Procs)
	for k := range kids {
		childArgs := append([]string{"load"}, args...)
		childArgs = append(childArgs, "--child", fmt.Sprintf("--shard=%d/%d", k, cfg.Procs),
			"--run-id="+cfg.RunID, "--server-pid=-1")
		cmd := exec.CommandContext(ctx, exe, childArgs...)
		cmd.Env = append(os.Environ(), ChildEnv+"=1")
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = endGrace + 20*time.Second
		cmd.Stderr = &prefixWriter{w: out, prefix: fmt.Sprintf("[%d] ", k)}
		stdin, err1 := cmd.StdinPipe()
		stdout, err2 := cmd.StdoutPipe()
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("--procs: start child %d: %w", k, err)
		}
		kids[k] = &child{cmd: cmd, stdin: stdin}
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			for sc.Scan() {
				var ev childEvent
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					fmt.Fprintf(out, "[%d] %s\n", k, sc.Bytes())
					continue
				}
				msgs <- childMsg{k: k, ev: ev}
			}
			msgs <- childMsg{k: k, ev: childEvent{Event: "exit"}, err: cmd.Wait()}
		}()
	}
	logf("%d processes setting up %d students in %d exams…", cfg.Procs, cfg.Students, cfg.Exams)

	var (
		server      *sampler
		serverFinal *ProcStats
		serverNote  string
		settled     <-chan time.Time // after all are ready and --settle has passed
		started     time.Time
		failure     error
		setupStart  = time.Now()
		ticker      = time.NewTicker(max(cfg.Progress, time.Second))
		prev        = &Report{}
	)
	defer ticker.Stop()
	count := func(f func(*child) bool) int {
		n := 0
		for _, c := range kids {
			if f(c) {
				n++
			}
		}
		return n
	}
	for count(func(c *child) bool { return c.exit }) < len(kids) {
		select {
		case m := <-msgs:
			c := kids[m.k]
			switch m.ev.Event {
			case "ready":
				c.ready = true
				if count(func(c *child) bool { return c.ready }) == len(kids) {
					if cfg.Settle > 0 {
						logf("all %d processes set up in %s; settling for %s", len(kids), time.Since(setupStart).Round(time.Millisecond), cfg.Settle)
					} else {
						logf("all %d processes set up in %s; measuring for %s", len(kids), time.Since(setupStart).Round(time.Millisecond), cfg.Duration)
					}
					settled = time.After(cfg.Settle)
				}
			case "progress":
				c.last = m.ev.Report
			case "measured":
				// The server's figures are the measured phase's: taken when
				// the last child ends it, before any closes its sockets.
				c.measured = true
				if count(func(c *child) bool { return c.measured }) == len(kids) {
					if server != nil && serverFinal == nil {
						serverFinal = server.final()
					}
					for _, c := range kids {
						io.WriteString(c.stdin, "close\n")
					}
				}
			case "done", "error":
				c.final = m.ev.Report
				switch {
				case c.final == nil && failure == nil:
					failure = fmt.Errorf("process %d: %s", m.k, m.ev.Message)
					cancel() // the others cannot make a whole run without it
				case m.ev.Message != "" && failure == nil && ctx.Err() == nil:
					fmt.Fprintf(out, "[%d] %s\n", m.k, m.ev.Message)
				}
			case "exit":
				c.exit = true
				if c.final == nil && failure == nil {
					failure = fmt.Errorf("process %d ended without a report: %v", m.k, m.err)
					cancel()
				}
			}
		case <-settled:
			settled = nil
			if cfg.Settle > 0 {
				logf("measuring for %s", cfg.Duration)
			}
			server, serverNote = findServer(cfg)
			started = time.Now()
			go pollRSS(ctx, server)
			for _, c := range kids {
				io.WriteString(c.stdin, "go\n")
			}
		case <-ticker.C:
			if cfg.Progress <= 0 {
				continue
			}
			cur := &Report{Settings: Settings{Procs: cfg.Procs}}
			for _, c := range kids {
				if c.last != nil {
					cur.merge(c.last)
				}
			}
			cur.finish()
			if started.IsZero() {
				if s := cur.Connections["students"]; s != nil {
					logf("setup: %d/%d students joined, %d errors", s.Ready, cfg.Students, cur.ErrorsTotal)
				}
				continue
			}
			if cur.ElapsedS == 0 {
				continue // no child has reported from the measured phase yet
			}
			var sp *ProcStats
			if server != nil {
				p := server.sample()
				sp = &p
			}
			fmt.Fprintln(out, progressLine(cur, prev, sp))
			prev = cur
		}
	}
	if failure != nil {
		return nil, failure
	}
	rep := &Report{RunID: cfg.RunID}
	for _, c := range kids {
		rep.merge(c.final)
	}
	rep.Settings = c0Settings(kids[0].final, cfg)
	if server != nil {
		if serverFinal == nil {
			serverFinal = server.final()
		}
		rep.Server = serverFinal
	} else if serverNote != "" {
		rep.Server = &ProcStats{Note: serverNote}
	}
	rep.finish()
	if ctx.Err() != nil {
		return rep, errors.New("interrupted: the figures cover the time measured so far")
	}
	return rep, nil
}

// c0Settings are a child's settings, which echo the whole run's flags.
func c0Settings(r *Report, cfg Config) Settings {
	s := r.Settings
	s.Procs = cfg.Procs
	return s
}

// lockedWriter lets the parent and its children's relays share stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter relays a child's stderr line by line, each line prefixed.
type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.w.Write(append([]byte(p.prefix), p.buf[:i+1]...))
		p.buf = p.buf[i+1:]
	}
}
