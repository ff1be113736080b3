package static_test

// A scripted stand-in for invigil's /ws, for browser tests of the client and
// the pages that must not depend on the server's own delta code: it serves
// the real pages and scripts, answers auth, and serves list queries from
// in-memory tables that a test changes. After each change it computes the
// delta against what it last published (rows whose JSON changed, whole; ids
// that left; the whole id order when it changed, CONTRACT §3) and sends it to
// every subscription that asked for deltas (and that the test lets have
// them); the others get the whole value as `data`.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"invigil/static"
)

// table is one list query's rows, ordered by a sort key (then _id), with
// what was last published.
type table struct {
	rows  map[string]json.RawMessage
	keys  map[string]string
	desc  bool // newest first
	limit int  // 0: every row

	sorted    []string // every id in order; nil when it must be recomputed
	pubRows   map[string]json.RawMessage
	pubOrder  []string
	dirtyRows bool
}

func newTable(desc bool, limit int) *table {
	return &table{rows: map[string]json.RawMessage{}, keys: map[string]string{}, desc: desc, limit: limit, pubRows: map[string]json.RawMessage{}}
}

func (t *table) put(id, key string, row any) {
	b, err := json.Marshal(row)
	if err != nil {
		panic(err)
	}
	if old, ok := t.keys[id]; !ok || old != key {
		t.sorted = nil
	}
	t.rows[id] = b
	t.keys[id] = key
	t.dirtyRows = true
}

func (t *table) del(id string) {
	if _, ok := t.rows[id]; ok {
		delete(t.rows, id)
		delete(t.keys, id)
		t.sorted = nil
		t.dirtyRows = true
	}
}

// visible is the result's ids in order.
func (t *table) visible() []string {
	if t.sorted == nil {
		ids := make([]string, 0, len(t.rows))
		for id := range t.rows {
			ids = append(ids, id)
		}
		slices.SortFunc(ids, func(a, b string) int {
			ka, kb := t.keys[a], t.keys[b]
			if t.desc {
				ka, kb = kb, ka
			}
			return cmpStrings(ka+"\x00"+a, kb+"\x00"+b)
		})
		t.sorted = ids
	}
	if t.limit > 0 && len(t.sorted) > t.limit {
		return t.sorted[:t.limit]
	}
	return t.sorted
}

func cmpStrings(a, b string) int { return strings.Compare(a, b) }

// delta moves the published state to the current one and returns the
// difference; ok is false when nothing changed.
func (t *table) delta() (upsert []json.RawMessage, remove []string, order []string, ok bool) {
	if !t.dirtyRows && t.sorted != nil {
		return nil, nil, nil, false
	}
	t.dirtyRows = false
	vis := t.visible()
	in := make(map[string]bool, len(vis))
	for _, id := range vis {
		in[id] = true
		if old, had := t.pubRows[id]; !had || !bytes.Equal(old, t.rows[id]) {
			upsert = append(upsert, t.rows[id])
		}
	}
	var kept []string
	for _, id := range t.pubOrder {
		if in[id] {
			kept = append(kept, id)
		} else {
			remove = append(remove, id)
		}
	}
	if !slices.Equal(kept, vis) {
		order = slices.Clone(vis)
	}
	pub := make(map[string]json.RawMessage, len(vis))
	for _, id := range vis {
		pub[id] = t.rows[id]
	}
	t.pubRows, t.pubOrder = pub, slices.Clone(vis)
	return upsert, remove, order, len(upsert) > 0 || len(remove) > 0 || order != nil
}

// value is the published result, whole.
func (t *table) value() json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, id := range t.pubOrder {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(t.pubRows[id])
	}
	b.WriteByte(']')
	return b.Bytes()
}

// scripted is the server. Tests change tables under update, which publishes.
type scripted struct {
	t      *testing.T
	url    string
	mu     sync.Mutex
	tables map[string]*table // query -> rows
	// objects answers the queries whose value is not a list (data only).
	objects map[string]func(args map[string]any) any
	// wantsDeltas says whether a subscription that asked for deltas gets
	// them (default: yes); the others get whole data.
	wantsDeltas func(token string, args map[string]any) bool
	conns       map[*fconn]bool
	// intercept, when set, sees each frame first (under the lock); true
	// means it answered the frame itself.
	intercept func(c *fconn, f inFrame) bool
	opened    int // sockets accepted so far
	subCount  int
	frames    map[string]int // frames sent, by type
	bytesOut  int64
}

type fconn struct {
	srv    *scripted
	n      int // 1 for the first socket, …
	opened time.Time
	ws     *websocket.Conn
	out    chan []byte
	token  string
	subs   []*fsub
}

// inFrame is a frame from the browser.
type inFrame struct {
	Type   string         `json:"type"`
	ID     string         `json:"id"`
	Token  string         `json:"token"`
	Query  string         `json:"query"`
	Args   map[string]any `json:"args"`
	Deltas bool           `json:"deltas"`
}

// closeWith ends the socket with a close frame (code and reason).
func (c *fconn) closeWith(code int, reason string) {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	c.ws.Close()
}

type fsub struct {
	id, query string
	args      map[string]any
	deltas    bool
}

