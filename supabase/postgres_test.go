// Package supabase_test proves supabase/ for real: the migrations run on a
// throwaway PostgreSQL cluster with a stand-in for what Supabase provides
// (testdata/supabase_standin.sql), and functions/_shared/invigil.ts runs
// under Deno against invigil's own webhook verifier.
//
// PostgreSQL is Debian's (/usr/lib/postgresql/*/bin, or $INVIGIL_PG_BIN);
// Deno is the one on PATH, or $DENO. Where either is missing the tests skip
// with a loud message, and fail instead when INVIGIL_REQUIRE_PG_DENO is set
// (.ci/run sets it after installing both).
package supabase_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.pg != nil {
		shared.pg.stop()
	}
	os.Exit(code)
}

// shared is the one cluster of this test binary, started by the first test
// that needs it. Each test gets a database of its own, copied from a
// template that has the stand-in and the migrations.
var shared struct {
	once     sync.Once
	pg       *postgres
	startErr error // no PostgreSQL here: skip
	setupErr error // the stand-in or a migration failed: fail
	dbs      atomic.Int64
}

const templateDB = "invigil_template"

// unavailable skips (or, where the environment requires the tool, fails)
// with a message nobody can miss.
func unavailable(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv("INVIGIL_REQUIRE_PG_DENO") != "" {
		t.Fatalf("!!! %s is required (INVIGIL_REQUIRE_PG_DENO) and not available: %v", what, err)
	}
	t.Skipf("!!! SKIPPED: %s is not available, so supabase/ is NOT tested: %v "+
		"(.ci/run installs it; INVIGIL_REQUIRE_PG_DENO=1 makes this a failure)", what, err)
}

// mustDB returns a fresh database with the stand-in and the migrations.
func mustDB(t *testing.T) *database {
	t.Helper()
	shared.once.Do(func() {
		shared.pg, shared.startErr = startPostgres()
		if shared.startErr == nil {
			shared.setupErr = shared.pg.prepareTemplate()
		}
	})
	if shared.startErr != nil {
		unavailable(t, "PostgreSQL", shared.startErr)
	}
	if shared.setupErr != nil {
		t.Fatal(shared.setupErr)
	}
	name := fmt.Sprintf("t%d", shared.dbs.Add(1))
	admin := &database{pg: shared.pg, name: "postgres"}
	if _, err := admin.run(fmt.Sprintf("create database %s template %s", name, templateDB)); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return &database{pg: shared.pg, name: name}
}

// postgres is a cluster in a temporary directory, listening only on a unix
// socket in that directory.
type postgres struct {
	bin  string // the directory of initdb, postgres, psql
	dir  string // data/, the socket and the log
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan error // the server's exit
	log  *os.File
}

// pgBinDir finds Debian's newest PostgreSQL.
func pgBinDir() (string, error) {
	if dir := os.Getenv("INVIGIL_PG_BIN"); dir != "" {
		return dir, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return "", errors.New("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
	}
	version := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return n
	}
	slices.SortFunc(found, func(a, b string) int { return version(b) - version(a) })
	return filepath.Dir(found[0]), nil
}

// startPostgres initialises and starts a cluster. initdb and postgres refuse
// to run as root, so as root they run as the postgres user (or nobody),
// which then owns the directory.
func startPostgres() (*postgres, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "invigil-pg-")
	if err != nil {
		return nil, err
	}
	pg := &postgres{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		if pg.cred, err = unprivileged(); err == nil {
			err = os.Chown(dir, int(pg.cred.Uid), int(pg.cred.Gid))
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, and no unprivileged user for PostgreSQL: %w", err)
		}
	}
	if err := pg.start(); err != nil {
		pg.stop()
		return nil, err
	}
	return pg, nil
}

func unprivileged() (*syscall.Credential, error) {
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.Join(errs...)
}

// command runs a PostgreSQL server program as the cluster's user.
func (pg *postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, name), args...)
	cmd.Dir = pg.dir
	// If this test binary dies, the server goes too (an immediate shutdown).
	// Go sets it after switching user, so the switch does not clear it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred, Pdeathsig: syscall.SIGQUIT}
	return cmd
}

