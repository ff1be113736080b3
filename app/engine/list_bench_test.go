package engine

import (
	"fmt"
	"testing"
)

// Benchmarks of the row patch and the delta, on a 1,000-row list of rows
// the size of a proctoring grid's (~300 bytes each):
//
//	go test -run '^$' -bench 'Patch|Delta|Whole' ./app/engine/

type benchRow struct {
	ID       string `json:"_id"`
	Name     string `json:"student_name"`
	Status   string `json:"status"`
	Answered int    `json:"answered_count"`
	Pad      string `json:"last_heartbeat"`
}

func benchList(n int, l *List) (*listState, []Row) {
	rows := make([]Row, n)
	for i := range rows {
		id := fmt.Sprintf("s_%06d", i)
		rows[i] = Row{ID: id, Order: fmt.Sprintf("Student %06d", i),
			Value: benchRow{id, fmt.Sprintf("Student %06d", i), "active", 0, "2026-03-02T09:00:00.000Z and some more bytes for a realistic row size of a grid"}}
	}
	ls, err := l.build(rows)
	if err != nil {
		panic(err)
	}
	return ls, rows
}

// BenchmarkPatchOneRow: a heartbeat's cost to the engine: one row of a
// 1,000-row list re-encoded and put in place, and the delta computed.
func BenchmarkPatchOneRow(b *testing.B) {
	l := &List{}
	ls, rows := benchList(1000, l)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := rows[i%len(rows)]
		v := r.Value.(benchRow)
		v.Answered = i + 1
		next, d, ok, err := l.patch(ls, []string{r.ID}, []Row{{ID: r.ID, Order: r.Order, Value: v}})
		if err != nil || !ok {
			b.Fatal(err)
		}
		if len(d.Upsert) != 1 || d.Order != nil {
			b.Fatalf("delta %+v", d)
		}
		ls = next
	}
}

// BenchmarkPatchTopN: a new row entering a newest-50 stream (violations).
func BenchmarkPatchTopN(b *testing.B) {
	l := &List{Desc: true, Limit: 50}
	ls, _ := benchList(1000, l)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("n_%09d", i)
		r := Row{ID: id, Order: fmt.Sprintf("Zed %09d", i), Value: benchRow{ID: id, Name: "new"}}
		next, d, ok, err := l.patch(ls, []string{id}, []Row{r})
		if err != nil || !ok {
			b.Fatal(err)
		}
		if len(d.Upsert) != 1 || len(d.Remove) != 1 {
			b.Fatalf("delta %+v", d)
		}
		ls = next
	}
}

// BenchmarkDeltaBody: encoding a one-row delta frame's body, once per push.
func BenchmarkDeltaBody(b *testing.B) {
	l := &List{}
	ls, rows := benchList(1000, l)
	v := rows[500].Value.(benchRow)
	v.Answered = 7
	_, d, _, _ := l.patch(ls, []string{v.ID}, []Row{{ID: v.ID, Order: rows[500].Order, Value: v}})
	b.ReportAllocs()
	for b.Loop() {
		if len(d.Body()) < 100 {
			b.Fatal("short body")
		}
	}
}

// BenchmarkWholeList: a first value (or a subscriber without deltas): the
// kept rows joined into one array, no JSON encoding.
func BenchmarkWholeList(b *testing.B) {
	ls, _ := benchList(1000, &List{})
	b.ReportAllocs()
	for b.Loop() {
		if len(ls.whole()) < 1000 {
			b.Fatal("short")
		}
	}
}
