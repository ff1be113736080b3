package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/leaderboard"
	"invigil/store"
)

// boardRow is one getLeaderboard row, decoded strictly: a field the
// contract does not list (a student id, say) fails the decode.
type boardRow struct {
	ID          string  `json:"_id"`
	Rank        int     `json:"rank"`
	Nickname    string  `json:"nickname"`
	Score       float64 `json:"score"`
	MaxScore    float64 `json:"max_score"`
	Percentage  float64 `json:"percentage"`
	SubmittedAt string  `json:"submitted_at"`
}

func decodeBoard(t *testing.T, raw []byte) []boardRow {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var rows []boardRow
	if err := dec.Decode(&rows); err != nil {
		t.Fatalf("board %s: %v", raw, err)
	}
	return rows
}

// registerQuiz registers an open exam with a quiz code.
func registerQuiz(h *apptest.Harness, examID, code, title string) {
	h.T.Helper()
	h.Exam(exam.Registration{ExamID: examID, Title: title, TutorIDs: []string{tutor1.ID}, QuizCode: code, Status: exam.Open})
}

// play is one graded submission: at is seconds after the quiz started.
type play struct {
	nick       string
	score, max float64
	at         int
}

// pushScore posts a score for quiz code (exam examID) through the signed hook.
func pushScore(t *testing.T, h *apptest.Harness, examID, code, sub string, p play) {
	t.Helper()
	code2, body := h.Hook("/hooks/scores", "score_"+sub, scoreBody(h, examID, code, sub, p))
	if code2 != http.StatusOK {
		t.Fatalf("score %s: %d %s", sub, code2, body)
	}
}

func scoreBody(h *apptest.Harness, examID, code, sub string, p play) map[string]any {
	start := h.Clock.Now().Add(-time.Hour)
	return map[string]any{
		"submission_id": sub, "exam_id": examID, "quiz_code": code, "nickname": p.nick,
		"score": p.score, "max_score": p.max,
		"submitted_at": start.Add(time.Duration(p.at) * time.Second).Format(time.RFC3339Nano),
	}
}

// board reads getLeaderboard over HTTP without a token.
func board(t *testing.T, h *apptest.Harness, args map[string]any) []boardRow {
	t.Helper()
	code, body := postAs(h, "/api/query/leaderboard.getLeaderboard", "", mustJSON(t, args))
	if code != http.StatusOK {
		t.Fatalf("getLeaderboard %v: %d %s", args, code, body)
	}
	return decodeBoard(t, []byte(body))
}

