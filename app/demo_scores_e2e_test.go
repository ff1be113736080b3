package app_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"invigil/app/apptest"
	"invigil/app/demo"
	"invigil/app/leaderboard"
)

// TestDemoPushesScoresThroughTheHook: --demo plays quiz DEMO42 through the
// real POST /hooks/scores, signed and over HTTP (the hook metric counts
// every score): the board fills with a round of players, newcomers reach
// the top 3 now and then, and after the round it starts over. A token-less
// socket watches, as the projector does.
func TestDemoPushesScoresThroughTheHook(t *testing.T) {
	h := apptest.Boot(t, apptest.WithDemo(0))
	ws := h.Dial(nil)
	ws.Send(map[string]any{"type": "sub", "id": "top", "query": "leaderboard.getLeaderboard",
		"args": map[string]any{"quiz_code": demo.QuizCode, "limit": 3}, "deltas": true})
	ws.Send(map[string]any{"type": "sub", "id": "quiz", "query": "leaderboard.getQuiz", "args": map[string]any{"quiz_code": demo.QuizCode}})
	top := &apptest.View{}
	var quiz leaderboard.Quiz

	// Each step moves the clock past the longest pause between two scores
	// and takes what the sockets say within a moment. The clock moves only
	// once the last score was applied, so a signature is never older than
	// the hooks' tolerance when it is checked.
	topEntries, peak, rounds := 0, 0, 0
	seen := map[string]bool{}
	take := func(f apptest.Frame) {
		t.Helper()
		switch f.ID {
		case "quiz":
			before := quiz.Players
			if err := json.Unmarshal(f.Value, &quiz); err != nil {
				t.Fatal(err)
			}
			peak = max(peak, quiz.Players)
			if quiz.Players < before {
				rounds++ // the board started over
			}
		case "top":
			if err := top.Apply(f); err != nil {
				t.Fatalf("%v: %s", err, f.Raw)
			}
			var rows []struct {
				ID string `json:"_id"`
			}
			json.Unmarshal(top.JSON(), &rows)
			for _, r := range rows {
				if !seen[r.ID] && len(seen) >= 3 {
					topEntries++
				}
				seen[r.ID] = true
			}
		default:
			t.Fatalf("unexpected frame %s", f.Raw)
		}
	}
	for step := 0; rounds == 0; step++ {
		if step > 2*demo.RoundPlayers {
			t.Fatalf("after %d steps: %d players, peak %d", step, quiz.Players, peak)
		}
		h.Advance(4 * time.Second)
		// A score shows in the header's count; then the board's frame, if
		// any, follows once the engine is at rest.
		select {
		case f := <-ws.Frames:
			take(f)
		case <-time.After(300 * time.Millisecond):
			continue // the pusher was not asleep yet: move the clock again
		}
		if err := h.App.Engine.Settle(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, f := range ws.Quiet(20 * time.Millisecond) {
			take(f)
		}
	}
	t.Logf("a round: %d players, %d newcomers reached the top 3", peak, topEntries)
	if peak != demo.RoundPlayers {
		t.Errorf("a round had %d players, want %d", peak, demo.RoundPlayers)
	}
	if topEntries < 3 {
		t.Errorf("%d newcomers reached the top 3 in a round, want a few", topEntries)
	}
	if quiz.Title == "" {
		t.Error("the demo quiz has no title")
	}
	// Every score came through the signed hook, none refused.
	if ok, other := hookCounts(t, h, "scores"); ok < demo.RoundPlayers || other != 0 {
		t.Errorf("hook deliveries: %d ok, %d refused; want every score ok", ok, other)
	}
}

// hookCounts reads invigil_hooks_total for one hook: deliveries answered
// ok, and all others.
func hookCounts(t *testing.T, h *apptest.Harness, hook string) (ok, other int) {
	t.Helper()
	res, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "invigil_hooks_total{") || !strings.Contains(line, `hook="`+hook+`"`) {
			continue
		}
		n, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q", line)
		}
		if strings.Contains(line, `code="ok"`) {
			ok += int(n)
		} else {
			other += int(n)
		}
	}
	return ok, other
}
