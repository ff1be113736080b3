// Package deploy_test checks the deploy and operations files against each
// other and against the code: the alert rules and the dashboard use only
// metrics invigil exports and point to runbook sections that exist; fly.toml,
// the Dockerfile, litestream.yml and the entrypoint agree on paths, versions
// and timeouts. The tests that build and start the binary, and run
// Litestream, are beside this file.
package deploy_test

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"

	"invigil/app/apptest"
)

// exported is every series name a running invigil exports, by type, read
// from its live registry (so the alerts and the dashboard cannot name a
// metric that does not exist), plus Prometheus' own per-target "up".
func exported(t *testing.T) map[string]string {
	t.Helper()
	h := apptest.Boot(t)
	families, err := h.App.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{"up": "gauge"}
	for _, f := range families {
		out[f.GetName()] = strings.ToLower(f.GetType().String())
	}
	return out
}

// metricRef finds the series names in a PromQL expression: invigil_*, go_*,
// process_* and up (as a whole word, not a label or a function argument).
var metricRef = regexp.MustCompile(`\b(?:invigil|go|process)_[a-z0-9_]+\b|\bup\b`)

// checkMetrics reports every name in expr that invigil does not export.
func checkMetrics(t *testing.T, metrics map[string]string, where, expr string) {
	t.Helper()
	for _, name := range metricRef.FindAllString(expr, -1) {
		if _, ok := metrics[name]; ok {
			continue
		}
		base, found := "", false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok {
				base, found = b, true
				break
			}
		}
		if found && metrics[base] == "histogram" {
			continue
		}
		t.Errorf("%s uses %s, which invigil does not export", where, name)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The alerts the issue asks for, at least.
var requiredAlerts = []string{
	"InvigilDown", "InvigilSocketsDropped", "InvigilOutboxGrowing", "InvigilOutboxStuck",
	"InvigilPushLatencyHigh", "InvigilCallErrors", "InvigilHookErrors", "InvigilJobErrors",
}

func TestAlertRules(t *testing.T) {
	metrics := exported(t)
	var rf ruleFile
	mustDecodeYAML(t, "deploy/alerts.yml", &rf)
	anchors := runbookAnchors(t)
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s has a rule that is not an alert: %q", g.Name, r.Expr)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			seen[r.Alert] = true
			checkMetrics(t, metrics, "alert "+r.Alert, r.Expr)
			if sev := r.Labels["severity"]; sev != "page" && sev != "ticket" {
				t.Errorf("alert %s: severity %q, want page or ticket", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s has no summary", r.Alert)
			}
			url := r.Annotations["runbook_url"]
			file, anchor, ok := strings.Cut(url, "#")
			if !ok || file != "docs/runbooks.md" {
				t.Errorf("alert %s: runbook_url %q, want docs/runbooks.md#<section>", r.Alert, url)
				continue
			}
			if !anchors[anchor] {
				t.Errorf("alert %s: runbook_url %q: docs/runbooks.md has no section #%s", r.Alert, url, anchor)
			}
		}
	}
	for _, name := range requiredAlerts {
		if !seen[name] {
			t.Errorf("deploy/alerts.yml lacks the alert %s", name)
		}
	}
}

// promtool (Debian's prometheus package; .ci/run installs it) checks the
// PromQL and runs the alert unit tests of deploy/alerts_test.yml.
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool := mustPromtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(repoRoot(t), "deploy")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func TestDashboard(t *testing.T) {
	metrics := exported(t)
	d := mustReadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Fatalf("dashboard has no title or uid")
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range allPanels(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkMetrics(t, metrics, fmt.Sprintf("panel %q", p.Title), tg.Expr)
			for _, name := range metricRef.FindAllString(tg.Expr, -1) {
				used[strings.TrimSuffix(name, "_bucket")] = true
			}
		}
	}
	// Every invigil metric is on the dashboard somewhere.
	for name := range metrics {
		if strings.HasPrefix(name, "invigil_") && !used[name] {
			t.Errorf("no dashboard panel shows %s", name)
		}
	}
}

