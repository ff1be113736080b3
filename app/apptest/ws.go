package apptest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"invigil/app/identity"
)

// Frame is any frame, decoded loosely for assertions.
type Frame struct {
	Type         string          `json:"type"`
	ID           string          `json:"id,omitempty"`
	User         *identity.User  `json:"user,omitempty"`
	Value        json.RawMessage `json:"value,omitempty"`
	Code         string          `json:"code,omitempty"`
	Message      string          `json:"message,omitempty"`
	RetryAfterMs int64           `json:"retry_after_ms,omitempty"`
	// A delta's fields (CONTRACT §3); Order is nil when the frame has none.
	Upsert []json.RawMessage `json:"upsert,omitempty"`
	Remove []string          `json:"remove,omitempty"`
	Order  []string          `json:"order,omitempty"`
	// Raw is the whole frame as it arrived.
	Raw string `json:"-"`
}

// WS is a test client socket; frames arrive on a channel.
type WS struct {
	h      *Harness
	Conn   *websocket.Conn
	Frames chan Frame
	Closed chan struct{}
	wmu    sync.Mutex
	n      int
	// pending holds frames read while waiting for a call's answer, in order.
	pending []Frame
}

// Dial opens /ws without authenticating.
func (h *Harness) Dial(hdr http.Header) *WS {
	h.T.Helper()
	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	conn, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		h.T.Fatalf("dial: %v", err)
	}
	w := &WS{h: h, Conn: conn, Frames: make(chan Frame, 10_000), Closed: make(chan struct{})}
	go func() {
		defer close(w.Closed)
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var f Frame
			if err := json.Unmarshal(b, &f); err != nil {
				h.T.Errorf("server sent non-JSON frame %q", b)
				return
			}
			f.Raw = string(b)
			w.Frames <- f
		}
	}()
	h.T.Cleanup(func() { conn.Close() })
	return w
}

// DialAs opens /ws and authenticates as u.
func (h *Harness) DialAs(u identity.User) *WS {
	h.T.Helper()
	w := h.Dial(nil)
	w.Send(map[string]any{"type": "auth", "token": h.Token(u)})
	if f := w.Next(); f.Type != "authed" {
		h.T.Fatalf("auth as %s: got %+v", u.ID, f)
	}
	return w
}

// Send writes a frame.
func (w *WS) Send(v any) {
	w.h.T.Helper()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.Conn.WriteJSON(v); err != nil {
		w.h.T.Fatalf("send: %v", err)
	}
}

// Next waits up to 5 s for the next frame.
func (w *WS) Next() Frame {
	w.h.T.Helper()
	if len(w.pending) > 0 {
		f := w.pending[0]
		w.pending = w.pending[1:]
		return f
	}
	return w.read()
}

func (w *WS) read() Frame {
	w.h.T.Helper()
	select {
	case f := <-w.Frames:
		return f
	case <-time.After(5 * time.Second):
		w.h.T.Fatal("no frame within 5s")
		return Frame{}
	}
}

// Quiet asserts that no frame arrives within d, and returns any that did.
func (w *WS) Quiet(d time.Duration) []Frame {
	got := w.pending
	w.pending = nil
	deadline := time.After(d)
	for {
		select {
		case f := <-w.Frames:
			got = append(got, f)
		case <-deadline:
			return got
		}
	}
}

// Sub subscribes and returns the first data frame's value.
func (w *WS) Sub(id, query string, args any) json.RawMessage {
	w.h.T.Helper()
	w.Send(map[string]any{"type": "sub", "id": id, "query": query, "args": args})
	f := w.Next()
	if f.Type != "data" || f.ID != id {
		w.h.T.Fatalf("sub %s %s: got %+v", id, query, f)
	}
	return f.Value
}

// Call sends a call and waits for its result or error frame.
func (w *WS) Call(fn string, args any) Frame {
	w.h.T.Helper()
	w.n++
	id := "c" + strconv.Itoa(w.n)
	w.Send(map[string]any{"type": "call", "id": id, "fn": fn, "args": args})
	for {
		f := w.read()
		if f.ID == id && (f.Type == "result" || f.Type == "error") {
			return f
		}
		// Data frames for subscriptions may interleave; Next returns them later.
		w.pending = append(w.pending, f)
	}
}

// View is what a client holds for one subscription, rebuilt from its data
// and delta frames the way CONTRACT §3 says a client must.
type View struct {
	value json.RawMessage            // the last data frame's value
	rows  map[string]json.RawMessage // a list's rows by _id
	order []string
	list  bool
}

// Apply takes one data or delta frame.
func (v *View) Apply(f Frame) error {
	switch f.Type {
	case "data":
		v.value = f.Value
		var rows []json.RawMessage
		if json.Unmarshal(f.Value, &rows) != nil {
			v.list = false
			return nil
		}
		v.list, v.rows, v.order = true, map[string]json.RawMessage{}, nil
		for _, r := range rows {
			id := rowID(r)
			v.rows[id] = r
			v.order = append(v.order, id)
		}
	case "delta":
		if !v.list {
			return fmt.Errorf("a delta for a subscription that holds no list")
		}
		for _, id := range f.Remove {
			delete(v.rows, id)
			v.order = slices.DeleteFunc(v.order, func(x string) bool { return x == id })
		}
		for _, r := range f.Upsert {
			id := rowID(r)
			if _, ok := v.rows[id]; !ok && f.Order == nil {
				return fmt.Errorf("delta adds %s without an order", id)
			}
			v.rows[id] = r
		}
		if f.Order != nil {
			if len(f.Order) != len(v.rows) {
				return fmt.Errorf("order lists %d ids for %d rows", len(f.Order), len(v.rows))
			}
			v.order = f.Order
		}
	default:
		return fmt.Errorf("not a data or delta frame: %s", f.Type)
	}
	return nil
}

// JSON is the value held: for a list, its rows in order as a JSON array.
func (v *View) JSON() json.RawMessage {
	if !v.list {
		return v.value
	}
	parts := make([]string, len(v.order))
	for i, id := range v.order {
		parts[i] = string(v.rows[id])
	}
	return json.RawMessage("[" + strings.Join(parts, ",") + "]")
}

func rowID(r json.RawMessage) string {
	var x struct {
		ID string `json:"_id"`
	}
	json.Unmarshal(r, &x)
	return x.ID
}
