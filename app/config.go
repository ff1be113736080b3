package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is invigil's configuration (CONTRACT §1): environment variables,
// mirrored by flags.
type Config struct {
	Demo         bool
	DemoStudents int
	Addr         string // host:port to listen on
	DB           string

	SupabaseURL     string
	JWKSURL         string
	JWTIssuer       string // the iss tokens must carry; "-": none
	JWTSecret       string
	ServiceRoleKey  string
	WebhookSecret   string
	AllowedOrigins  []string
	HeartbeatMin    time.Duration
	DisconnectAfter time.Duration
	PresenceTTL     time.Duration
	TypingTTL       time.Duration
	Retention       time.Duration
	StaleAfter      time.Duration
	MetricsToken    string
	ReminderURL     string
	Pprof           bool // serve /debug/pprof/ (behind MetricsToken when set)

	// ViolationDetailCap is how many violation rows a session keeps (the
	// count stays exact past it); 0 is the default, 500.
	ViolationDetailCap int
	// ViolationsPerMinute is how many violation rows a session keeps per
	// minute (the count stays exact past it); 0 is the default, 60.
	ViolationsPerMinute int

	// SendQueueBytes is how many bytes of frames a socket may have waiting
	// before it is closed as too slow; 0 is the default, 4 MiB.
	SendQueueBytes int

	// ReadHeaderTimeout and IdleTimeout bound slow and idle HTTP clients;
	// 0 is the default (10 s and 120 s). DrainTimeout bounds how long a
	// shutdown waits for queued frames (default 5 s).
	ReadHeaderTimeout, IdleTimeout, DrainTimeout time.Duration
	// WriteTimeout closes a socket whose write blocked this long (its client
	// stopped reading); 0 is the default, 10 s.
	WriteTimeout time.Duration
	// PushInterval spaces each live query's runs under load (see
	// engine.Options.MinInterval); 0 is the default, 5 ms; negative: none.
	PushInterval time.Duration
	// StallLag: the process this late on its 100 ms tick counts as past
	// capacity (overload control); 0 is the default, 250 ms.
	StallLag time.Duration
}

// setting is one configuration item: its environment variable, its flag
// (when it has one), its default and what it means. This table is the one
// source of the defaults, the flags and `invigil --help`.
type setting struct {
	env, flag, def, help string
	secret               bool // never shown, never a flag (it would land in ps output)
	set                  func(c *Config, v string) error
}