// The dashboard's queries are valid PromQL: promtool checks them as
// recording rules, with Grafana's variables filled in.
func TestDashboardWithPromtool(t *testing.T) {
	promtool := mustPromtool(t)
	vars := strings.NewReplacer("$__rate_interval", "1m", "$job", "invigil", "$instance", ".*")
	var rules []map[string]string
	for _, p := range allPanels(mustReadDashboard(t).Panels) {
		for i, tg := range p.Targets {
			rules = append(rules, map[string]string{"record": fmt.Sprintf("panel_%d_%d", p.ID, i), "expr": vars.Replace(tg.Expr)})
		}
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules (the dashboard's queries): %v\n%s", err, out)
	}
}

type flyConfig struct {
	App         string `toml:"app"`
	KillSignal  string `toml:"kill_signal"`
	KillTimeout string `toml:"kill_timeout"`
	Build       struct {
		Dockerfile string `toml:"dockerfile"`
	} `toml:"build"`
	Deploy struct {
		Strategy string `toml:"strategy"`
	} `toml:"deploy"`
	Env    map[string]string `toml:"env"`
	Mounts struct {
		Source      string `toml:"source"`
		Destination string `toml:"destination"`
	} `toml:"mounts"`
	HTTPService struct {
		InternalPort       int    `toml:"internal_port"`
		AutoStopMachines   string `toml:"auto_stop_machines"`
		MinMachinesRunning int    `toml:"min_machines_running"`
		Concurrency        struct {
			Type      string `toml:"type"`
			SoftLimit int    `toml:"soft_limit"`
			HardLimit int    `toml:"hard_limit"`
		} `toml:"concurrency"`
		Checks []struct {
			Method string `toml:"method"`
			Path   string `toml:"path"`
		} `toml:"checks"`
	} `toml:"http_service"`
}

type litestreamConfig struct {
	DBs []struct {
		Path    string `yaml:"path"`
		Replica struct {
			Type            string `yaml:"type"`
			Bucket          string `yaml:"bucket"`
			Path            string `yaml:"path"`
			Endpoint        string `yaml:"endpoint"`
			Region          string `yaml:"region"`
			AccessKeyID     string `yaml:"access-key-id"`
			SecretAccessKey string `yaml:"secret-access-key"`
			SyncInterval    string `yaml:"sync-interval"`
		} `yaml:"replica"`
	} `yaml:"dbs"`
	Snapshot struct {
		Interval  string `yaml:"interval"`
		Retention string `yaml:"retention"`
	} `yaml:"snapshot"`
	ShutdownSyncTimeout string `yaml:"shutdown-sync-timeout"`
	Logging             struct {
		Level  string `yaml:"level"`
		Type   string `yaml:"type"`
		Stderr bool   `yaml:"stderr"`
	} `yaml:"logging"`
}

func TestFlyToml(t *testing.T) {
	var fc flyConfig
	if _, err := toml.DecodeFile(filepath.Join(repoRoot(t), "fly.toml"), &fc); err != nil {
		t.Fatalf("fly.toml: %v", err)
	}
	var lc litestreamConfig
	mustDecodeYAML(t, "litestream.yml", &lc)
	check := func(ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			t.Errorf("fly.toml: "+format, args...)
		}
	}
	check(fc.KillSignal == "SIGTERM", "kill_signal = %q, want SIGTERM", fc.KillSignal)
	kill, err := time.ParseDuration(fc.KillTimeout)
	check(err == nil, "kill_timeout %q: %v", fc.KillTimeout, err)
	lastSync, err := time.ParseDuration(lc.ShutdownSyncTimeout)
	if err != nil {
		t.Fatalf("litestream.yml shutdown-sync-timeout %q: %v", lc.ShutdownSyncTimeout, err)
	}
	check(kill >= drainTime+lastSync, "kill_timeout %s < drain %s + Litestream's last sync %s", kill, drainTime, lastSync)
	check(fc.Deploy.Strategy == "rolling", "deploy strategy %q, want rolling (a volume rules out blue-green)", fc.Deploy.Strategy)
	check(fc.Build.Dockerfile == "Dockerfile", "build.dockerfile = %q", fc.Build.Dockerfile)

	db := fc.Env["INVIGIL_DB"]
	check(filepath.Dir(db) == fc.Mounts.Destination, "INVIGIL_DB %q is not on the volume mounted at %q", db, fc.Mounts.Destination)
	check(fc.Mounts.Destination == "/data" && fc.Mounts.Source != "", "mounts: %+v, want a volume at /data", fc.Mounts)
	check(len(lc.DBs) == 1 && lc.DBs[0].Path == db, "INVIGIL_DB %q is not the database litestream.yml streams (%+v)", db, lc.DBs)
	check(dockerfileEnv(t)["INVIGIL_DB"] == db, "the Dockerfile's INVIGIL_DB %q differs from fly.toml's %q", dockerfileEnv(t)["INVIGIL_DB"], db)
	check(strconv.Itoa(fc.HTTPService.InternalPort) == fc.Env["PORT"], "internal_port %d but PORT %q", fc.HTTPService.InternalPort, fc.Env["PORT"])

	hs := fc.HTTPService
	check(hs.AutoStopMachines == "off", "auto_stop_machines = %q, want off", hs.AutoStopMachines)
	check(hs.MinMachinesRunning >= 1, "min_machines_running = %d, want at least 1", hs.MinMachinesRunning)
	check(hs.Concurrency.Type == "connections", "concurrency type %q, want connections (WebSockets)", hs.Concurrency.Type)
	check(0 < hs.Concurrency.SoftLimit && hs.Concurrency.SoftLimit < hs.Concurrency.HardLimit,
		"concurrency soft_limit %d, hard_limit %d", hs.Concurrency.SoftLimit, hs.Concurrency.HardLimit)
	check(slices.ContainsFunc(hs.Checks, func(c struct {
		Method string `toml:"method"`
		Path   string `toml:"path"`
	}) bool {
		return c.Path == "/healthz" && strings.EqualFold(c.Method, "GET")
	}), "no GET /healthz check in %+v", hs.Checks)
}