// newScripted starts the server with the given tables (query -> table).
func newScripted(t *testing.T, tables map[string]*table) *scripted {
	t.Helper()
	s := &scripted{t: t, tables: tables, objects: map[string]func(map[string]any) any{}, conns: map[*fconn]bool{}, frames: map[string]int{}}
	for _, tb := range tables {
		tb.delta() // publish the starting rows
	}
	mux := http.NewServeMux()
	mux.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.FS(static.FS))))
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, err := static.FS.ReadFile(name)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write(b)
		}
	}
	mux.HandleFunc("/proctor/", page("proctor.html"))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/ws", s.serveWS)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	s.url = srv.URL
	return s
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *scripted) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &fconn{srv: s, ws: ws, out: make(chan []byte, 4096), opened: time.Now()}
	s.mu.Lock()
	s.opened++
	c.n = s.opened
	s.conns[c] = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { // the only writer
		defer close(done)
		for b := range c.out {
			if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
				return
			}
		}
	}()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		close(c.out)
		s.mu.Unlock()
		<-done
		ws.Close()
	}()
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var f inFrame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		s.mu.Lock()
		if s.intercept != nil && s.intercept(c, f) {
			s.mu.Unlock()
			continue
		}
		switch f.Type {
		case "auth":
			c.token = f.Token
			c.send(s, map[string]any{"type": "authed", "user": map[string]any{"id": "tutor-1", "role": "tutor", "name": "Tess Tutor"}})
		case "sub":
			sub := &fsub{id: f.ID, query: f.Query, args: f.Args, deltas: f.Deltas}
			if sub.deltas && s.wantsDeltas != nil {
				sub.deltas = s.wantsDeltas(c.token, f.Args)
			}
			c.subs = append(c.subs, sub)
			s.subCount++
			c.sendData(s, sub)
		case "unsub":
			c.subs = slices.DeleteFunc(c.subs, func(x *fsub) bool { return x.id == f.ID })
		case "call":
			c.send(s, map[string]any{"type": "result", "id": f.ID, "value": nil})
		case "ping":
			c.send(s, map[string]any{"type": "pong"})
		}
		s.mu.Unlock()
	}
}

// send queues a frame; the caller holds s.mu.
func (c *fconn) send(s *scripted, v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	c.sendRaw(s, v["type"].(string), b)
}

func (c *fconn) sendRaw(s *scripted, typ string, b []byte) {
	s.frames[typ]++
	s.bytesOut += int64(len(b))
	select {
	case c.out <- b:
	default:
		s.t.Errorf("scripted server: a client's queue is full")
	}
}

func (c *fconn) sendData(s *scripted, sub *fsub) {
	var value json.RawMessage
	if tb := s.tables[sub.query]; tb != nil {
		value = tb.value()
	} else if fn := s.objects[sub.query]; fn != nil {
		b, err := json.Marshal(fn(sub.args))
		if err != nil {
			panic(err)
		}
		value = b
	} else {
		value = json.RawMessage(`[]`)
	}
	c.sendRaw(s, "data", dataFrameBytes(sub.id, value))
}

func dataFrameBytes(id string, value json.RawMessage) []byte {
	idJSON, _ := json.Marshal(id)
	return append(append(append([]byte(`{"type":"data","id":`), idJSON...), `,"value":`...), append(value, '}')...)
}

// update runs fn on the tables, then publishes what changed: a delta to
// each delta subscription, the whole value to the others. With whole set,
// every subscription gets the whole value (a server may send data at any time).
func (s *scripted) update(fn func()) { s.publish(fn, false) }

func (s *scripted) updateWhole(fn func()) { s.publish(fn, true) }

func (s *scripted) publish(fn func(), whole bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fn != nil {
		fn()
	}
	for query, tb := range s.tables {
		upsert, remove, order, ok := tb.delta()
		if !ok && !whole {
			continue
		}
		value := tb.value()
		for c := range s.conns {
			for _, sub := range c.subs {
				if sub.query != query {
					continue
				}
				if !sub.deltas || whole {
					c.sendRaw(s, "data", dataFrameBytes(sub.id, value))
					continue
				}
				if !ok {
					continue
				}
				f := map[string]any{"type": "delta", "id": sub.id, "upsert": nonNil(upsert), "remove": nonNilS(remove)}
				if order != nil {
					f["order"] = order
				}
				c.send(s, f)
			}
		}
	}
}

func nonNil(v []json.RawMessage) []json.RawMessage {
	if v == nil {
		return []json.RawMessage{}
	}
	return v
}

func nonNilS(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// subs is how many subscriptions the server has taken so far.
func (s *scripted) subs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subCount
}

func (s *scripted) frameCounts() (map[string]int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.frames {
		out[k] = v
	}
	return out, s.bytesOut
}

// fakeJWT is an unsigned token that common.js can read (name and role for
// the page's header); the scripted server accepts any token.
func fakeJWT(sub, role, name, mode string) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(map[string]any{
		"sub": sub, "app_metadata": map[string]any{"role": role},
		"user_metadata": map[string]any{"full_name": name}, "mode": mode,
	})
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(payload) + ".x"
}
