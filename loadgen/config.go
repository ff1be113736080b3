package loadgen

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"invigil/app/webhook"
)

// DemoWebhookSecret is the hook secret a `go run . --demo` server accepts
// (demo.WebhookSecret); --demo uses it unless --webhook-secret says otherwise.
const DemoWebhookSecret = "whsec_ZGVtby1vbmx5LXdlYmhvb2stc2VjcmV0LWRvLW5vdC11c2U="

// Bounds of one run. A process here may hold at most 20,000 descriptors and
// loopback has about 28,000 ephemeral ports per source address: past either,
// --procs and --source-addrs spread the sockets.
const (
	MaxStudents       = 200_000
	MaxTutorsPerExam  = 50
	MaxProcs          = 64
	MaxDuration       = 6 * time.Hour
	MinInterval       = 100 * time.Millisecond // the server's per-user call budget is 20/s
	MaxRate           = 5_000                  // --chat-rate, --scores-rate
	MaxSocketsPerProc = 19_000                 // leaves room under a 20,000 descriptor limit
	demoTokenTTL      = time.Hour              // demo.TokenTTL
	// roomRate is how many messages a second a room's student sends, at
	// most: the server lets a user send a burst of 10 chat messages, then
	// one a second (rate_limited past it).
	roomRate = 0.8
)

// Config is one run of the load generator, as its flags give it.
type Config struct {
	URL           string
	Students      int
	Exams         int
	TutorsPerExam int
	Interval      time.Duration
	Violations    float64
	ChatRate      float64
	ScoresRate    float64
	Duration      time.Duration
	Ramp          time.Duration
	Settle        time.Duration
	Progress      time.Duration

	JWTSecret     string
	Issuer        string
	Demo          bool
	WebhookSecret string

	JSON        bool
	Procs       int
	SourceAddrs []net.IP
	AllowRemote bool
	ServerPID   int // 0: find it from the port; -1: do not sample
	Seed        uint64
	RunID       string
	CPUProfile  string // write the load generator's own CPU profile here

	// Set by a parent for each of its child processes.
	Child  bool
	Shard  int // this process's share, 0 ≤ Shard < Shards
	Shards int
}

// hidden flags are how a parent talks to its children; usage omits them.
var hidden = map[string]bool{"child": true, "shard": true}