func TestLitestreamYml(t *testing.T) {
	var lc litestreamConfig
	mustDecodeYAML(t, "litestream.yml", &lc)
	if len(lc.DBs) != 1 {
		t.Fatalf("litestream.yml: %d databases, want 1", len(lc.DBs))
	}
	r := lc.DBs[0].Replica
	for field, want := range map[string]string{
		"type": "s3", "bucket": "${BUCKET_NAME}", "endpoint": "${AWS_ENDPOINT_URL_S3}",
		"region": "${AWS_REGION}", "access-key-id": "${AWS_ACCESS_KEY_ID}",
		"secret-access-key": "${AWS_SECRET_ACCESS_KEY}",
	} {
		got := map[string]string{
			"type": r.Type, "bucket": r.Bucket, "endpoint": r.Endpoint, "region": r.Region,
			"access-key-id": r.AccessKeyID, "secret-access-key": r.SecretAccessKey,
		}[field]
		if got != want {
			t.Errorf("litestream.yml replica %s = %q, want %q (set by `fly storage create`)", field, got, want)
		}
	}
	for name, v := range map[string]string{
		"sync-interval": r.SyncInterval, "snapshot interval": lc.Snapshot.Interval,
		"snapshot retention": lc.Snapshot.Retention, "shutdown-sync-timeout": lc.ShutdownSyncTimeout,
	} {
		if _, err := time.ParseDuration(v); err != nil {
			t.Errorf("litestream.yml %s %q: %v", name, v, err)
		}
	}
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	df := readFile(t, "Dockerfile")
	args := dockerfileArgs(t)
	gomod := readFile(t, "go.mod")

	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	if compareVersions(args["GO_VERSION"], goLine[1]) < 0 {
		t.Errorf("Dockerfile GO_VERSION %s is older than go.mod's go %s: the image's Go would refuse to build", args["GO_VERSION"], goLine[1])
	}
	ls := regexp.MustCompile(`(?m)^\s*github\.com/benbjohnson/litestream (\S+)`).FindStringSubmatch(gomod)
	if ls == nil || ls[1] != args["LITESTREAM_VERSION"] {
		t.Errorf("Dockerfile LITESTREAM_VERSION %q, but the tests run Litestream %v (go.mod)", args["LITESTREAM_VERSION"], ls)
	}
	if !strings.HasPrefix(args["LITESTREAM_VERSION"], "v0.5.") {
		t.Errorf("LITESTREAM_VERSION %q, want v0.5.x", args["LITESTREAM_VERSION"])
	}
	for _, want := range []string{
		"RUN sh scripts/build-static.sh /out/invigil", // the one build, as .ci/run runs it
		`RUN sh /build-litestream.sh "${LITESTREAM_VERSION}" /out/litestream`,
		"COPY litestream.yml /etc/litestream.yml",
		"COPY deploy/entrypoint.sh /usr/local/bin/entrypoint",
		`ENTRYPOINT ["/usr/local/bin/entrypoint"]`,
		"adduser -S -D -H -u 10001",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// Everything it copies from the context exists and is not ignored.
	ignore := dockerignore(t)
	for _, src := range []string{"scripts/build-static.sh", "scripts/build-litestream.sh", "litestream.yml", "deploy/entrypoint.sh", "go.mod", "go.sum", "schema.sql"} {
		if _, err := os.Stat(filepath.Join(root, src)); err != nil {
			t.Errorf("the Dockerfile needs %s: %v", src, err)
		}
		if slices.Contains(ignore, src) {
			t.Errorf(".dockerignore excludes %s, which the image needs", src)
		}
	}
	for _, must := range []string{".git", "**/*.db", "**/*.db-wal"} {
		if !slices.Contains(ignore, must) {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}
	// The entrypoint drops root before running anything.
	ep := readFile(t, "deploy/entrypoint.sh")
	for _, want := range []string{`as_user="su-exec $run_as"`, "exec $as_user litestream replicate", "-if-db-not-exists -if-replica-exists"} {
		if !strings.Contains(ep, want) {
			t.Errorf("deploy/entrypoint.sh lacks %q", want)
		}
	}
}

// The docs name every secret the deploy needs, and each feature flag of the
// rollback.
func TestDocs(t *testing.T) {
	deploy := readFile(t, "docs/deploy.md")
	for _, s := range []string{
		"SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET", "INVIGIL_WEBHOOK_SECRET",
		"INVIGIL_METRICS_TOKEN", "INVIGIL_ALLOWED_ORIGINS", "INVIGIL_REMINDER_URL",
		"fly launch --no-deploy", "fly volumes create", "fly storage create", "fly secrets set",
		"bearer_token", "BUCKET_NAME",
	} {
		if !strings.Contains(deploy, s) {
			t.Errorf("docs/deploy.md does not mention %s", s)
		}
	}
	runbooks := readFile(t, "docs/runbooks.md")
	for _, s := range []string{
		"VITE_USE_INVIGIL_PROCTORING", "VITE_USE_INVIGIL_CHAT", "VITE_USE_INVIGIL_LEADERBOARD",
		"INVIGIL_WEBHOOK_SECRET", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET",
		"fly volumes extend", "INVIGIL_RETENTION", "litestream restore", "invigil backup",
	} {
		if !strings.Contains(runbooks, s) {
			t.Errorf("docs/runbooks.md does not mention %s", s)
		}
	}
}

// Every link between the docs lands on a heading that exists.
func TestDocLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([a-z]+\.md)?#([^)]+)\)`)
	for _, doc := range []string{"runbooks.md", "deploy.md"} {
		for _, m := range link.FindAllStringSubmatch(readFile(t, "docs/"+doc), -1) {
			target := cmp.Or(m[1], doc)
			if !docAnchors(t, "docs/"+target)[m[2]] {
				t.Errorf("docs/%s links to %s#%s, which has no such heading", doc, target, m[2])
			}
		}
	}
}

// runbookAnchors lists the GitHub anchors of docs/runbooks.md's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	return docAnchors(t, "docs/runbooks.md")
}