func settings() []setting {
	duration := func(dst func(*Config) *time.Duration, name string) func(*Config, string) error {
		return func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("%s: %q is not a positive Go duration (like 25s or 2m)", name, v)
			}
			*dst(c) = d
			return nil
		}
	}
	str := func(dst func(*Config) *string) func(*Config, string) error {
		return func(c *Config, v string) error { *dst(c) = v; return nil }
	}
	return []setting{
		{env: "PORT", flag: "port", def: "8080", help: "HTTP port (--demo binds 127.0.0.1 only)",
			set: func(c *Config, v string) error {
				if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 65535 {
					return fmt.Errorf("PORT: %q is not a port number", v)
				}
				c.Addr = ":" + v
				return nil
			}},
		{env: "INVIGIL_DB", flag: "db", def: "data/invigil.db", help: "the SQLite file (WAL mode), created with its schema if missing",
			set: str(func(c *Config) *string { return &c.DB })},
		{env: "SUPABASE_URL", flag: "supabase-url", help: "https://<ref>.supabase.co: tokens' issuer and key set, and Supabase REST for archival",
			set: str(func(c *Config) *string { return &c.SupabaseURL })},
		{env: "SUPABASE_JWKS_URL", flag: "jwks-url", help: "the key set URL (default $SUPABASE_URL/auth/v1/.well-known/jwks.json)",
			set: str(func(c *Config) *string { return &c.JWKSURL })},
		{env: "SUPABASE_JWT_ISSUER", flag: "jwt-issuer", help: "the iss tokens must carry (default $SUPABASE_URL/auth/v1); - accepts tokens without iss",
			set: str(func(c *Config) *string { return &c.JWTIssuer })},
		{env: "SUPABASE_JWT_SECRET", secret: true, help: "legacy HS256 secret (projects not yet on asymmetric keys)",
			set: str(func(c *Config) *string { return &c.JWTSecret })},
		{env: "SUPABASE_SERVICE_ROLE_KEY", secret: true, help: "for archival to Supabase REST only; without it archives wait in the outbox",
			set: str(func(c *Config) *string { return &c.ServiceRoleKey })},
		{env: "INVIGIL_WEBHOOK_SECRET", secret: true, help: "whsec_… secret of inbound hooks; a comma list while rotating (any of them verifies)",
			set: str(func(c *Config) *string { return &c.WebhookSecret })},
		{env: "INVIGIL_ALLOWED_ORIGINS", flag: "allowed-origins", help: "comma list of browser origins allowed to open /ws (default: the page's own)",
			set: func(c *Config, v string) error {
				c.AllowedOrigins = nil
				for _, o := range strings.Split(v, ",") {
					if o = strings.TrimSpace(o); o != "" {
						c.AllowedOrigins = append(c.AllowedOrigins, o)
					}
				}
				return nil
			}},
		{env: "INVIGIL_HEARTBEAT_MIN_INTERVAL", flag: "heartbeat-min-interval", def: "5s", help: "a heartbeat sooner than this after the last is refused (rate_limited)",
			set: duration(func(c *Config) *time.Duration { return &c.HeartbeatMin }, "INVIGIL_HEARTBEAT_MIN_INTERVAL")},
		{env: "INVIGIL_DISCONNECT_AFTER", flag: "disconnect-after", def: "25s", help: "silence after which an active session shows disconnected; pings go at a third of it",
			set: duration(func(c *Config) *time.Duration { return &c.DisconnectAfter }, "INVIGIL_DISCONNECT_AFTER")},
		{env: "INVIGIL_PRESENCE_TTL", flag: "presence-ttl", def: "60s", help: "presence rows expire after this much silence",
			set: duration(func(c *Config) *time.Duration { return &c.PresenceTTL }, "INVIGIL_PRESENCE_TTL")},
		{env: "INVIGIL_TYPING_TTL", flag: "typing-ttl", def: "6s", help: "a typing flag clears itself after this",
			set: duration(func(c *Config) *time.Duration { return &c.TypingTTL }, "INVIGIL_TYPING_TTL")},
		{env: "INVIGIL_RETENTION", flag: "retention", def: "24h", help: "ended sessions and chats are purged this long after their archive reached Supabase",
			set: duration(func(c *Config) *time.Duration { return &c.Retention }, "INVIGIL_RETENTION")},
		{env: "INVIGIL_STALE_AFTER", flag: "stale-after", def: "2m", help: "a session silent this long after its exam ended is expired and archived",
			set: duration(func(c *Config) *time.Duration { return &c.StaleAfter }, "INVIGIL_STALE_AFTER")},
		{env: "INVIGIL_METRICS_TOKEN", secret: true, help: "when set, /metrics (and /debug/pprof) require Authorization: Bearer <token>",
			set: str(func(c *Config) *string { return &c.MetricsToken })},
		{env: "INVIGIL_REMINDER_URL", flag: "reminder-url", help: "the platform's notification endpoint: exams starting within 15 minutes are announced there once, signed",
			set: str(func(c *Config) *string { return &c.ReminderURL })},
	}
}

// DefaultConfig is the contract's defaults (CONTRACT §1), before the
// environment and flags.
func DefaultConfig() Config {
	c := Config{DemoStudents: 25}
	for _, s := range settings() {
		if s.def != "" {
			if err := s.set(&c, s.def); err != nil {
				panic(err) // a default that does not parse is a bug here
			}
		}
	}
	return c
}