// Parse reads the flags of `invigil load`; getenv supplies secrets not given
// as flags (SUPABASE_JWT_SECRET, INVIGIL_WEBHOOK_SECRET), so that they need
// not show in the process list.
func Parse(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	c := Config{}
	fs := flag.NewFlagSet("invigil load", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "invigil base URL (loopback only unless --allow-remote)")
	fs.IntVar(&c.Students, "students", 100, "student sockets in all")
	fs.IntVar(&c.Exams, "exams", 1, "exams the students are spread over (students/exams each)")
	fs.IntVar(&c.TutorsPerExam, "tutors-per-exam", 1, "tutor dashboards per exam, each subscribed with deltas")
	fs.DurationVar(&c.Interval, "interval", 10*time.Second, "heartbeat period per student (±10 % jitter; the first spread over the first period)")
	fs.Float64Var(&c.Violations, "violations", 0.01, "probability per heartbeat tick that a student also logs a violation")
	fs.Float64Var(&c.ChatRate, "chat-rate", 0, "chat messages per second in all, students writing in exam rooms their tutors watch")
	fs.Float64Var(&c.ScoresRate, "scores-rate", 0, "score hooks per second in all; one projector socket watches each exam's leaderboard")
	fs.DurationVar(&c.Duration, "duration", 60*time.Second, "length of the measured phase (setup comes before it)")
	fs.DurationVar(&c.Ramp, "ramp", 0, "spread the students' arrival over this long (0: as fast as 64 at a time connect)")
	fs.DurationVar(&c.Settle, "settle", 0, "wait this long between setup and the measured phase (the join storm drains; a server that counts startSession as a heartbeat wants its INVIGIL_HEARTBEAT_MIN_INTERVAL here)")
	fs.DurationVar(&c.Progress, "progress", 5*time.Second, "time between progress lines (0: none)")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "", "sign HS256 tokens with this secret, the server's SUPABASE_JWT_SECRET (default $SUPABASE_JWT_SECRET)")
	fs.StringVar(&c.Issuer, "issuer", "", "iss of signed tokens, the server's SUPABASE_JWT_ISSUER (default <url>/auth/v1; - for none)")
	fs.BoolVar(&c.Demo, "demo", false, "get tokens from the demo issuer (POST /demo/token) of a server run with --demo")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", "", "whsec_… secret to sign /hooks/exams and /hooks/scores (default $INVIGIL_WEBHOOK_SECRET, or the demo's with --demo)")
	fs.BoolVar(&c.JSON, "json", false, "write the final figures as JSON on stdout (the table goes to stderr)")
	fs.IntVar(&c.Procs, "procs", 1, "run the load as this many child processes, each a share of the exams, and aggregate their figures")
	addrs := fs.String("source-addrs", "", "comma list of local addresses to open sockets from, round robin (e.g. 127.0.0.1,127.0.0.2)")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a target that is not this machine (staging)")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "the server's process id, for its CPU and RSS (default: the process listening on the target port; -1: none)")
	fs.Uint64Var(&c.Seed, "seed", 0, "seed for jitter and violations (0: random)")
	fs.StringVar(&c.RunID, "run-id", "", "tags this run's messages, scores and quiz codes (default random)")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the load generator's CPU profile (pprof) to this file, to check it is not the bottleneck")
	fs.BoolVar(&c.Child, "child", false, "")
	shard := fs.String("shard", "", "")
	fs.Usage = func() {
		fmt.Fprintf(usage, "usage: invigil load --url URL (--jwt-secret S | --demo) [flags]\n\n"+
			"Puts exam-day load on a running invigil and reports what students and tutors experienced.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			if hidden[f.Name] {
				return
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
				def = " (default " + f.DefValue + ")"
			}
			name, text := flag.UnquoteUsage(f)
			if name != "" {
				name = " " + name
			}
			fmt.Fprintf(usage, "  --%s%s\n    \t%s%s\n", f.Name, name, text, def)
		})
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if !c.Demo && !set["jwt-secret"] {
		c.JWTSecret = getenv("SUPABASE_JWT_SECRET")
	}
	if !set["webhook-secret"] {
		if c.Demo {
			c.WebhookSecret = DemoWebhookSecret
		} else {
			c.WebhookSecret = getenv("INVIGIL_WEBHOOK_SECRET")
		}
	}
	if c.Issuer == "" {
		c.Issuer = strings.TrimRight(c.URL, "/") + "/auth/v1"
	}
	for _, a := range strings.Split(*addrs, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		ip := net.ParseIP(a)
		if ip == nil {
			return c, fmt.Errorf("--source-addrs: %q is not an IP address", a)
		}
		c.SourceAddrs = append(c.SourceAddrs, ip)
	}
	c.Shards = 1
	if *shard != "" {
		k, n, ok := strings.Cut(*shard, "/")
		var err1, err2 error
		c.Shard, err1 = strconv.Atoi(k)
		c.Shards, err2 = strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || c.Shards < 1 || c.Shard < 0 || c.Shard >= c.Shards {
			return c, fmt.Errorf("--shard %q: want k/n", *shard)
		}
	}
	if c.RunID == "" {
		b := make([]byte, 3)
		rand.Read(b)
		c.RunID = hex.EncodeToString(b)
	}
	return c, c.Validate()
}

