package store_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"invigil/store"
	"invigil/store/storetest"
)

// makeV0 writes a database file the way invigil's first release did, from
// its schema (testdata/schema-v0.sql), with an exam, a session and a
// violation in it.
func makeV0(t *testing.T, path string) {
	t.Helper()
	schema, err := os.ReadFile("testdata/schema-v0.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		string(schema),
		`INSERT INTO exams (id, title, tutor_ids, status, updated_at) VALUES ('e1', 'Old exam', '["t1"]', 'open', '2026-03-01T08:00:00.000Z')`,
		`INSERT INTO exam_sessions (exam_id, student_id, id, student_name, status, last_heartbeat, started_at)
		 VALUES ('e1', 's1', 's_old', 'Sam', 'active', '2026-03-01T08:01:00.000Z', '2026-03-01T08:00:30.000Z')`,
		`INSERT INTO violations (id, exam_id, student_id, student_name, type, created_at)
		 VALUES ('v_old', 'e1', 's1', 'Sam', 'copy', '2026-03-01T08:02:00.000Z')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("v0 database: %v", err)
		}
	}
}

// TestUpgradeFromFirstRelease: a database file made by the first release
// opens under this one, is upgraded in place keeping its rows, and ends
// with exactly the schema a new database gets.
func TestUpgradeFromFirstRelease(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.db")
	makeV0(t, old)
	db, err := store.Open(store.Options{Path: old, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatalf("open a first-release file: %v", err)
	}
	ctx := context.Background()
	s, err := db.Session(ctx, "e1", "s1")
	if err != nil || s.ID != "s_old" || s.StudentName != "Sam" || s.LastBeatAt != "" {
		t.Fatalf("the old session after the upgrade: %+v %v", s, err)
	}
	if v, err := db.Violations(ctx, "e1", "", 10); err != nil || len(v) != 1 || v[0].ID != "v_old" {
		t.Fatalf("the old violation after the upgrade: %+v %v", v, err)
	}
	// The new columns work.
	err = db.Update(ctx, func(tx *store.Tx) error {
		if err := tx.Heartbeat("e1", "s1", 2, 1, ""); err != nil {
			return err
		}
		_, _, err := tx.AddViolation(store.Violation{ExamID: "e1", StudentID: "s1", StudentName: "Sam", Type: "paste", ClientID: "c-1"}, true)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := db.Session(ctx, "e1", "s1"); s.LastBeatAt == "" {
		t.Fatal("heartbeat did not set last_beat_at after the upgrade")
	}
	db.Close()

	// Opening again changes nothing; and the upgraded schema is the new one.
	db, err = store.Open(store.Options{Path: old, Schema: storetest.Schema(t)})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	db.Close()
	fresh := storetest.MustOpen(t, nil)
	fresh.Close()
	upgraded, created := schemaOf(t, old), schemaOf(t, fresh.Path())
	if diff := cmp.Diff(created, upgraded); diff != "" {
		t.Fatalf("an upgraded database differs from a new one (-new +upgraded):\n%s", diff)
	}
}

// schemaOf lists every table's columns and every index of the file, and its
// user_version.
func schemaOf(t *testing.T, path string) map[string]any {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]any{}
	var version int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	out["user_version"] = version
	rows, err := db.Query(`SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ, name, table string
		if err := rows.Scan(&typ, &name, &table); err != nil {
			t.Fatal(err)
		}
		if typ != "table" {
			out[typ+" "+name] = table
			continue
		}
		cols, err := db.Query(`SELECT name, type, "notnull", coalesce(dflt_value, ''), pk FROM pragma_table_info(?) ORDER BY name`, name)
		if err != nil {
			t.Fatal(err)
		}
		var list []string
		for cols.Next() {
			var n, ty, def string
			var notNull, pk int
			if err := cols.Scan(&n, &ty, &notNull, &def, &pk); err != nil {
				t.Fatal(err)
			}
			list = append(list, n+" "+ty+" notnull="+string(rune('0'+notNull))+" default="+def+" pk="+string(rune('0'+pk)))
		}
		cols.Close()
		out["table "+name] = list
	}
	return out
}

// TestNewerDatabaseIsRefused: a file from a newer release is not opened
// (its schema may mean things this release does not know).
func TestNewerDatabaseIsRefused(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	path := db.Path()
	db.Close()
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`PRAGMA user_version = 999`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if _, err := store.Open(store.Options{Path: path, Schema: storetest.Schema(t)}); err == nil {
		t.Fatal("a database from a newer release was opened")
	}
}
