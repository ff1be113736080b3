package transport

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jonboulle/clockwork"

	"invigil/app/engine"
	"invigil/store/storetest"
)

func overloadServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	clock := clockwork.NewRealClock()
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	e.Func("test.echo", func(_ context.Context, _ engine.Caller, args json.RawMessage) (any, error) { return "ok", nil })
	e.Query("test.value", engine.Query{Prepare: func(context.Context, engine.Caller, json.RawMessage) (engine.Plan, error) {
		return engine.Plan{Share: "v", Run: func(context.Context) (any, error) { return 1, nil }}, nil
	}})
	opts.Engine, opts.Verifier, opts.Clock = e, fuzzVerifier{clock}, clock
	s := New(opts)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.load.stop() })
	return s, "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func dialAuthed(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.WriteJSON(map[string]string{"type": "auth", "token": "good"})
	var f outFrame
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.ReadJSON(&f); err != nil || f.Type != "authed" {
		t.Fatalf("auth: %+v %v", f, err)
	}
	return c
}

// TestNoSocketDiesForAPongTheServerCouldNotRead: while the process is
// behind, a socket whose pong has not been read is kept; once the process
// keeps up, a silent socket is closed after DisconnectAfter as before.
func TestNoSocketDiesForAPongTheServerCouldNotRead(t *testing.T) {
	s, url := overloadServer(t, Options{DisconnectAfter: 600 * time.Millisecond})
	silent := dialAuthed(t, url) // never reads again: its pongs never go out
	stop := make(chan struct{})
	go func() { // the process is behind the whole time
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				s.load.markStalled()
			}
		}
	}()
	time.Sleep(3 * time.Second) // 5× DisconnectAfter: the property itself is about time passing
	if n := s.openSockets(); n != 1 {
		close(stop)
		t.Fatalf("a socket was closed while the server was behind (%d open)", n)
	}
	close(stop)
	deadline := time.Now().Add(stallMemory + 3*time.Second)
	for s.openSockets() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("a silent socket stayed open after the server caught up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = silent
}

// TestShedsNewWorkKeepsTheOld: past capacity (the writer's queue over half
// full), a new socket is refused with rate_limited and closed with 1013, a
// new subscription or HTTP query is refused, and sockets already served
// still get their calls answered.
func TestShedsNewWorkKeepsTheOld(t *testing.T) {
	var backlog atomic.Value
	backlog.Store(0.0)
	s, url := overloadServer(t, Options{Backlog: func() float64 { return backlog.Load().(float64) }})
	served := dialAuthed(t, url)
	backlog.Store(0.9)

	fresh, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	fresh.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f outFrame
	if err := fresh.ReadJSON(&f); err != nil || f.Type != "error" || f.Code != "rate_limited" || f.RetryAfterMs < 2000 {
		t.Fatalf("a new socket past capacity: want rate_limited, got %+v %v", f, err)
	}
	if _, _, err := fresh.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Fatalf("want close 1013, got %v", err)
	}

	served.WriteJSON(map[string]any{"type": "call", "id": "c1", "fn": "test.echo", "args": map[string]any{}})
	served.WriteJSON(map[string]any{"type": "sub", "id": "q1", "query": "test.value", "args": map[string]any{}})
	got := map[string]outFrame{}
	for range 2 {
		var f outFrame
		if err := served.ReadJSON(&f); err != nil {
			t.Fatal(err)
		}
		got[f.ID] = f
	}
	if got["c1"].Type != "result" {
		t.Errorf("a served socket's call past capacity: want a result, got %+v", got["c1"])
	}
	if got["q1"].Type != "error" || got["q1"].Code != "rate_limited" {
		t.Errorf("a new subscription past capacity: want rate_limited, got %+v", got["q1"])
	}
	req, _ := http.NewRequest(http.MethodPost, strings.Replace(strings.TrimSuffix(url, "/ws"), "ws", "http", 1)+"/api/query/test.value", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer good")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("an HTTP query past capacity: want 429 with Retry-After, got %d", res.StatusCode)
	}

	backlog.Store(0.1) // caught up: new work is welcome again (once no stall is remembered)
	dialAuthed(t, url)
	_ = s
}
