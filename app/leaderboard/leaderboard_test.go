package leaderboard

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"invigil/app/engine"
	"invigil/store"
)

// orderKey's text order is the board's order: score descending, then
// earliest submitted_at, over scores with fractions, zeros and the largest
// allowed, and times a microsecond apart.
func TestOrderKeyIsTheBoardsOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	scores := []float64{0, 0.001, 0.5, 1, 9.25, 9.5, 10, 99.99, 100, 1e5, MaxScore}
	type entry struct {
		score float64
		at    string
	}
	es := make([]entry, 400)
	for i := range es {
		es[i] = entry{scores[rng.IntN(len(scores))], store.FormatMicroTime(base.Add(time.Duration(rng.IntN(5)) * time.Microsecond))}
	}
	byKey := slices.Clone(es)
	slices.SortStableFunc(byKey, func(a, b entry) int { return cmp.Compare(orderKey(a.score, a.at), orderKey(b.score, b.at)) })
	byRule := slices.Clone(es)
	slices.SortStableFunc(byRule, func(a, b entry) int { return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.at, b.at)) })
	if !slices.Equal(byKey, byRule) {
		t.Fatal("orderKey sorts differently from score descending, then submitted_at")
	}
	// -0 would sort above every other score: a score comes in as 0.
	negZero, ten := math.Copysign(0, -1), 10.0
	e, err := Score{SubmissionID: "s", ExamID: "e", QuizCode: "Q", Nickname: "N", Score: &negZero, MaxScore: &ten,
		SubmittedAt: "2026-03-02T09:00:00Z"}.entry(base)
	if err != nil || math.Float64bits(e.Score) != 0 {
		t.Fatalf("-0 stored as %v (bits %x), %v", e.Score, math.Float64bits(e.Score), err)
	}
}

func TestRanks(t *testing.T) {
	cases := []struct {
		orders []string
		want   []int
	}{
		{nil, nil},
		{[]string{"a"}, []int{1}},
		{[]string{"a", "b", "c"}, []int{1, 2, 3}},
		{[]string{"a", "b", "b", "c"}, []int{1, 2, 2, 4}},
		{[]string{"a", "a", "a", "b"}, []int{1, 1, 1, 4}},
		{[]string{"a", "b", "b", "b"}, []int{1, 2, 2, 2}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.orders), func(t *testing.T) {
			rows := make([]engine.Row, len(c.orders))
			for i, o := range c.orders {
				rows[i] = engine.Row{ID: fmt.Sprint(i), Order: o, Value: Entry{Rank: 99}}
			}
			rank(rows)
			var got []int
			for _, r := range rows {
				got = append(got, r.Value.(Entry).Rank)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("ranks %v, want %v", got, c.want)
			}
		})
	}
}