func (pg *postgres) start() error {
	data := filepath.Join(pg.dir, "data")
	initdb := pg.command("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--no-locale", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var err error
	if pg.log, err = os.Create(filepath.Join(pg.dir, "postgres.log")); err != nil {
		return err
	}
	// No TCP; durability off: the cluster lives for one test run.
	pg.cmd = pg.command("postgres", "-D", data, "-k", pg.dir, "-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=20", "-c", "shared_buffers=16MB", "-c", "TimeZone=UTC")
	pg.cmd.Stdout, pg.cmd.Stderr = pg.log, pg.log
	if err := pg.cmd.Start(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	pg.done = make(chan error, 1)
	go func() { pg.done <- pg.cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	for {
		probe := exec.Command(filepath.Join(pg.bin, "pg_isready"), "-q", "-h", pg.dir, "-U", "postgres")
		if probe.Run() == nil {
			return nil
		}
		select {
		case err := <-pg.done:
			pg.cmd = nil
			return fmt.Errorf("postgres exited: %v\n%s", err, pg.logTail())
		case <-deadline:
			return fmt.Errorf("postgres not ready after 30s\n%s", pg.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (pg *postgres) logTail() string {
	b, _ := os.ReadFile(filepath.Join(pg.dir, "postgres.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop shuts the server down (fast: open sessions are ended) and removes
// the directory.
func (pg *postgres) stop() {
	if pg.cmd != nil {
		pg.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-pg.done:
		case <-time.After(30 * time.Second):
			pg.cmd.Process.Kill()
		}
	}
	if pg.log != nil {
		pg.log.Close()
	}
	os.RemoveAll(pg.dir)
}

// prepareTemplate builds the database every test copies: the Supabase
// stand-in, then each migration twice (they must be re-runnable), each
// file in one transaction, as `supabase db push` applies them.
func (pg *postgres) prepareTemplate() error {
	admin := &database{pg: pg, name: "postgres"}
	if _, err := admin.run("create database " + templateDB); err != nil {
		return err
	}
	tmpl := &database{pg: pg, name: templateDB}
	migrations, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(migrations) == 0 {
		return fmt.Errorf("no migrations in supabase/migrations (%v)", err)
	}
	slices.Sort(migrations)
	files := append([]string{"testdata/supabase_standin.sql"}, migrations...)
	files = append(files, migrations...)
	for _, f := range files {
		if _, err := tmpl.runFile(f); err != nil {
			return fmt.Errorf("apply %s: %w", f, err)
		}
	}
	return nil
}

// database runs SQL through psql, as a subprocess: no Go driver needed.
type database struct {
	pg   *postgres
	name string
}

// run executes sql as the superuser and returns what it printed
// (unaligned, tuples only), trimmed.
func (db *database) run(sql string) (string, error) {
	return db.psql(strings.NewReader(sql), "-f", "-")
}

// runTx is run in one transaction.
func (db *database) runTx(sql string) (string, error) {
	return db.psql(strings.NewReader(sql), "-1", "-f", "-")
}

func (db *database) runFile(path string) (string, error) {
	return db.psql(nil, "-1", "-f", path)
}

func (db *database) psql(stdin *strings.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append([]string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", db.pg.dir, "-U", "postgres", "-d", db.name}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(db.pg.bin, "psql"), args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("psql: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// mustRun is run that fails the test on an error.
func (db *database) mustRun(t *testing.T, sql string) string {
	t.Helper()
	out, err := db.run(sql)
	if err != nil {
		t.Fatalf("%v\nSQL:\n%s", err, sql)
	}
	return out
}

// asUser runs sql as PostgREST does for a request bearing a token with these
// claims: in one transaction, the claims in request.jwt.claims and the role
// authenticated.
func (db *database) asUser(claims, sql string) (string, error) {
	return db.as("authenticated", claims, sql)
}

func (db *database) as(role, claims, sql string) (string, error) {
	return db.runTx(fmt.Sprintf("set local request.jwt.claims = %s;\nset local role %s;\n%s\n",
		literal(claims), role, sql))
}

// literal quotes s as an SQL string literal.
func literal(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