// Validate checks a configuration; every refusal says which flag to change.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		return fmt.Errorf("--url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("--url must be http(s)://host:port, got %q", c.URL)
	case u.Host == "":
		return fmt.Errorf("--url %q has no host", c.URL)
	case !c.AllowRemote && !isLoopbackHost(u.Hostname()):
		return fmt.Errorf("--url %q is not this machine: load only targets loopback (127.0.0.0/8, ::1, localhost) unless --allow-remote", c.URL)
	}
	switch {
	case c.Students < 1 || c.Students > MaxStudents:
		return fmt.Errorf("--students must be between 1 and %d", MaxStudents)
	case c.Exams < 1 || c.Exams > c.Students:
		return errors.New("--exams must be between 1 and --students")
	case c.TutorsPerExam < 0 || c.TutorsPerExam > MaxTutorsPerExam:
		return fmt.Errorf("--tutors-per-exam must be between 0 and %d", MaxTutorsPerExam)
	case c.Interval < MinInterval || c.Interval > time.Hour:
		return fmt.Errorf("--interval must be between %s and 1h", MinInterval)
	case c.Duration < time.Second || c.Duration > MaxDuration:
		return fmt.Errorf("--duration must be between 1s and %s", MaxDuration)
	case c.Ramp < 0 || c.Ramp > time.Hour:
		return errors.New("--ramp must be between 0 and 1h")
	case c.Settle < 0 || c.Settle > time.Hour:
		return errors.New("--settle must be between 0 and 1h")
	case c.Progress < 0:
		return errors.New("--progress must not be negative")
	case !(c.Violations >= 0 && c.Violations <= 1):
		return errors.New("--violations is a probability between 0 and 1")
	case !(c.ChatRate >= 0 && c.ChatRate <= MaxRate):
		return fmt.Errorf("--chat-rate must be between 0 and %d messages per second", MaxRate)
	case c.ChatRate > 0 && roomsPerExam(c.ChatRate, c.Exams) > c.Students/c.Exams:
		return fmt.Errorf("--chat-rate %g needs %d rooms per exam (each room's student sends at most %g messages a second, under the server's 1 a second per user): give at least %d students per exam",
			c.ChatRate, roomsPerExam(c.ChatRate, c.Exams), roomRate, roomsPerExam(c.ChatRate, c.Exams))
	case !(c.ScoresRate >= 0 && c.ScoresRate <= MaxRate):
		return fmt.Errorf("--scores-rate must be between 0 and %d hooks per second", MaxRate)
	case c.Procs < 1 || c.Procs > MaxProcs:
		return fmt.Errorf("--procs must be between 1 and %d", MaxProcs)
	case c.Procs > c.Exams:
		return errors.New("--procs must not exceed --exams: each process takes whole exams")
	case c.ServerPID < -1:
		return errors.New("--server-pid must be a process id (-1: none)")
	case strings.ContainsAny(c.RunID, " \t\n\"\\/") || len(c.RunID) > 16:
		return errors.New("--run-id is up to 16 characters, no spaces, quotes or slashes")
	}
	switch {
	case c.Demo && c.JWTSecret != "":
		return errors.New("--demo and --jwt-secret are two ways to get tokens: choose one")
	case !c.Demo && c.JWTSecret == "":
		return errors.New("tokens: give --jwt-secret (the server's SUPABASE_JWT_SECRET) or --demo (a server run with --demo)")
	case c.Demo && setupAllowance+c.Settle+c.Duration > demoTokenTTL-5*time.Minute:
		return fmt.Errorf("--duration: demo tokens last %s; use --jwt-secret for longer runs", demoTokenTTL)
	case c.WebhookSecret == "":
		return errors.New("--webhook-secret (the server's INVIGIL_WEBHOOK_SECRET) is needed to register the load's exams")
	}
	if _, err := webhook.Sign(c.WebhookSecret, "check", time.Now(), nil); err != nil {
		return fmt.Errorf("--webhook-secret: %w", err)
	}
	for _, ip := range c.SourceAddrs {
		if !c.AllowRemote && !ip.IsLoopback() {
			return fmt.Errorf("--source-addrs: %s is not a loopback address (--allow-remote to use others)", ip)
		}
		if target := net.ParseIP(u.Hostname()); target != nil && (target.To4() == nil) != (ip.To4() == nil) {
			return fmt.Errorf("--source-addrs: %s and the target %s are not the same IP version", ip, target)
		}
	}
	// Descriptors and ports: say how to split before the kernel refuses.
	if perProc := c.socketsPerProc(c.Procs); perProc > MaxSocketsPerProc {
		for p := c.Procs + 1; p <= min(c.Exams, MaxProcs); p++ {
			if c.socketsPerProc(p) <= MaxSocketsPerProc {
				return fmt.Errorf("about %d sockets in one process, more than the %d a process may hold here: use --procs %d",
					perProc, MaxSocketsPerProc, p)
			}
		}
		return fmt.Errorf("about %d sockets in one process, more than the %d a process may hold here: use more --exams and --procs",
			perProc, MaxSocketsPerProc)
	}
	if ports := localPorts(); c.Sockets() > ports*max(1, len(c.SourceAddrs)) {
		return fmt.Errorf("%d sockets need more than the %d local ports of %d source address(es): add --source-addrs 127.0.0.1,127.0.0.2,…",
			c.Sockets(), ports*max(1, len(c.SourceAddrs)), max(1, len(c.SourceAddrs)))
	}
	return nil
}

// setupAllowance bounds connecting and joining; tokens outlive it.
const setupAllowance = 10 * time.Minute

// socketsPerProc is what the busiest of procs processes opens.
func (c Config) socketsPerProc(procs int) int {
	return c.socketsPerExam()*ceilDiv(c.Exams, procs) + 64
}

func (c Config) socketsPerExam() int {
	s := ceilDiv(c.Students, c.Exams) + c.TutorsPerExam
	if c.ScoresRate > 0 {
		s++ // the projector
	}
	return s
}

// Sockets is the number of sockets the whole run opens.
func (c Config) Sockets() int {
	s := c.Students + c.Exams*c.TutorsPerExam
	if c.ScoresRate > 0 {
		s += c.Exams
	}
	return s
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// isLoopbackHost accepts localhost and loopback IPs; other names are refused
// even when they resolve to loopback today.
func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback() && (ip.To4() != nil || ip.Equal(net.IPv6loopback))
}

// localPorts is the size of the kernel's ephemeral port range.
func localPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, err1 := strconv.Atoi(f[0])
			hi, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && hi > lo {
				return hi - lo + 1
			}
		}
	}
	return 28_232
}

// roomsPerExam is how many chat rooms each exam needs so that no room's
// student sends more than roomRate messages a second.
func roomsPerExam(chatRate float64, exams int) int {
	return max(1, int(math.Ceil(chatRate/float64(exams)/roomRate)))
}
