package deploy_test

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The image's start, without Docker: deploy/entrypoint.sh runs the static
// invigil under the real Litestream binary (scripts/build-litestream.sh, the
// image's build; .ci/run passes it as LITESTREAM_BIN), with litestream.yml's
// settings and a file replica in place of the bucket.
//
//  1. First start: no database, no backup: starts empty, replicates.
//  2. The volume is lost: the next start restores it, with every write.
//  3. A point-in-time restore to before a write, prepared while serving
//     (db.restored), is swapped in at the next start; replication goes on
//     from it, and the undone write stays undone in the backup too.
//
// Each stop is Fly's: SIGTERM to the entrypoint's process, exit 0 in time.
func TestEntrypointRestoresAndReplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts invigil under Litestream three times; skipped with -short")
	}
	litestream := litestreamBin(t)
	invigil := mustBuildStatic(t)
	dir := t.TempDir()
	binDir := filepath.Join(dir, "bin")
	mustCopyExecutable(t, invigil, filepath.Join(binDir, "invigil"))
	mustCopyExecutable(t, litestream, filepath.Join(binDir, "litestream"))
	db := filepath.Join(dir, "data", "invigil.db")
	replica := filepath.Join(dir, "replica")
	config := mustTestLitestreamConfig(t, dir, db, replica)
	env := []string{
		"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"INVIGIL_DB=" + db,
		"LITESTREAM_CONFIG=" + config,
		"BUCKET_NAME=test-bucket", // any: the test config replicates to a folder
		"INVIGIL_RUN_AS=" + mustRunAs(t, dir, binDir, replica),
	}
	entrypoint := filepath.Join(repoRoot(t), "deploy", "entrypoint.sh")
	shell := []string{"sh"}
	if _, err := exec.LookPath("busybox"); err == nil {
		shell = []string{"busybox", "sh"} // Alpine's /bin/sh, as in the image
	}
	t.Logf("entrypoint run with %q as %q", shell, strings.TrimPrefix(env[len(env)-1], "INVIGIL_RUN_AS="))
	start := func(wantLog string) *server {
		t.Helper()
		args := append(shell[1:], entrypoint, "--demo", "--demo-students", "2")
		srv := mustStartWith(t, env, shell[0], args...)
		mustBeHealthy(t, srv)
		if !strings.Contains(srv.logs(), wantLog) {
			t.Fatalf("the entrypoint's log lacks %q:\n%s", wantLog, srv.logs())
		}
		// Litestream opens the database at its first check, a second after
		// it starts (or after invigil created the file), and makes its state
		// folder then. A stop before that has nothing to sync: see
		// docs/runbooks.md, "What a stop or a crash can lose".
		mustEventually(t, 10*time.Second, "Litestream state folder", func() bool {
			_, err := os.Stat(filepath.Join(filepath.Dir(db), "."+filepath.Base(db)+"-litestream"))
			return err == nil
		})
		return srv
	}
	stop := func(srv *server) {
		t.Helper()
		began := time.Now()
		if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err, exited := srv.wait(drainTime + 5*time.Second)
		if !exited {
			t.Fatalf("still running %s after SIGTERM; log:\n%s", drainTime+5*time.Second, srv.logs())
		}
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0; log:\n%s", err, srv.logs())
		}
		t.Logf("SIGTERM to exit under Litestream: %s", time.Since(began).Round(time.Millisecond))
	}
	join := func(srv *server, student string) {
		t.Helper()
		ws := mustDial(t, srv, mustDemoToken(t, srv, student, "student"))
		mustSend(t, ws, map[string]any{"type": "call", "id": "c1", "fn": "proctoring.startSession", "args": map[string]any{"exam_id": "demo"}})
		mustReadType(t, ws, "result")
		ws.Close()
	}

	// 1. First start. Each run stops right after its write: Litestream's
	// last sync on SIGTERM must carry it.
	srv := start("no database at " + db)
	join(srv, "student-1")
	stop(srv)
	time.Sleep(50 * time.Millisecond) // a point in time between two writes
	beforeStudent2 := time.Now().UTC()
	time.Sleep(50 * time.Millisecond)

	// 2. The volume is lost.
	mustRemoveDatabase(t, db)
	began := time.Now()
	srv = start("restore step done")
	t.Logf("start on an empty volume, restore included, until Litestream streams: %s", time.Since(began).Round(time.Millisecond))
	mustHaveSessions(t, db, "student-1")
	join(srv, "student-2")
	stop(srv)

	// 3. Student 2's write was a mistake: back to the point before it,
	// prepared while serving, swapped in at the next start.
	restored := db + ".restored"
	if out, err := exec.Command(litestream, "restore", "-config", config,
		"-timestamp", beforeStudent2.Format(time.RFC3339Nano), "-o", restored, db).CombinedOutput(); err != nil {
		t.Fatalf("litestream restore -timestamp -o: %v\n%s", err, out)
	}
	srv = start("swapping in " + restored)
	mustHaveSessions(t, db, "student-1")
	mustNotHaveSessions(t, db, "student-2")
	join(srv, "student-3")
	stop(srv)
	if aside, _ := filepath.Glob(db + ".replaced-*"); len(aside) == 0 {
		t.Errorf("the replaced database was not kept aside")
	}
	// The restored file was root's (made as over `fly ssh console`); the
	// entrypoint gave it, like the rest, to the server's user.
	if runAs := strings.TrimPrefix(env[len(env)-1], "INVIGIL_RUN_AS="); runAs != "" {
		u, err := user.Lookup(runAs)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{db, db + "-wal", filepath.Dir(db)} {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if uid := fi.Sys().(*syscall.Stat_t).Uid; strconv.Itoa(int(uid)) != u.Uid {
				t.Errorf("%s belongs to uid %d, want %s (%s)", f, uid, u.Uid, runAs)
			}
		}
	}

	// Replication went on from the swapped-in file: the latest restore is
	// the restored past plus what came after, without the undone write.
	check := filepath.Join(dir, "check", "invigil.db")
	if out, err := exec.Command(litestream, "restore", "-config", config, "-o", check, db).CombinedOutput(); err != nil {
		t.Fatalf("litestream restore after the swap: %v\n%s", err, out)
	}
	mustHaveSessions(t, check, "student-1", "student-3")
	mustNotHaveSessions(t, check, "student-2")
}

