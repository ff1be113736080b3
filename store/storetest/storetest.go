// Package storetest opens real SQLite stores for tests, with the schema the
// binary embeds (schema.sql at the module root).
package storetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jonboulle/clockwork"

	"invigil/store"
)

// Schema returns the module's schema.sql, found by walking up to go.mod.
func Schema(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			b, err := os.ReadFile(filepath.Join(dir, "schema.sql"))
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// MustOpen opens a store in t.TempDir() (a real file: WAL needs one) and
// closes it when the test ends.
func MustOpen(t testing.TB, clock clockwork.Clock) *store.DB {
	t.Helper()
	db, err := store.Open(store.Options{
		Path:   filepath.Join(t.TempDir(), "invigil.db"),
		Schema: Schema(t),
		Clock:  clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