// docAnchors lists the GitHub anchors of a Markdown file's headings.
func docAnchors(t *testing.T, rel string) map[string]bool {
	t.Helper()
	anchors := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(readFile(t, rel)))
	inFence := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		anchors[githubAnchor(strings.TrimLeft(line, "# "))] = true
	}
	return anchors
}

// githubAnchor is GitHub's heading slug: lower case, spaces to hyphens,
// everything but letters, digits, hyphens and underscores dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func mustPromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("SKIPPED: promtool is not installed (Debian: apt-get install prometheus; .ci/run does): PromQL not checked")
	}
	return p
}

func mustReadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(readFile(t, "deploy/grafana-dashboard.json")), &d); err != nil {
		t.Fatalf("deploy/grafana-dashboard.json: %v", err)
	}
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

func mustDecodeYAML(t *testing.T, rel string, v any) {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, rel)))
	dec.KnownFields(true) // a misspelt key fails here, not silently in production
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dockerignore lists .dockerignore's patterns.
func dockerignore(t *testing.T) []string {
	t.Helper()
	var patterns []string
	for _, line := range strings.Split(readFile(t, ".dockerignore"), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	return patterns
}

// dockerfileArgs reads the Dockerfile's ARG defaults.
func dockerfileArgs(t *testing.T) map[string]string {
	t.Helper()
	args := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^ARG (\w+)=(\S+)$`).FindAllStringSubmatch(readFile(t, "Dockerfile"), -1) {
		args[m[1]] = m[2]
	}
	return args
}

// dockerfileEnv reads the final stage's ENV (KEY=value pairs, continued lines).
func dockerfileEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	df := strings.ReplaceAll(readFile(t, "Dockerfile"), "\\\n", " ")
	for _, m := range regexp.MustCompile(`(?m)^ENV (.+)$`).FindAllStringSubmatch(df, -1) {
		for _, kv := range strings.Fields(m[1]) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
	}
	return env
}

// compareVersions compares dotted versions numerically (1.26.8 vs 1.26).
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}