// mustEventually polls cond until it holds, for d at most.
func mustEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for delay := 10 * time.Millisecond; !cond(); delay = min(2*delay, 500*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, d)
		}
		time.Sleep(delay)
	}
}

// litestreamBin is LITESTREAM_BIN, or litestream on PATH; without either the
// test is skipped, loudly.
func litestreamBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LITESTREAM_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("litestream"); err == nil {
		return p
	}
	t.Skip("SKIPPED: no Litestream binary: build it with scripts/build-litestream.sh and set LITESTREAM_BIN (.ci/run does)")
	return ""
}

// mustTestLitestreamConfig is litestream.yml with the database at db and a
// file replica at replica instead of the bucket; every other setting stays.
func mustTestLitestreamConfig(t *testing.T, dir, db, replica string) string {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, "litestream.yml")), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["dbs"] = []any{map[string]any{
		"path":    db,
		"replica": map[string]any{"type": "file", "path": replica, "sync-interval": "1s"},
	}}
	cfg["logging"] = map[string]any{"level": "info", "type": "text", "stderr": true}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "litestream.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustRunAs decides who the server runs as. As root (CI, and the image),
// the entrypoint's own path: it hands the data folder to an unprivileged user
// and drops root through su-exec, here a stand-in on setpriv (Debian has no
// su-exec), as the user daemon. Otherwise it stays the test's user.
func mustRunAs(t *testing.T, dir, binDir, replica string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Logf("no setpriv: the entrypoint runs without dropping root")
		return ""
	}
	shim := "#!/bin/sh\n# su-exec USER COMMAND..., as in the image\nu=$1; shift\nexec setpriv --reuid=\"$u\" --regid=\"$u\" --init-groups \"$@\"\n"
	if err := os.WriteFile(filepath.Join(binDir, "su-exec"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	// The user must reach the test's folders (t.TempDir makes them 0700),
	// and write the replica (the bucket, in the image).
	for _, d := range []string{filepath.Dir(dir), dir, binDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(replica, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("chown", "daemon:daemon", replica).Run(); err != nil {
		t.Fatalf("chown daemon %s: %v", replica, err)
	}
	return "daemon"
}

func mustCopyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// mustRemoveDatabase is a lost volume: the database, its WAL and
// Litestream's local state all go.
func mustRemoveDatabase(t *testing.T, db string) {
	t.Helper()
	for _, p := range []string{db, db + "-wal", db + "-shm", filepath.Join(filepath.Dir(db), "."+filepath.Base(db)+"-litestream")} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

func mustNotHaveSessions(t *testing.T, db string, students ...string) {
	t.Helper()
	conn := mustOpenRO(t, db)
	for _, s := range students {
		var n int
		if err := conn.QueryRow(`SELECT count(*) FROM exam_sessions WHERE student_id = ?`, s).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: a session of %s is there (n=%d, %v)", db, s, n, err)
		}
	}
}

func mustHaveSessions(t *testing.T, db string, students ...string) {
	t.Helper()
	conn := mustOpenRO(t, db)
	for _, s := range students {
		var n int
		if err := conn.QueryRow(`SELECT count(*) FROM exam_sessions WHERE exam_id = 'demo' AND student_id = ?`, s).Scan(&n); err != nil || n != 1 {
			t.Errorf("%s: no session of %s (n=%d, %v)", db, s, n, err)
		}
	}
}