// TestLeaderboardOrder plays each case's scores, in the order listed, into
// a quiz of its own, with a token-less delta subscriber watching. The
// board is by score descending, then earliest submitted_at; equal score and
// equal time share a rank and the next rank skips (1, 2, 2, 4); limit keeps
// the top. What the subscriber built from deltas equals what a fresh read
// returns, row for row.
func TestLeaderboardOrder(t *testing.T) {
	h := apptest.Boot(t)
	negZero := math.Copysign(0, -1)
	twelve := make([]play, 12)
	for i := range twelve {
		twelve[i] = play{fmt.Sprintf("P%02d", i), float64(i), 20, i}
	}
	cases := []struct {
		name  string
		limit int // 0: absent
		plays []play
		// want is "rank nickname" in order; within a shared rank the order is
		// the rows' opaque ids, so names there are compared as a set, and
		// "A|B" accepts either.
		want []string
	}{
		{name: "higher score first", plays: []play{{"Ada", 5, 10, 1}, {"Ben", 9, 10, 2}, {"Cy", 7, 10, 3}},
			want: []string{"1 Ben", "2 Cy", "3 Ada"}},
		{name: "equal score: earlier submission first, whatever the arrival", plays: []play{{"Late", 8, 10, 20}, {"Early", 8, 10, 10}},
			want: []string{"1 Early", "2 Late"}},
		{name: "equal score and equal time share a rank", plays: []play{{"D", 7, 10, 3}, {"B", 8, 10, 2}, {"A", 9, 10, 1}, {"C", 8, 10, 2}},
			want: []string{"1 A", "2 B", "2 C", "4 D"}},
		{name: "three-way tie at the top", plays: []play{{"A", 10, 10, 5}, {"B", 10, 10, 5}, {"D", 3, 10, 1}, {"C", 10, 10, 5}},
			want: []string{"1 A", "1 B", "1 C", "4 D"}},
		{name: "equal score, a microsecond apart, do not tie", plays: []play{{"B", 6, 10, 0}, {"A", 6, 10, 0}},
			want: []string{"1 B", "2 A"}}, // submitted a microsecond apart: set in the loop below
		{name: "fractional scores", plays: []play{{"Nine", 9, 10, 1}, {"NineHalf", 9.5, 10, 2}, {"NineQuarter", 9.25, 10, 3}},
			want: []string{"1 NineHalf", "2 NineQuarter", "3 Nine"}},
		{name: "score over max_score of another row: the score ranks, not the percentage", plays: []play{{"Pct", 9, 9, 1}, {"Pts", 10, 20, 2}},
			want: []string{"1 Pts", "2 Pct"}},
		{name: "zero and negative zero are one score", plays: []play{{"Zero", 0, 10, 4}, {"NegZero", negZero, 10, 4}, {"One", 1, 10, 9}},
			want: []string{"1 One", "2 NegZero", "2 Zero"}},
		{name: "limit keeps the top", limit: 3, plays: []play{{"E", 1, 10, 1}, {"A", 9, 10, 1}, {"D", 2, 10, 1}, {"B", 8, 10, 1}, {"C", 7, 10, 1}},
			want: []string{"1 A", "2 B", "3 C"}},
		{name: "limit cuts through a tie", limit: 2, plays: []play{{"B", 8, 10, 2}, {"A", 9, 10, 1}, {"C", 8, 10, 2}},
			want: []string{"1 A", "2 B|C"}},
		{name: "a newcomer pushes the last one off", limit: 2, plays: []play{{"B", 5, 10, 1}, {"C", 4, 10, 1}, {"A", 6, 10, 1}},
			want: []string{"1 A", "2 B"}},
		{name: "limit 1", limit: 1, plays: []play{{"B", 5, 10, 1}, {"A", 6, 10, 1}}, want: []string{"1 A"}},
		{name: "default limit is 10", plays: twelve,
			want: []string{"1 P11", "2 P10", "3 P09", "4 P08", "5 P07", "6 P06", "7 P05", "8 P04", "9 P03", "10 P02"}},
		{name: "empty board", want: []string{}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			examID, code := fmt.Sprintf("qe%d", i), fmt.Sprintf("Q%d", i)
			registerQuiz(h, examID, code, c.name)
			args := map[string]any{"quiz_code": code}
			if c.limit > 0 {
				args["limit"] = c.limit
			}
			ws := h.Dial(nil) // no token: the board is public
			ws.Send(map[string]any{"type": "sub", "id": "b", "query": "leaderboard.getLeaderboard", "args": args, "deltas": true})
			view := &apptest.View{}
			if err := view.Apply(ws.Next()); err != nil {
				t.Fatal(err)
			}
			for j, p := range c.plays {
				body := scoreBody(h, examID, code, fmt.Sprintf("%s-s%d", code, j), p)
				if c.name == "equal score, a microsecond apart, do not tie" {
					// Supabase's times have microseconds: they count.
					body["submitted_at"] = h.Clock.Now().Add(-time.Hour + time.Duration(j)*time.Microsecond).Format(time.RFC3339Nano)
				}
				if status, resp := h.Hook("/hooks/scores", fmt.Sprintf("score_%s_%d", code, j), body); status != http.StatusOK {
					t.Fatalf("score %d: %d %s", j, status, resp)
				}
			}
			if err := h.App.Engine.Settle(t.Context()); err != nil {
				t.Fatal(err)
			}
			got := board(t, h, args)
			for _, f := range ws.Quiet(100 * time.Millisecond) {
				if err := view.Apply(f); err != nil {
					t.Fatalf("%v: %s", err, f.Raw)
				}
			}
			if diff := cmp.Diff(got, decodeBoard(t, view.JSON())); diff != "" {
				t.Fatalf("the subscriber holds (-read +held):\n%s", diff)
			}
			checkRanks(t, c.want, got)
			for _, r := range got {
				if strings.Contains(r.ID, code+"-s") {
					t.Fatalf("_id %q is the submission id", r.ID)
				}
				if want := math.Round(r.Score/r.MaxScore*1000) / 10; r.Percentage != want {
					t.Fatalf("%s: percentage %v, want %v", r.Nickname, r.Percentage, want)
				}
			}
		})
	}
}

