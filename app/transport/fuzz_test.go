package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
	"invigil/store/storetest"
)

type fuzzVerifier struct{ clock clockwork.Clock }

func (v fuzzVerifier) Verify(_ context.Context, token string) (identity.User, time.Time, error) {
	if token != "good" {
		return identity.User{}, time.Time{}, apperr.New(apperr.Unauthenticated, "bad token")
	}
	return identity.User{ID: "u1", Role: identity.Tutor, Name: "U"}, v.clock.Now().Add(time.Hour), nil
}

// panicWatch is a log handler that remembers whether anything logged a
// panic (handlers recover them; a fuzz target must still see them).
type panicWatch struct {
	mu     sync.Mutex
	panics []string
}

func (p *panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicWatch) Handle(_ context.Context, r slog.Record) error {
	if bytes.Contains([]byte(r.Message), []byte("panic")) {
		p.mu.Lock()
		p.panics = append(p.panics, r.Message)
		p.mu.Unlock()
	}
	return nil
}
func (p *panicWatch) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicWatch) WithGroup(string) slog.Handler      { return p }

var contractCodes = []string{"unauthenticated", "forbidden", "invalid_argument", "not_found", "conflict", "rate_limited", "too_large", "internal"}

// FuzzFrame feeds arbitrary client frames to a socket's handler: nothing
// panics, every answer is a JSON frame of the contract, and every error
// carries a contract code (internal only if something broke, which fails).
func FuzzFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"auth","token":"good"}`,
		`{"type":"sub","id":"q1","query":"test.list","args":{"n":3},"deltas":true}`,
		`{"type":"unsub","id":"q1"}`,
		`{"type":"call","id":"c1","fn":"test.echo","args":{"x":[1,2,{"y":null}]}}`,
		`{"type":"ping"}`, `{"type":"sub","id":"","query":""}`, `[]`, `null`, `{"type":7}`,
		`{"type":"call","id":"` + string(bytes.Repeat([]byte("i"), 70)) + `","fn":"x"}`,
	} {
		f.Add([]byte(`{"type":"auth","token":"good"}`), []byte(seed))
	}
	clock := clockwork.NewFakeClock()
	db := storetest.MustOpen(f, clock)
	watch := &panicWatch{}
	log := slog.New(watch)
	e := engine.New(db, engine.Options{Logger: log})
	f.Cleanup(e.Close)
	e.Func("test.echo", func(_ context.Context, _ engine.Caller, args json.RawMessage) (any, error) {
		var v any
		if err := json.Unmarshal(args, &v); err != nil {
			return nil, apperr.New(apperr.InvalidArgument, "bad")
		}
		return v, nil
	})
	e.Query("test.list", engine.Query{Prepare: func(_ context.Context, _ engine.Caller, raw json.RawMessage) (engine.Plan, error) {
		var a struct {
			N int `json:"n"`
		}
		if json.Unmarshal(raw, &a) != nil || a.N < 0 || a.N > 50 {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "n")
		}
		return engine.Plan{Args: a, Share: string(rune('a' + a.N)), List: &engine.List{Key: "k",
			All: func(context.Context) ([]engine.Row, error) {
				rows := make([]engine.Row, a.N)
				for i := range rows {
					id := string(rune('a' + i))
					rows[i] = engine.Row{ID: id, Order: id, Value: map[string]string{"_id": id}}
				}
				return rows, nil
			},
			Fetch: func(context.Context, []string) ([]engine.Row, error) { return nil, nil },
		}}, nil
	}})
	s := New(Options{Engine: e, Verifier: fuzzVerifier{clock}, Clock: clock, Logger: log})
	f.Fuzz(func(t *testing.T, first, frame []byte) {
		var out [][]byte
		c := &wsConn{srv: s, id: s.nextConn.Add(1), rec: &hijackRecorder{}, subs: map[string]*wsSub{}}
		c.q = newSendQueue(1<<20, 1<<20, &s.queuedBytes, &s.sentBytes, func(b []byte) { out = append(out, b) }, func(int) {}, func(time.Time) {})
		c.handle(first)
		c.handle(frame)
		c.closed()
		watch.mu.Lock()
		panics := watch.panics
		watch.mu.Unlock()
		if len(panics) > 0 {
			t.Fatalf("a frame made the server panic: %v (frame %q)", panics, frame)
		}
		for _, b := range out {
			var m struct {
				Type string `json:"type"`
				Code string `json:"code"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("the server sent a frame that is not JSON: %q", b)
			}
			if !slices.Contains([]string{"authed", "data", "delta", "result", "error", "pong"}, m.Type) {
				t.Fatalf("unknown frame type in %q", b)
			}
			if m.Type == "error" && (!slices.Contains(contractCodes, m.Code) || m.Code == "internal") {
				t.Fatalf("error frame %q for %q", b, frame)
			}
		}
	})
}
