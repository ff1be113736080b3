package app

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
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
}

// DefaultConfig is the contract's defaults (CONTRACT §1), before the
// environment and flags.
func DefaultConfig() Config {
	return Config{
		DemoStudents:    25,
		DB:              "data/invigil.db",
		HeartbeatMin:    5 * time.Second,
		DisconnectAfter: 25 * time.Second,
		PresenceTTL:     60 * time.Second,
		TypingTTL:       6 * time.Second,
		Retention:       24 * time.Hour,
		StaleAfter:      2 * time.Minute,
	}
}

// LoadConfig reads the environment (through getenv) and the flags in args.
func LoadConfig(getenv func(string) string, args []string) (Config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("invigil", flag.ContinueOnError)
	c := DefaultConfig()
	port := fs.String("port", env("PORT", "8080"), "HTTP port (PORT)")
	fs.BoolVar(&c.Demo, "demo", false, "run on 127.0.0.1 with dev sign-in, a demo exam and simulated students")
	fs.IntVar(&c.DemoStudents, "demo-students", c.DemoStudents, "simulated students in --demo")
	fs.StringVar(&c.DB, "db", env("INVIGIL_DB", c.DB), "SQLite file (INVIGIL_DB)")
	fs.StringVar(&c.SupabaseURL, "supabase-url", env("SUPABASE_URL", ""), "https://<ref>.supabase.co (SUPABASE_URL)")
	fs.StringVar(&c.JWKSURL, "jwks-url", env("SUPABASE_JWKS_URL", ""), "key set URL (SUPABASE_JWKS_URL; default derived from SUPABASE_URL)")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", env("SUPABASE_JWT_ISSUER", ""), "the iss tokens must carry, or - for none (SUPABASE_JWT_ISSUER; default $SUPABASE_URL/auth/v1)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve /debug/pprof/ (behind INVIGIL_METRICS_TOKEN when set)")
	origins := fs.String("allowed-origins", env("INVIGIL_ALLOWED_ORIGINS", ""), "browser origins allowed on /ws (INVIGIL_ALLOWED_ORIGINS)")
	durations := []struct {
		dst             *time.Duration
		flag, env, help string
	}{
		{&c.HeartbeatMin, "heartbeat-min-interval", "INVIGIL_HEARTBEAT_MIN_INTERVAL", "heartbeats sooner than this are refused"},
		{&c.DisconnectAfter, "disconnect-after", "INVIGIL_DISCONNECT_AFTER", "silence before a session shows disconnected"},
		{&c.PresenceTTL, "presence-ttl", "INVIGIL_PRESENCE_TTL", "presence expiry"},
		{&c.TypingTTL, "typing-ttl", "INVIGIL_TYPING_TTL", "typing flag expiry"},
		{&c.Retention, "retention", "INVIGIL_RETENTION", "purge delay after archival"},
		{&c.StaleAfter, "stale-after", "INVIGIL_STALE_AFTER", "silence after an exam's end before a session is expired"},
	}
	raw := make([]*string, len(durations))
	for i, d := range durations {
		raw[i] = fs.String(d.flag, env(d.env, d.dst.String()), d.help+" ("+d.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	for i, d := range durations {
		v, err := time.ParseDuration(*raw[i])
		if err != nil || v <= 0 {
			return Config{}, fmt.Errorf("%s: %q is not a positive Go duration", d.env, *raw[i])
		}
		*d.dst = v
	}
	c.JWTSecret = getenv("SUPABASE_JWT_SECRET")
	c.ServiceRoleKey = getenv("SUPABASE_SERVICE_ROLE_KEY")
	c.WebhookSecret = getenv("INVIGIL_WEBHOOK_SECRET")
	c.MetricsToken = getenv("INVIGIL_METRICS_TOKEN")
	c.ReminderURL = getenv("INVIGIL_REMINDER_URL")
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	c.SupabaseURL = strings.TrimRight(c.SupabaseURL, "/")
	if c.JWKSURL == "" && c.SupabaseURL != "" {
		c.JWKSURL = c.SupabaseURL + "/auth/v1/.well-known/jwks.json"
	}
	host := ""
	if c.Demo {
		host = "127.0.0.1"
	}
	c.Addr = host + ":" + *port
	if !c.Demo && c.SupabaseURL == "" {
		return Config{}, fmt.Errorf("no way to verify tokens: set SUPABASE_URL (and SUPABASE_JWT_SECRET for HS256 projects), or run with --demo")
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
