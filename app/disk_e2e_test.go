package app_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/identity"
)

// tinyDisk mounts a small tmpfs for the test, or skips loudly where that
// cannot be done (not root, no mount).
func tinyDisk(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("INVIGIL_REQUIRE_TMPFS") != "" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("!!! SKIPPED: the disk-full test needs to mount a tmpfs (root): %v %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file until the disk is full; removing it frees the disk.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// TestFullDisk: when the disk fills, calls fail with internal, /healthz
// turns unhealthy and nothing half-written remains; when it frees up, the
// server recovers by itself.
func TestFullDisk(t *testing.T) {
	dir := tinyDisk(t, "24m")
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) { c.DB = filepath.Join(dir, "invigil.db") }))
	health := func() int {
		res, err := http.Get(h.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := health(); code != http.StatusOK {
		t.Fatalf("healthz before: %d", code)
	}
	start := func(i int) (int, string) {
		u := identity.User{ID: fmt.Sprintf("full-%04d", i), Role: identity.Student, Name: fmt.Sprintf("Student %04d with a longer name to take room", i)}
		return h.Call(u, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	}
	ok := map[int]bool{}
	for i := range 20 {
		if code, body := start(i); code != http.StatusOK {
			t.Fatalf("start %d before the disk filled: %d %s", i, code, body)
		}
		ok[i] = true
	}
	filler := fill(t, dir)

	failed := 0
	for i := 20; i < 2000 && failed < 5; i++ {
		code, body := start(i)
		switch code {
		case http.StatusOK:
			ok[i] = true
		case http.StatusInternalServerError:
			if !bytes.Contains([]byte(body), []byte(`"code":"internal"`)) {
				t.Fatalf("a failed write: %s", body)
			}
			failed++
		default:
			t.Fatalf("start %d on a full disk: %d %s", i, code, body)
		}
	}
	if failed == 0 {
		t.Fatal("no write failed on a full disk")
	}
	if code := health(); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz on a full disk: want 503, got %d", code)
	}
	// Nothing half-written: exactly the calls that said so are stored.
	rows, err := h.App.DB.ExamSessions(t.Context(), "e1")
	if err != nil {
		t.Fatalf("reads fail on a full disk: %v", err)
	}
	if len(rows) != len(ok) {
		t.Fatalf("%d sessions stored, %d calls succeeded", len(rows), len(ok))
	}

	os.Remove(filler)
	waitFor(t, func() bool { return health() == http.StatusOK })
	if code, body := start(5000); code != http.StatusOK {
		t.Fatalf("after the disk freed up: %d %s", code, body)
	}
}
