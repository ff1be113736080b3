package static_test

// The React kit's toolchain: TypeScript over invigil.d.ts, invigil-react.d.ts
// and the example app (examples/react), and the example's Vite build that
// the browser tests serve. Node and npm come from the machine; the example's
// packages from the npm registry through its package-lock.json (npm ci, run
// here when node_modules is missing or older than the lock, and by .ci/run).
// Without Node the tests skip, loudly; with INVIGIL_REQUIRE_NODE=1 (CI) they
// fail instead.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// exampleDir is examples/react, from this package's directory.
var exampleDir = filepath.Join("..", "examples", "react")

var (
	npmOnce sync.Once
	npmErr  string // why the example's packages are not there
)

// requireExample returns the example's directory with its packages
// installed, or skips (fails under INVIGIL_REQUIRE_NODE=1) without Node.
func requireExample(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := "THE REACT KIT IS NOT TESTED: " + tool + " is not installed (Node 20+ and npm; CI sets INVIGIL_REQUIRE_NODE=1)"
			if os.Getenv("INVIGIL_REQUIRE_NODE") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	npmOnce.Do(func() {
		lock, err := os.Stat(filepath.Join(exampleDir, "package-lock.json"))
		if err != nil {
			npmErr = err.Error()
			return
		}
		installed, err := os.Stat(filepath.Join(exampleDir, "node_modules", ".package-lock.json"))
		if err == nil && !installed.ModTime().Before(lock.ModTime()) {
			return
		}
		start := time.Now()
		out, err := run(exampleDir, nil, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		if err != nil {
			npmErr = "npm ci: " + err.Error() + "\n" + out
			return
		}
		t.Logf("npm ci in %s: %s", exampleDir, time.Since(start).Round(time.Millisecond))
	})
	if npmErr != "" {
		t.Fatal(npmErr)
	}
	return exampleDir
}

// run runs a command in dir with extra environment and returns its output.
func run(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// bin is a tool installed in the example's node_modules/.bin.
func bin(dir, name string) string {
	abs, err := filepath.Abs(filepath.Join(dir, "node_modules", ".bin", name))
	if err != nil {
		panic(err)
	}
	return abs
}

// TypeScript checks the kit's declarations in full (tsconfig.kit.json: the
// .d.ts files and typetests/, whose @ts-expect-error lines must fail) and
// the example app against them (tsconfig.json).
func TestTypeScriptCompiles(t *testing.T) {
	dir := requireExample(t)
	for _, project := range []string{"tsconfig.kit.json", "tsconfig.json"} {
		start := time.Now()
		out, err := run(dir, nil, bin(dir, "tsc"), "--noEmit", "-p", project)
		if err != nil {
			t.Fatalf("tsc --noEmit -p %s: %v\n%s", project, err, out)
		}
		t.Logf("tsc --noEmit -p %s: %s", project, time.Since(start).Round(time.Millisecond))
	}
}

// buildExample bundles the example with Vite into a fresh directory, with
// env (VITE_… variables) over the example's .env. A development build keeps
// React's development mode, where StrictMode mounts every component twice.
func buildExample(t *testing.T, env map[string]string, development bool) string {
	t.Helper()
	dir := requireExample(t)
	out := t.TempDir()
	var vars []string
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	if development {
		vars = append(vars, "NODE_ENV=development")
	}
	start := time.Now()
	abs, err := filepath.Abs(out)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := run(dir, vars, bin(dir, "vite"), "build", "--outDir", abs, "--emptyOutDir", "--logLevel", "warn"); err != nil {
		t.Fatalf("vite build: %v\n%s", err, o)
	}
	t.Logf("vite build (development=%v): %s", development, time.Since(start).Round(time.Millisecond))
	return out
}
