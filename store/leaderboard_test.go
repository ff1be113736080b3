package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"

	"invigil/store"
	"invigil/store/storetest"
)

// The leaderboard's reads are index walks: the top N reads N index entries
// (no sort of the whole quiz), the count reads the quiz's index range only,
// and exams are found by quiz code through their index.
func TestLeaderboardReadsUseTheirIndex(t *testing.T) {
	db := storetest.MustOpen(t, nil)
	raw, err := sql.Open("sqlite", "file:"+db.Path()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	want := map[string]string{
		"top":   "SEARCH leaderboard_entries USING INDEX leaderboard_rank (quiz_code=?)",
		"count": "SEARCH leaderboard_entries USING COVERING INDEX leaderboard_rank (quiz_code=?)",
		"quiz":  "SEARCH exams USING INDEX exams_by_quiz_code (quiz_code=?)",
	}
	for name, query := range store.LeaderboardReads {
		args := []any{"Q1"}
		if name == "top" {
			args = append(args, 10)
		}
		rows, err := raw.Query("EXPLAIN QUERY PLAN "+query, args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		got := strings.Join(plan, "; ")
		if name == "quiz" {
			// A handful of exams share a code at most: sorting them is fine.
			got = strings.TrimSuffix(got, "; USE TEMP B-TREE FOR ORDER BY")
		}
		if got != want[name] {
			t.Errorf("%s: plan %q, want %q", name, got, want[name])
		}
	}
}

// One entry per submission: a second one stores nothing and returns the
// first; clearing a quiz leaves the others.
func TestLeaderboardEntryOncePerSubmission(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	ctx := context.Background()
	add := func(e store.LeaderboardEntry) (store.LeaderboardEntry, bool) {
		t.Helper()
		var stored store.LeaderboardEntry
		var added bool
		err := db.Update(ctx, func(tx *store.Tx) (err error) {
			stored, added, err = tx.AddLeaderboardEntry(e)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return stored, added
	}
	entry := func(sub, quiz string, score float64) store.LeaderboardEntry {
		return store.LeaderboardEntry{SubmissionID: sub, QuizCode: quiz, ExamID: "e1", Nickname: "Kid " + sub,
			Score: score, MaxScore: 10, SubmittedAt: store.FormatMicroTime(clock.Now())}
	}
	first, added := add(entry("s1", "Q1", 7))
	if !added || first.ID == "" || strings.Contains(first.ID, "s1") {
		t.Fatalf("first entry: %+v added=%v (want an opaque id)", first, added)
	}
	again, added := add(entry("s1", "Q1", 9))
	if added || !cmp.Equal(again, first) {
		t.Fatalf("second entry for s1: added=%v, got %+v, want the first %+v", added, again, first)
	}
	for i := range 3 {
		add(entry(fmt.Sprintf("t%d", i), "Q2", float64(i)))
	}
	err := db.Update(ctx, func(tx *store.Tx) error {
		n, err := tx.ClearLeaderboard("Q2")
		if n != 3 {
			t.Errorf("cleared %d entries, want 3", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for quiz, want := range map[string]int{"Q1": 1, "Q2": 0} {
		if n, err := db.LeaderboardCount(ctx, quiz); err != nil || n != want {
			t.Errorf("%s has %d entries (%v), want %d", quiz, n, err, want)
		}
	}
}