// Usage writes `invigil --help`: every command, flag and environment
// variable with its default.
func Usage(w io.Writer) {
	fmt.Fprint(w, `invigil: the live layer of an online exam platform on Supabase.

Commands:
  invigil [flags]            serve (production: needs SUPABASE_URL)
  invigil --demo [flags]     everything on one machine, no accounts: http://127.0.0.1:8080
  invigil load --url URL …   the load generator (invigil load --help)
  invigil backup PATH        an online, consistent copy of INVIGIL_DB to PATH

Flags (only here):
  --demo                     dev sign-in, a demo exam (quiz DEMO42) and simulated students, on 127.0.0.1
  --demo-students N          simulated students in --demo (default 25)
  --pprof                    serve /debug/pprof/ (behind INVIGIL_METRICS_TOKEN when set; off by default)

Environment variables (the flag beside each mirrors it; secrets have no flag):
`)
	for _, s := range settings() {
		flagName := "(no flag: secret)"
		if !s.secret {
			flagName = "--" + s.flag
		}
		def := s.def
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(w, "  %-31s %-27s default %-16s %s\n", s.env, flagName, def, s.help)
	}
	fmt.Fprintln(w, "\nDurations are Go duration strings (25s, 2m, 24h).")
}

// LoadConfig reads the environment (through getenv) and the flags in args.
func LoadConfig(getenv func(string) string, args []string) (Config, error) {
	fs := flag.NewFlagSet("invigil", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // Usage prints the help; errors are returned
	c := DefaultConfig()
	fs.BoolVar(&c.Demo, "demo", false, "")
	fs.IntVar(&c.DemoStudents, "demo-students", c.DemoStudents, "")
	fs.BoolVar(&c.Pprof, "pprof", false, "")
	all := settings()
	flags := make([]*string, len(all))
	for i, s := range all {
		if s.secret {
			continue
		}
		v := s.def
		if e := getenv(s.env); e != "" {
			v = e
		}
		flags[i] = fs.String(s.flag, v, s.help)
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (see invigil --help)", fs.Arg(0))
	}
	for i, s := range all {
		v := getenv(s.env)
		if flags[i] != nil {
			v = *flags[i]
		}
		if v == "" {
			continue
		}
		if err := s.set(&c, v); err != nil {
			return Config{}, err
		}
	}
	c.SupabaseURL = strings.TrimRight(c.SupabaseURL, "/")
	if c.JWKSURL == "" && c.SupabaseURL != "" {
		c.JWKSURL = c.SupabaseURL + "/auth/v1/.well-known/jwks.json"
	}
	if c.Demo {
		c.Addr = "127.0.0.1" + c.Addr // the demo signs anyone in: never beyond this machine
	}
	if !c.Demo && c.SupabaseURL == "" {
		return Config{}, fmt.Errorf(`no way to verify tokens. Set:
  SUPABASE_URL=https://<ref>.supabase.co   (tokens are checked against its key set)
  SUPABASE_JWT_SECRET=…                    (also, for projects still on the legacy HS256 secret)
  INVIGIL_WEBHOOK_SECRET=whsec_…           (to accept exams and scores from Supabase)
  SUPABASE_SERVICE_ROLE_KEY=…              (to archive summaries and transcripts to Supabase)
or run with --demo. Every setting: invigil --help`)
	}
	if c.ReminderURL != "" {
		u, err := url.Parse(c.ReminderURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return Config{}, errors.New("INVIGIL_REMINDER_URL is not an http(s) URL")
		}
	}
	if c.DemoStudents < 0 || c.DemoStudents > 5000 {
		return Config{}, fmt.Errorf("--demo-students must be between 0 and 5000")
	}
	return c, nil
}

// Issuer is the iss tokens must carry: SUPABASE_JWT_ISSUER, else the one
// Supabase uses ($SUPABASE_URL/auth/v1); "" when it is "-" (none).
func (c Config) Issuer() string {
	switch c.JWTIssuer {
	case "":
		return c.SupabaseURL + "/auth/v1"
	case "-":
		return ""
	}
	return c.JWTIssuer
}