// checkRanks compares rows with want ("rank nickname"); names sharing a
// rank are compared as a set, and "A|B" accepts either name.
func checkRanks(t *testing.T, want []string, rows []boardRow) {
	t.Helper()
	got := make([]string, len(rows))
	for i, r := range rows {
		got[i] = fmt.Sprintf("%d %s", r.Rank, r.Nickname)
	}
	want = slices.Clone(want)
	for i := range min(len(want), len(got)) {
		wantRank, names, _ := strings.Cut(want[i], " ")
		gotRank, name, _ := strings.Cut(got[i], " ")
		if alts := strings.Split(names, "|"); len(alts) > 1 && wantRank == gotRank && slices.Contains(alts, name) {
			want[i] = got[i]
		}
	}
	byRank := func(s []string) []string {
		s = slices.Clone(s)
		slices.SortStableFunc(s, func(a, b string) int {
			var ra, rb int
			fmt.Sscan(a, &ra)
			fmt.Sscan(b, &rb)
			if ra != rb {
				return ra - rb
			}
			return strings.Compare(a, b)
		})
		return s
	}
	if diff := cmp.Diff(byRank(want), byRank(got)); diff != "" {
		t.Fatalf("board (-want +got):\n%s\nin order: %v", diff, got)
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].Rank < rows[i-1].Rank {
			t.Fatalf("ranks go down: %v", got)
		}
	}
}

// quizState is everything a score delivery can change.
type quizState struct {
	Entries []store.LeaderboardEntry
	Players int
}

