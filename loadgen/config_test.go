package loadgen

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	const secret = "--jwt-secret=s3cret"
	const hook = "--webhook-secret=" + DemoWebhookSecret
	noEnv := func(string) string { return "" }
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // substring; "" means accepted
		check   func(t *testing.T, c Config)
	}{
		{name: "defaults with a secret", args: []string{secret, hook}, check: func(t *testing.T, c Config) {
			if c.URL != "http://127.0.0.1:8080" || c.Students != 100 || c.Exams != 1 || c.TutorsPerExam != 1 ||
				c.Interval != 10*time.Second || c.Duration != time.Minute || c.Procs != 1 || c.Shards != 1 {
				t.Errorf("defaults: %+v", c)
			}
			if c.Issuer != "http://127.0.0.1:8080/auth/v1" {
				t.Errorf("issuer %q: want <url>/auth/v1", c.Issuer)
			}
			if len(c.RunID) != 6 {
				t.Errorf("run id %q", c.RunID)
			}
		}},
		{name: "demo takes the demo hook secret", args: []string{"--demo"}, check: func(t *testing.T, c Config) {
			if c.WebhookSecret != DemoWebhookSecret || c.JWTSecret != "" {
				t.Errorf("demo: %+v", c)
			}
		}},
		{name: "demo ignores SUPABASE_JWT_SECRET", args: []string{"--demo"}, env: map[string]string{"SUPABASE_JWT_SECRET": "x"}},
		{name: "secrets from the environment", args: nil,
			env: map[string]string{"SUPABASE_JWT_SECRET": "x", "INVIGIL_WEBHOOK_SECRET": DemoWebhookSecret},
			check: func(t *testing.T, c Config) {
				if c.JWTSecret != "x" || c.WebhookSecret != DemoWebhookSecret {
					t.Errorf("env: %+v", c)
				}
			}},
		{name: "every flag", args: []string{secret, hook, "--url=http://localhost:9000/", "--students=1000", "--exams=10",
			"--tutors-per-exam=3", "--interval=2s", "--violations=0.5", "--chat-rate=20", "--scores-rate=5", "--duration=20s",
			"--ramp=5s", "--settle=3s", "--progress=1s", "--issuer=-", "--json", "--procs=2", "--source-addrs=127.0.0.1, 127.0.0.2",
			"--server-pid=-1", "--seed=7", "--run-id=abc"},
			check: func(t *testing.T, c Config) {
				if c.Students != 1000 || c.Exams != 10 || c.TutorsPerExam != 3 || c.Interval != 2*time.Second ||
					c.Violations != 0.5 || c.ChatRate != 20 || c.ScoresRate != 5 || c.Duration != 20*time.Second ||
					c.Ramp != 5*time.Second || c.Settle != 3*time.Second || c.Progress != time.Second || c.Issuer != "-" || !c.JSON || c.Procs != 2 ||
					len(c.SourceAddrs) != 2 || c.ServerPID != -1 || c.Seed != 7 || c.RunID != "abc" {
					t.Errorf("parsed: %+v", c)
				}
			}},
		{name: "ipv6 loopback", args: []string{secret, hook, "--url=http://[::1]:8080"}},
		{name: "https localhost", args: []string{secret, hook, "--url=https://localhost"}},
		{name: "remote with opt-in", args: []string{secret, hook, "--url=https://staging.example.com", "--allow-remote"}},
		{name: "child shard", args: []string{secret, hook, "--exams=4", "--students=8", "--child", "--shard=3/4"},
			check: func(t *testing.T, c Config) {
				if !c.Child || c.Shard != 3 || c.Shards != 4 {
					t.Errorf("shard: %+v", c)
				}
			}},

		{name: "remote refused", args: []string{secret, hook, "--url=http://10.0.0.5:8080"}, wantErr: "not this machine"},
		{name: "a name that resolves to loopback is still a name", args: []string{secret, hook, "--url=http://127.0.0.1.nip.io"}, wantErr: "not this machine"},
		{name: "unspecified address", args: []string{secret, hook, "--url=http://0.0.0.0:8080"}, wantErr: "not this machine"},
		{name: "mapped remote", args: []string{secret, hook, "--url=http://[::ffff:8.8.8.8]:80"}, wantErr: "not this machine"},
		{name: "ws scheme", args: []string{secret, hook, "--url=ws://127.0.0.1:8080"}, wantErr: "http(s)"},
		{name: "no token source", args: []string{hook}, wantErr: "--jwt-secret"},
		{name: "two token sources", args: []string{secret, "--demo"}, wantErr: "choose one"},
		{name: "no webhook secret", args: []string{secret}, wantErr: "--webhook-secret"},
		{name: "bad webhook secret", args: []string{secret, "--webhook-secret=hunter2"}, wantErr: "whsec_"},
		{name: "no students", args: []string{secret, hook, "--students=0"}, wantErr: "--students"},
		{name: "more exams than students", args: []string{secret, hook, "--students=5", "--exams=6"}, wantErr: "--exams"},
		{name: "too many tutors", args: []string{secret, hook, "--tutors-per-exam=51"}, wantErr: "--tutors-per-exam"},
		{name: "interval too short", args: []string{secret, hook, "--interval=50ms"}, wantErr: "--interval"},
		{name: "no duration", args: []string{secret, hook, "--duration=0s"}, wantErr: "--duration"},
		{name: "duration too long", args: []string{secret, hook, "--duration=7h"}, wantErr: "--duration"},
		{name: "demo tokens expire", args: []string{"--demo", "--duration=1h"}, wantErr: "demo tokens"},
		{name: "negative settle", args: []string{secret, hook, "--settle=-1s"}, wantErr: "--settle"},
		{name: "violations above one", args: []string{secret, hook, "--violations=1.5"}, wantErr: "--violations"},
		{name: "violations NaN", args: []string{secret, hook, "--violations=NaN"}, wantErr: "--violations"},
		{name: "negative chat rate", args: []string{secret, hook, "--chat-rate=-1"}, wantErr: "--chat-rate"},
		{name: "a chat rate the students cannot send", args: []string{secret, hook, "--students=10", "--exams=2", "--chat-rate=10"}, wantErr: "--chat-rate"},
		{name: "scores rate too high", args: []string{secret, hook, "--scores-rate=100000"}, wantErr: "--scores-rate"},
		{name: "procs above exams", args: []string{secret, hook, "--procs=2"}, wantErr: "--procs"},
		{name: "zero procs", args: []string{secret, hook, "--procs=0"}, wantErr: "--procs"},
		{name: "too many sockets for one process", args: []string{secret, hook, "--students=19000", "--exams=190"}, wantErr: "use --procs 2"},
		{name: "18,000 fit in one process", args: []string{secret, hook, "--students=18000", "--exams=180"}},
		{name: "split over two processes", args: []string{secret, hook, "--students=18000", "--exams=180", "--procs=2"}},
		{name: "one exam too big for any process", args: []string{secret, hook, "--students=20000", "--procs=1"}, wantErr: "more --exams"},
		{name: "too many sockets for one source address", args: []string{secret, hook, "--students=40000", "--exams=400", "--procs=4"}, wantErr: "--source-addrs"},
		{name: "enough source addresses", args: []string{secret, hook, "--students=40000", "--exams=400", "--procs=4", "--source-addrs=127.0.0.1,127.0.0.2"}},
		{name: "source address not an IP", args: []string{secret, hook, "--source-addrs=localhost"}, wantErr: "not an IP"},
		{name: "source address not loopback", args: []string{secret, hook, "--source-addrs=10.1.2.3"}, wantErr: "not a loopback"},
		{name: "source address of the other family", args: []string{secret, hook, "--source-addrs=::1"}, wantErr: "IP version"},
		{name: "bad shard", args: []string{secret, hook, "--shard=2/2"}, wantErr: "--shard"},
		{name: "bad run id", args: []string{secret, hook, "--run-id=a b"}, wantErr: "--run-id"},
		{name: "stray argument", args: []string{secret, hook, "now"}, wantErr: "unexpected argument"},
		{name: "unknown flag", args: []string{secret, hook, "--tutors=3"}, wantErr: "not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			getenv := noEnv
			if tc.env != nil {
				getenv = func(k string) string { return tc.env[k] }
			}
			c, err := Parse(tc.args, getenv, io.Discard)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("want accepted, got %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("want an error about %q, got none", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("want an error about %q, got %v", tc.wantErr, err)
			}
			if err == nil && tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestHelpListsEveryPublicFlag(t *testing.T) {
	var out strings.Builder
	if _, err := Parse([]string{"--help"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, f := range []string{"url", "students", "exams", "tutors-per-exam", "interval", "violations", "chat-rate",
		"scores-rate", "duration", "jwt-secret", "issuer", "demo", "webhook-secret", "json", "procs", "source-addrs",
		"allow-remote", "server-pid"} {
		if !strings.Contains(out.String(), "--"+f+"\n") && !strings.Contains(out.String(), "--"+f+" ") {
			t.Errorf("usage lacks --%s", f)
		}
	}
	if strings.Contains(out.String(), "--shard") || strings.Contains(out.String(), "--child") {
		t.Errorf("usage shows the parent-child flags:\n%s", out.String())
	}
}
