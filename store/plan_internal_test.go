package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestByIDPlans: every query that re-reads a list's rows by id looks each id
// up in an index; none walks the list's key range (an exam's sessions, a
// quiz's entries, a chat's messages) testing rows against the ids, which
// made a heartbeat cost a whole exam.
func TestByIDPlans(t *testing.T) {
	schema, err := readSchema()
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(Options{Path: filepath.Join(t.TempDir(), "plan.db"), Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	where, _ := ChatFilter{Scope: "support", Status: "waiting"}.where()
	cases := []struct {
		name, sql, want string
		args            []any
	}{
		{"sessions", sessionsByIDSQL, "exam_sessions USING INDEX sqlite_autoindex_exam_sessions_1 (id=?)", []any{"e1", `["a"]`}},
		{"violations", violationsByIDSQL, "violations USING INDEX sqlite_autoindex_violations_1 (id=?)", []any{"e1", `["a"]`}},
		{"leaderboard", leaderboardByIDSQL, "leaderboard_entries USING INDEX sqlite_autoindex_leaderboard_entries_1 (id=?)", []any{`["a"]`, "Q1"}},
		{"chat messages", chatMessagesByIDSQL, "SEARCH m USING INDEX sqlite_autoindex_chat_messages_1 (id=?)", []any{"c1", 10, `["a"]`}},
		{"chat sessions", chatSessionsByIDSQL(strings.ReplaceAll(where, "s.", "+s.")), "USING INDEX sqlite_autoindex_chat_sessions_1 (id=?)", []any{`["a"]`, "support", "waiting"}},
		{"presence", presenceByIDSQL, "presence USING PRIMARY KEY (scope=? AND user_id=?)", []any{"global", `["a"]`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rows, err := db.read.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+c.sql, c.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if !strings.Contains(strings.Join(plan, "\n"), c.want) {
				t.Fatalf("plan does not look ids up (want %q):\n  %s", c.want, strings.Join(plan, "\n  "))
			}
		})
	}
}

// readSchema reads the module's schema.sql (one directory up).
func readSchema() (string, error) {
	b, err := os.ReadFile(filepath.Join("..", "schema.sql"))
	return string(b), err
}
