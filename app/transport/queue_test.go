package transport

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"invigil/app/engine"
)

// fakeWire stands in for melody: frames it is handed wait until the test
// says the client read them.
type fakeWire struct {
	handed   [][]byte
	overflow int
}

func newTestQueue(limit, window int) (*sendQueue, *fakeWire) {
	w := &fakeWire{}
	var total, sent atomic.Int64
	q := newSendQueue(limit, window, &total, &sent, func(b []byte) { w.handed = append(w.handed, b) },
		func(n int) { w.overflow = n }, func(time.Time) {})
	return q, w
}

func frameOf(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON frame: %s", b)
	}
	return m
}

// TestQueueKeepsTheNewestValue: a client that reads slowly gets the newest
// value of each subscription, never an older one after a newer, and every
// other frame in order.
func TestQueueKeepsTheNewestValue(t *testing.T) {
	q, w := newTestQueue(1<<20, 1)
	prefix := framePrefix("data", "q1")
	q.pushValue("q1", dataFrame(prefix, json.RawMessage(`1`)), time.Time{}) // handed at once: the window has room
	for v := 2; v <= 50; v++ {
		q.pushValue("q1", dataFrame(prefix, json.RawMessage(fmt.Sprint(v))), time.Time{})
		if v == 20 {
			q.push([]byte(`{"type":"result","id":"c1"}`))
		}
	}
	for !q.idle() {
		q.written()
	}
	var got []string
	for _, b := range w.handed {
		f := frameOf(t, b)
		got = append(got, fmt.Sprint(f["type"], ":", f["value"]))
	}
	want := []string{"data:1", "result:<nil>", "data:50"}
	if !slices.Equal(got, want) {
		t.Fatalf("frames the slow client got: %v, want %v", got, want)
	}
}

// TestQueueMergesDeltas: unsent deltas merge into one that takes the
// client from what it holds to the newest rows; a delta behind an unsent
// whole value becomes the newest whole value.
func TestQueueMergesDeltas(t *testing.T) {
	q, w := newTestQueue(1<<20, 1)
	q.push([]byte(`{"type":"pong"}`)) // fills the window: what follows waits
	dp := framePrefix("delta", "q1")
	row := func(id string, v int) engine.RowJSON {
		return engine.RowJSON{ID: id, Raw: json.RawMessage(fmt.Sprintf(`{"_id":%q,"v":%d}`, id, v))}
	}
	d1 := &engine.Delta{Upsert: []engine.RowJSON{row("a", 1)}}
	d2 := &engine.Delta{Upsert: []engine.RowJSON{row("a", 2), row("c", 1)}, Remove: []string{"b"}, Order: []string{"c", "a"}}
	q.pushDelta("q1", dp, d1.Body(), d1, time.Time{}, nil)
	q.pushDelta("q1", dp, d2.Body(), d2, time.Time{}, nil)
	for !q.idle() {
		q.written()
	}
	if len(w.handed) != 2 {
		t.Fatalf("want the pong and one merged delta, got %d frames", len(w.handed))
	}
	got := frameOf(t, w.handed[1])
	want := frameOf(t, []byte(`{"type":"delta","id":"q1","upsert":[{"_id":"a","v":2},{"_id":"c","v":1}],"remove":["b"],"order":["c","a"]}`))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merged delta:\n got %v\nwant %v", got, want)
	}
	if d1.Upsert[0].Raw == nil || len(d1.Upsert) != 1 {
		t.Fatal("merging changed a delta shared with other subscribers")
	}

	// A whole value still unsent: the delta after it makes a newer whole.
	q2, w2 := newTestQueue(1<<20, 1)
	q2.push([]byte(`{"type":"pong"}`))
	q2.pushValue("q1", dataFrame(framePrefix("data", "q1"), json.RawMessage(`[1]`)), time.Time{})
	q2.pushDelta("q1", dp, d1.Body(), d1, time.Time{}, func() []byte {
		return dataFrame(framePrefix("data", "q1"), json.RawMessage(`[2]`))
	})
	for !q2.idle() {
		q2.written()
	}
	if len(w2.handed) != 2 || !strings.Contains(string(w2.handed[1]), `"value":[2]`) {
		t.Fatalf("want the newest whole value, got %q", w2.handed)
	}
}

// TestQueueClosesPastItsBound: a growing backlog past the byte bound closes
// the socket; one large frame alone does not.
func TestQueueClosesPastItsBound(t *testing.T) {
	q, w := newTestQueue(1000, 1)
	q.push([]byte(`{"type":"pong"}`))
	q.pushValue("big", dataFrame(framePrefix("data", "big"), json.RawMessage(`"`+strings.Repeat("x", 5000)+`"`)), time.Time{})
	if w.overflow != 0 {
		t.Fatal("one large frame closed the socket")
	}
	for i := range 10 {
		q.push([]byte(fmt.Sprintf(`{"type":"result","id":"c%d","value":"%s"}`, i, strings.Repeat("y", 100))))
		if w.overflow != 0 {
			break
		}
	}
	if w.overflow == 0 {
		t.Fatal("a backlog past the bound did not close the socket")
	}
	before := len(w.handed)
	q.push([]byte(`{"type":"pong"}`))
	q.written()
	if len(w.handed) != before {
		t.Fatal("a closed queue still hands frames out")
	}
}
