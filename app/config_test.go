package app_test

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"invigil/app"
)

func TestLoadConfig(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		check   func(app.Config) bool
		wantErr string
	}{
		{"production defaults", map[string]string{"SUPABASE_URL": "https://ref.supabase.co/"}, nil,
			func(c app.Config) bool {
				return c.Addr == ":8080" && c.DB == "data/invigil.db" && c.HeartbeatMin == 5*time.Second &&
					c.DisconnectAfter == 25*time.Second && c.PresenceTTL == time.Minute && c.TypingTTL == 6*time.Second &&
					c.Retention == 24*time.Hour && c.StaleAfter == 2*time.Minute && c.Issuer() == "https://ref.supabase.co/auth/v1" &&
					c.JWKSURL == "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
			}, ""},
		{"environment overrides", map[string]string{
			"SUPABASE_URL": "https://ref.supabase.co", "PORT": "9000", "INVIGIL_DISCONNECT_AFTER": "40s",
			"INVIGIL_ALLOWED_ORIGINS": "https://a.example, https://b.example", "SUPABASE_JWKS_URL": "https://keys.example/jwks",
		}, nil, func(c app.Config) bool {
			return c.Addr == ":9000" && c.DisconnectAfter == 40*time.Second && len(c.AllowedOrigins) == 2 &&
				c.AllowedOrigins[1] == "https://b.example" && c.JWKSURL == "https://keys.example/jwks"
		}, ""},
		{"flags mirror the environment", map[string]string{"SUPABASE_URL": "https://ref.supabase.co", "PORT": "9000"},
			[]string{"--port", "9100", "--heartbeat-min-interval", "2s"},
			func(c app.Config) bool { return c.Addr == ":9100" && c.HeartbeatMin == 2*time.Second }, ""},
		{"demo binds loopback only", nil, []string{"--demo"},
			func(c app.Config) bool { return c.Demo && c.Addr == "127.0.0.1:8080" && c.DemoStudents == 25 }, ""},
		{"issuer override", map[string]string{"SUPABASE_URL": "http://kong:8000", "SUPABASE_JWT_ISSUER": "http://localhost:9999"}, nil,
			func(c app.Config) bool { return c.Issuer() == "http://localhost:9999" }, ""},
		{"tokens without iss", map[string]string{"SUPABASE_URL": "http://kong:8000", "SUPABASE_JWT_ISSUER": "-"}, nil,
			func(c app.Config) bool { return c.Issuer() == "" }, ""},
		{"operations settings", map[string]string{"SUPABASE_URL": "https://ref.supabase.co", "INVIGIL_METRICS_TOKEN": "m3tr1cs",
			"INVIGIL_STALE_AFTER": "5m", "INVIGIL_REMINDER_URL": "https://notify.example/hook"}, []string{"--pprof"},
			func(c app.Config) bool {
				return c.MetricsToken == "m3tr1cs" && c.StaleAfter == 5*time.Minute && c.ReminderURL == "https://notify.example/hook" && c.Pprof
			}, ""},
		{"no way to verify tokens", nil, nil, nil, "SUPABASE_URL=https://<ref>.supabase.co"},
		{"bad port", map[string]string{"SUPABASE_URL": "https://ref.supabase.co", "PORT": "http"}, nil, nil, "PORT"},
		{"stray argument", map[string]string{"SUPABASE_URL": "https://ref.supabase.co"}, []string{"serve"}, nil, "serve"},
		{"bad reminder URL", map[string]string{"SUPABASE_URL": "https://ref.supabase.co", "INVIGIL_REMINDER_URL": "notify.example/hook"}, nil, nil, "INVIGIL_REMINDER_URL"},
		{"bad duration", map[string]string{"SUPABASE_URL": "https://ref.supabase.co", "INVIGIL_TYPING_TTL": "soon"}, nil, nil, "INVIGIL_TYPING_TTL"},
		{"zero duration", map[string]string{"SUPABASE_URL": "https://ref.supabase.co", "INVIGIL_RETENTION": "0s"}, nil, nil, "INVIGIL_RETENTION"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := app.LoadConfig(func(k string) string { return c.env[k] }, c.args)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("want an error naming %s, got %v", c.wantErr, err)
				}
				return
			}
			if err != nil || !c.check(got) {
				t.Fatalf("err %v, config %+v", err, got)
			}
		})
	}
}

// TestHelpListsEverything: invigil --help names every command, flag and
// environment variable of the contract, with its default.
func TestHelpListsEverything(t *testing.T) {
	var b strings.Builder
	app.Usage(&b)
	help := b.String()
	for _, want := range []string{
		"invigil load", "invigil backup PATH", "--demo", "--demo-students", "--pprof",
		"PORT", "INVIGIL_DB", "SUPABASE_URL", "SUPABASE_JWKS_URL", "SUPABASE_JWT_ISSUER", "SUPABASE_JWT_SECRET",
		"SUPABASE_SERVICE_ROLE_KEY", "INVIGIL_WEBHOOK_SECRET", "INVIGIL_ALLOWED_ORIGINS",
		"INVIGIL_HEARTBEAT_MIN_INTERVAL", "INVIGIL_DISCONNECT_AFTER", "INVIGIL_PRESENCE_TTL", "INVIGIL_TYPING_TTL",
		"INVIGIL_RETENTION", "INVIGIL_STALE_AFTER", "INVIGIL_METRICS_TOKEN", "INVIGIL_REMINDER_URL",
		"default 8080", "default data/invigil.db", "default 5s", "default 25s", "default 60s", "default 6s",
		"default 24h", "default 2m",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
	if _, err := app.LoadConfig(func(string) string { return "" }, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: want flag.ErrHelp, got %v", err)
	}
}