func readQuiz(t *testing.T, h *apptest.Harness, code string) quizState {
	t.Helper()
	es, err := h.App.DB.LeaderboardTop(t.Context(), code, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.App.DB.LeaderboardCount(t.Context(), code)
	if err != nil {
		t.Fatal(err)
	}
	return quizState{Entries: es, Players: n}
}

func submissions(s quizState) []string {
	out := []string{}
	for _, e := range s.Entries {
		out = append(out, e.SubmissionID)
	}
	return out
}

// TestScoreHooks plays deliveries to POST /hooks/scores in order. Forged,
// stale and invalid ones are refused with their code and change nothing; a
// replayed webhook-id and a resend of a submission under a new id are
// answered 200 and change nothing; a different score for a submission
// already on the board is a conflict and changes nothing; a refused
// delivery does not use up its webhook id.
func TestScoreHooks(t *testing.T) {
	h := apptest.Boot(t)
	registerQuiz(h, "k1", "KIDS1", "Kids quiz")
	registerQuiz(h, "k2", "KIDS2", "Other quiz")
	const otherSecret = "whsec_c29tZWJvZHktZWxzZXMtc2VjcmV0"
	now := h.Clock.Now()
	ada := map[string]any{"submission_id": "sub-1", "exam_id": "k1", "quiz_code": "KIDS1", "nickname": "Ada",
		"score": 7, "max_score": 10, "submitted_at": now.Add(-time.Minute).Format(time.RFC3339)}
	ben := with(ada, "submission_id", "sub-2", "nickname", "Ben", "score", 9)
	sign := func(secret string, skew time.Duration) signer { return hookSigner(t, h, secret, skew) }
	valid := sign(apptest.HookSecret, 0)
	cases := []struct {
		name   string
		id     string
		body   any
		sign   signer
		tamper bool   // the body changes after signing
		status int    // 200 or the error's
		code   string // the error's code
		board  []string
	}{
		{name: "signed with another secret", id: "msg_1", body: ada, sign: sign(otherSecret, 0), status: 401, code: "unauthenticated"},
		{name: "body changed after signing", id: "msg_2", body: ada, sign: valid, tamper: true, status: 401, code: "unauthenticated"},
		{name: "timestamp 6 minutes old", id: "msg_3", body: ada, sign: sign(apptest.HookSecret, -6*time.Minute), status: 401, code: "unauthenticated"},
		{name: "timestamp 6 minutes ahead", id: "msg_4", body: ada, sign: sign(apptest.HookSecret, 6*time.Minute), status: 401, code: "unauthenticated"},
		{name: "no signature headers", id: "msg_5", body: ada, sign: func(string, []byte) http.Header { return http.Header{} }, status: 401, code: "unauthenticated"},
		{name: "not JSON", id: "msg_6", body: json.RawMessage(`{"submission_id":`), sign: valid, status: 400, code: "invalid_argument"},
		{name: "not an object", id: "msg_6", body: json.RawMessage(`["sub-1"]`), sign: valid, status: 400, code: "invalid_argument"},
		{name: "no submission_id", id: "msg_6", body: without(ada, "submission_id"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "no exam_id", id: "msg_6", body: without(ada, "exam_id"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "no quiz_code", id: "msg_6", body: without(ada, "quiz_code"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "no nickname", id: "msg_6", body: without(ada, "nickname"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "no score", id: "msg_6", body: without(ada, "score"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "no max_score", id: "msg_6", body: without(ada, "max_score"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "no submitted_at", id: "msg_6", body: without(ada, "submitted_at"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "score above max_score", id: "msg_6", body: with(ada, "score", 11), sign: valid, status: 400, code: "invalid_argument"},
		{name: "negative score", id: "msg_6", body: with(ada, "score", -1), sign: valid, status: 400, code: "invalid_argument"},
		{name: "max_score 0", id: "msg_6", body: with(ada, "score", 0, "max_score", 0), sign: valid, status: 400, code: "invalid_argument"},
		{name: "negative max_score", id: "msg_6", body: with(ada, "score", -2, "max_score", -1), sign: valid, status: 400, code: "invalid_argument"},
		{name: "max_score past the limit", id: "msg_6", body: with(ada, "max_score", 2e6), sign: valid, status: 400, code: "invalid_argument"},
		{name: "score as text", id: "msg_6", body: with(ada, "score", "7"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "submitted_at not a time", id: "msg_6", body: with(ada, "submitted_at", "yesterday"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "submitted_at an hour ahead", id: "msg_6", body: with(ada, "submitted_at", now.Add(time.Hour).Format(time.RFC3339)), sign: valid, status: 400, code: "invalid_argument"},
		{name: "submitted_at in 1970", id: "msg_6", body: with(ada, "submitted_at", "1970-01-01T00:00:00Z"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "nickname blank", id: "msg_6", body: with(ada, "nickname", "   "), sign: valid, status: 400, code: "invalid_argument"},
		{name: "nickname 41 characters", id: "msg_6", body: with(ada, "nickname", strings.Repeat("é", 41)), sign: valid, status: 400, code: "invalid_argument"},
		{name: "nickname on two lines", id: "msg_6", body: with(ada, "nickname", "Ada\nLovelace"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "quiz_code too long", id: "msg_6", body: with(ada, "quiz_code", strings.Repeat("Q", 65)), sign: valid, status: 400, code: "invalid_argument"},
		{name: "unknown quiz code", id: "msg_6", body: with(ada, "quiz_code", "NOPE"), sign: valid, status: 404, code: "not_found"},
		{name: "exam of another quiz", id: "msg_6", body: with(ada, "exam_id", "k2"), sign: valid, status: 400, code: "invalid_argument"},
		{name: "unknown exam with a known quiz code", id: "msg_6", body: with(ada, "exam_id", "k9"), sign: valid, status: 400, code: "invalid_argument"},
		// A refused delivery does not use up its id (msg_6 was refused after it
		// was claimed, inside the write: the claim was undone with it).
		{name: "first valid delivery, on a refused id", id: "msg_6", body: ada, sign: valid, status: 200, board: []string{"sub-1"}},
		{name: "replayed webhook-id with another body", id: "msg_6", body: ben, sign: valid, status: 200, board: []string{"sub-1"}},
		{name: "same submission under a new id", id: "msg_7", body: ada, sign: valid, status: 200, board: []string{"sub-1"}},
		{name: "same submission, same time written otherwise", id: "msg_8",
			body: with(ada, "submitted_at", now.Add(-time.Minute).In(time.FixedZone("CET", 3600)).Format(time.RFC3339Nano)),
			sign: valid, status: 200, board: []string{"sub-1"}},
		{name: "a different score for the same submission", id: "msg_9", body: with(ada, "score", 10), sign: valid, status: 409, code: "conflict", board: []string{"sub-1"}},
		{name: "a different nickname for the same submission", id: "msg_9", body: with(ada, "nickname", "Adele"), sign: valid, status: 409, code: "conflict", board: []string{"sub-1"}},
		{name: "another submission", id: "msg_10", body: ben, sign: valid, status: 200, board: []string{"sub-2", "sub-1"}},
		{name: "a 40-character nickname, trimmed", id: "msg_11",
			body: with(ada, "submission_id", "sub-3", "nickname", "  "+strings.Repeat("🎓", 40)+" ", "score", 1), sign: valid, status: 200,
			board: []string{"sub-2", "sub-1", "sub-3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := readQuiz(t, h, "KIDS1")
			body, ok := c.body.(json.RawMessage)
			if !ok {
				body = mustJSON(t, c.body)
			}
			hdr := c.sign(c.id, body)
			if c.tamper {
				body = mustJSON(t, ben)
			}
			status, resp := h.Post("/hooks/scores", hdr, body)
			want := httpErr{Status: c.status, Code: c.code}
			if diff := cmp.Diff(want, decodeHTTPErr(t, status, resp)); diff != "" {
				t.Fatalf("(-want +got):\n%s\nbody: %s", diff, resp)
			}
			after := readQuiz(t, h, "KIDS1")
			if c.board == nil || slices.Equal(c.board, submissions(before)) {
				if diff := cmp.Diff(before, after); diff != "" {
					t.Fatalf("the board changed (-before +after):\n%s", diff)
				}
			}
			if got := submissions(after); c.board != nil && !slices.Equal(got, c.board) {
				t.Fatalf("board %v, want %v", got, c.board)
			}
			if other := readQuiz(t, h, "KIDS2"); other.Players != 0 {
				t.Fatalf("KIDS2 has %d entries", other.Players)
			}
		})
	}
	got := board(t, h, map[string]any{"quiz_code": "KIDS1"})
	if got[2].Nickname != strings.Repeat("🎓", 40) {
		t.Fatalf("nickname stored as %q, want it trimmed", got[2].Nickname)
	}
	if got[1].SubmittedAt != store.FormatMicroTime(now.Add(-time.Minute)) {
		t.Fatalf("submitted_at %q, want UTC to the microsecond", got[1].SubmittedAt)
	}
}

// with returns a copy of m with the key/value pairs set.
func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func without(m map[string]any, key string) map[string]any {
	out := with(m)
	delete(out, key)
	return out
}

// TestLeaderboardIsPublic: both leaderboard queries answer without a token,
// over HTTP and on a socket that never authenticates (which stays open past
// the auth timeout because it subscribed); a token-less socket still may
// not call anything; bad arguments are refused with their code.
func TestLeaderboardIsPublic(t *testing.T) {
	h := apptest.Boot(t)
	registerQuiz(h, "k1", "KIDS1", "Space quiz")
	pushScore(t, h, "k1", "KIDS1", "s1", play{"Ada", 7, 10, 1})

	if got := board(t, h, map[string]any{"quiz_code": "KIDS1"}); len(got) != 1 || got[0].Nickname != "Ada" || got[0].Rank != 1 {
		t.Fatalf("HTTP board without a token: %+v", got)
	}
	code, body := postAs(h, "/api/query/leaderboard.getQuiz", "", []byte(`{"quiz_code":"KIDS1"}`))
	if code != http.StatusOK || body != `{"quiz_code":"KIDS1","title":"Space quiz","players":1}` {
		t.Fatalf("getQuiz without a token: %d %s", code, body)
	}

	ws := h.Dial(nil)
	board := decodeBoard(t, ws.Sub("b", "leaderboard.getLeaderboard", map[string]any{"quiz_code": "KIDS1"}))
	if len(board) != 1 || board[0].Nickname != "Ada" {
		t.Fatalf("socket board: %+v", board)
	}
	if quiz := ws.Sub("q", "leaderboard.getQuiz", map[string]any{"quiz_code": "KIDS1"}); string(quiz) != `{"quiz_code":"KIDS1","title":"Space quiz","players":1}` {
		t.Fatalf("socket getQuiz: %s", quiz)
	}
	wantError(t, ws.Call("proctoring.startSession", map[string]string{"exam_id": "k1"}), "c1", "unauthenticated")
	ws.Send(map[string]any{"type": "sub", "id": "p", "query": "proctoring.getExamSessions", "args": map[string]string{"exam_id": "k1"}})
	wantError(t, ws.Next(), "p", "unauthenticated")

	h.Advance(11 * time.Second) // past the auth timeout: the socket subscribed, so it stays
	pingPong(t, ws)
	pushScore(t, h, "k1", "KIDS1", "s2", play{"Ben", 9, 10, 2})
	frames := map[string]string{}
	for range 2 {
		f := ws.Next()
		frames[f.ID] = f.Type
	}
	if diff := cmp.Diff(map[string]string{"b": "data", "q": "data"}, frames); diff != "" {
		t.Fatalf("frames after a score (-want +got):\n%s", diff)
	}

	bad := []struct {
		name, query, args, code string
	}{
		{"no quiz_code", "leaderboard.getLeaderboard", `{}`, "invalid_argument"},
		{"quiz_code a number", "leaderboard.getLeaderboard", `{"quiz_code":42}`, "invalid_argument"},
		{"limit 0", "leaderboard.getLeaderboard", `{"quiz_code":"KIDS1","limit":0}`, "invalid_argument"},
		{"limit past the maximum", "leaderboard.getLeaderboard", fmt.Sprintf(`{"quiz_code":"KIDS1","limit":%d}`, leaderboard.MaxLimit+1), "invalid_argument"},
		{"limit as text", "leaderboard.getLeaderboard", `{"quiz_code":"KIDS1","limit":"10"}`, "invalid_argument"},
		{"unknown quiz", "leaderboard.getLeaderboard", `{"quiz_code":"NOPE"}`, "not_found"},
		{"getQuiz of an unknown quiz", "leaderboard.getQuiz", `{"quiz_code":"NOPE"}`, "not_found"},
		{"getQuiz without quiz_code", "leaderboard.getQuiz", `{}`, "invalid_argument"},
	}
	for i, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			code, body := postAs(h, "/api/query/"+c.query, "", []byte(c.args))
			if diff := cmp.Diff(httpErr{Status: httpStatus[c.code], Code: c.code}, decodeHTTPErr(t, code, body)); diff != "" {
				t.Fatalf("HTTP (-want +got):\n%s", diff)
			}
			id := fmt.Sprintf("x%d", i)
			sendText(t, ws, fmt.Sprintf(`{"type":"sub","id":%q,"query":%q,"args":%s}`, id, c.query, c.args))
			wantError(t, ws.Next(), id, c.code)
		})
	}
	if got := decodeBoard(t, ws.Sub("max", "leaderboard.getLeaderboard", map[string]any{"quiz_code": "KIDS1", "limit": leaderboard.MaxLimit})); len(got) != 2 {
		t.Fatalf("limit %d: %d rows", leaderboard.MaxLimit, len(got))
	}
}

// TestNewScoreCostsTheRowsThatMoved: with deltas, a new score sends the
// new row and the rows whose rank it changed, nothing else; one below a
// full board's cut sends the board nothing (the header's player count
// changes); a retitled exam reaches the header.
func TestNewScoreCostsTheRowsThatMoved(t *testing.T) {
	h := apptest.Boot(t)
	registerQuiz(h, "k1", "KIDS1", "Space quiz")
	for i, p := range []play{{"A", 90, 100, 1}, {"B", 80, 100, 2}, {"C", 70, 100, 3}, {"D", 60, 100, 4}, {"E", 50, 100, 5}} {
		pushScore(t, h, "k1", "KIDS1", fmt.Sprintf("s%d", i), p)
	}
	ws := h.Dial(nil)
	ws.Send(map[string]any{"type": "sub", "id": "b", "query": "leaderboard.getLeaderboard", "args": map[string]any{"quiz_code": "KIDS1", "limit": 7}, "deltas": true})
	view := &apptest.View{}
	if err := view.Apply(ws.Next()); err != nil {
		t.Fatal(err)
	}
	ws.Sub("q", "leaderboard.getQuiz", map[string]any{"quiz_code": "KIDS1"})

	// step pushes a score and returns the frames that followed, by id.
	step := func(sub string, p play) map[string][]apptest.Frame {
		t.Helper()
		pushScore(t, h, "k1", "KIDS1", sub, p)
		if err := h.App.Engine.Settle(t.Context()); err != nil {
			t.Fatal(err)
		}
		out := map[string][]apptest.Frame{}
		for _, f := range ws.Quiet(150 * time.Millisecond) {
			out[f.ID] = append(out[f.ID], f)
			if f.ID == "b" {
				if err := view.Apply(f); err != nil {
					t.Fatal(err)
				}
			}
		}
		return out
	}
	upserted := func(f apptest.Frame) []string {
		var names []string
		for _, raw := range f.Upsert {
			var r boardRow
			json.Unmarshal(raw, &r)
			names = append(names, fmt.Sprintf("%d %s", r.Rank, r.Nickname))
		}
		return names
	}
	players := func(frames []apptest.Frame) string {
		if len(frames) != 1 || frames[0].Type != "data" {
			t.Fatalf("header: want one data frame, got %+v", frames)
		}
		var q leaderboard.Quiz
		json.Unmarshal(frames[0].Value, &q)
		return fmt.Sprintf("%s: %d", q.Title, q.Players)
	}

	// Into third place: itself and the three it passed, not A and B.
	got := step("s5", play{"New", 75, 100, 6})
	if len(got["b"]) != 1 || got["b"][0].Type != "delta" {
		t.Fatalf("board: want one delta, got %+v", got["b"])
	}
	if diff := cmp.Diff([]string{"3 New", "4 C", "5 D", "6 E"}, upserted(got["b"][0])); diff != "" {
		t.Fatalf("upserted (-want +got):\n%s", diff)
	}
	if p := players(got["q"]); p != "Space quiz: 6" {
		t.Fatalf("header %s", p)
	}
	// Last place on a board that is now full: one row in, nothing moved, and
	// nothing removed (the board had room).
	got = step("s6", play{"Last", 10, 100, 7})
	if f := got["b"]; len(f) != 1 || f[0].Type != "delta" || !slices.Equal(upserted(f[0]), []string{"7 Last"}) || len(f[0].Remove) != 0 {
		t.Fatalf("last place: %+v", f)
	}
	// Below the cut of a full board (limit 7, 8 players): the board hears
	// nothing, the header counts one more.
	got = step("s7", play{"Below", 5, 100, 8})
	if len(got["b"]) != 0 {
		t.Fatalf("a score below the cut sent the board %+v", got["b"])
	}
	if p := players(got["q"]); p != "Space quiz: 8" {
		t.Fatalf("header %s", p)
	}
	if diff := cmp.Diff(board(t, h, map[string]any{"quiz_code": "KIDS1", "limit": 7}), decodeBoard(t, view.JSON())); diff != "" {
		t.Fatalf("the subscriber holds (-read +held):\n%s", diff)
	}
	registerQuiz(h, "k1", "KIDS1", "Space quiz, final")
	if err := h.App.Engine.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	frames := ws.Quiet(150 * time.Millisecond)
	if len(frames) != 1 || frames[0].ID != "q" || !strings.Contains(string(frames[0].Value), `"title":"Space quiz, final"`) {
		t.Fatalf("after the exam was retitled: %+v", frames)
	}
}
