package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/labstack/echo/v4"
	"github.com/olahol/melody"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
)

// inFrame is any client frame.
type inFrame struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Token string          `json:"token"`
	Query string          `json:"query"`
	Fn    string          `json:"fn"`
	Args  json.RawMessage `json:"args"`
}

// outFrame is any server frame.
type outFrame struct {
	Type         string          `json:"type"`
	ID           string          `json:"id,omitempty"`
	User         *identity.User  `json:"user,omitempty"`
	Value        json.RawMessage `json:"value,omitempty"`
	Code         apperr.Code     `json:"code,omitempty"`
	Message      string          `json:"message,omitempty"`
	RetryAfterMs int64           `json:"retry_after_ms,omitempty"`
}

const connKey = "invigil.conn"

func (s *Server) newMelody() *melody.Melody {
	m := melody.New()
	m.Config.PongWait = s.opts.DisconnectAfter
	m.Config.PingPeriod = s.opts.DisconnectAfter / 3
	m.Config.WriteWait = 10 * time.Second
	// Frames past MaxFrameBytes are answered too_large; past this hard limit
	// the socket is closed by the WebSocket library itself.
	m.Config.MaxMessageSize = int64(4 * s.opts.MaxFrameBytes)
	m.Config.MessageBufferSize = s.opts.SendBuffer
	m.Upgrader.CheckOrigin = s.checkOrigin
	m.HandleConnect(func(ms *melody.Session) { s.conn(ms).start(ms) })
	m.HandleDisconnect(func(ms *melody.Session) { s.conn(ms).closed() })
	m.HandleMessage(func(ms *melody.Session, b []byte) { s.conn(ms).handle(b) })
	m.HandleMessageBinary(func(ms *melody.Session, _ []byte) {
		s.conn(ms).sendError("", apperr.New(apperr.InvalidArgument, "frames are JSON text"))
	})
	m.HandleError(func(ms *melody.Session, err error) {
		// melody drops the frame when a socket's buffer is full and only
		// tells us here: a dropped frame is a stale screen, so the socket
		// dies and the client reconnects to fresh values.
		if c := s.conn(ms); errors.Is(err, melody.ErrMessageBufferFull) && c.overflowed.CompareAndSwap(false, true) {
			s.metrics.slowClosed.Add(1)
			c.kill("send buffer full: client too slow")
		}
	})
	return m
}

func (s *Server) conn(ms *melody.Session) *wsConn {
	v, _ := ms.Get(connKey)
	return v.(*wsConn)
}

// hijackRecorder keeps the raw connection melody upgrades, so that a socket
// whose buffer is full can be closed at once (melody offers no way to).
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, rw, err
}

func (s *Server) serveWS(c echo.Context) error {
	rec := &hijackRecorder{ResponseWriter: c.Response().Writer}
	wc := &wsConn{srv: s, id: s.nextConn.Add(1), rec: rec, subs: map[string]*wsSub{}}
	err := s.mel.HandleRequestWithKeys(rec, c.Request(), map[string]any{connKey: wc})
	if err != nil && rec.conn == nil {
		s.log.Debug("websocket upgrade refused", "err", err)
	}
	return nil
}

// wsConn is one socket's protocol state.
type wsConn struct {
	srv *Server
	id  uint64
	rec *hijackRecorder
	ms  *melody.Session

	overflowed atomic.Bool // its send buffer filled once: it is being closed
	// paused: the token expired; waiting for a fresh auth. Changed under mu,
	// read without it by sinks, which must not take mu.
	paused atomic.Bool

	mu          sync.Mutex
	user        identity.User
	exp         time.Time
	dead        bool
	subs        map[string]*wsSub
	expiry      clockwork.Timer
	authTimeout clockwork.Timer
}

// wsSub is a subscription as the client made it, kept across a pause.
type wsSub struct {
	query string
	args  json.RawMessage
	sub   *engine.Subscription // nil while paused
}

func (c *wsConn) start(ms *melody.Session) {
	c.ms = ms
	c.srv.connsMu.Lock()
	c.srv.conns[c.id] = c
	c.srv.connsMu.Unlock()
	c.srv.metrics.connections.Add(1)
	c.mu.Lock()
	c.authTimeout = c.srv.clock.AfterFunc(c.srv.opts.AuthTimeout, func() {
		c.mu.Lock()
		idle := c.user.ID == "" && len(c.subs) == 0
		c.mu.Unlock()
		if idle {
			c.kill("no auth within " + c.srv.opts.AuthTimeout.String())
		}
	})
	c.mu.Unlock()
}

// closed runs once the socket is gone: subscriptions end and the features
// hear of it (a proctored student shows disconnected).
func (c *wsConn) closed() {
	c.mu.Lock()
	c.dead = true
	for _, ws := range c.subs {
		if ws.sub != nil {
			ws.sub.Close()
		}
	}
	c.subs = nil
	stop(c.expiry)
	stop(c.authTimeout)
	c.mu.Unlock()
	c.srv.connsMu.Lock()
	delete(c.srv.conns, c.id)
	c.srv.connsMu.Unlock()
	c.srv.metrics.connections.Add(-1)
	c.srv.opts.Engine.ConnClosed(c.id)
}

func stop(t clockwork.Timer) {
	if t != nil {
		t.Stop()
	}
}

// kill closes the socket at once, without waiting for queued frames.
func (c *wsConn) kill(reason string) {
	c.mu.Lock()
	user := c.user.ID
	c.mu.Unlock()
	c.srv.log.Info("closing socket", "conn", c.id, "user_id", user, "reason", reason)
	if c.rec.conn != nil {
		c.rec.conn.Close()
	}
}

func (c *wsConn) send(f outFrame) {
	b, err := json.Marshal(f)
	if err != nil {
		c.srv.log.Error("encode frame", "err", err)
		return
	}
	if c.ms != nil {
		c.ms.Write(b) // never blocks; a full buffer kills the socket
	}
}

// write queues an encoded frame.
func (c *wsConn) write(b []byte) {
	if c.ms != nil {
		c.ms.Write(b) // never blocks; a full buffer kills the socket
	}
}

// dataPrefix is the start of every data frame of subscription id.
func dataPrefix(id string) []byte {
	idJSON, _ := json.Marshal(id)
	return append(append([]byte(`{"type":"data","id":`), idJSON...), `,"value":`...)
}

// dataFrame wraps a value the engine encoded with json.Marshal (so valid,
// compact and HTML-escaped already) in a data frame, byte for byte what
// json.Marshal(outFrame{...}) gives, without re-scanning the value through
// json's compactor once per subscriber: that was ~40 % of the CPU of
// pushing one result to 1000 sockets.
func dataFrame(prefix []byte, v json.RawMessage) []byte {
	b := make([]byte, 0, len(prefix)+len(v)+1)
	return append(append(append(b, prefix...), v...), '}')
}

func (c *wsConn) sendError(id string, err error) {
	e := apperr.As(err)
	if e.Code == apperr.Internal {
		c.srv.log.Error("socket request failed", "conn", c.id, "err", err)
	}
	c.send(outFrame{Type: "error", ID: id, Code: e.Code, Message: e.Message, RetryAfterMs: e.RetryAfterMs})
}

func (c *wsConn) handle(b []byte) {
	if len(b) > c.srv.opts.MaxFrameBytes {
		c.sendError("", apperr.New(apperr.TooLarge, "frames are at most %d bytes", c.srv.opts.MaxFrameBytes))
		return
	}
	var f inFrame
	if err := json.Unmarshal(b, &f); err != nil {
		c.sendError("", apperr.New(apperr.InvalidArgument, "a frame is a JSON object with a type"))
		return
	}
	if len(f.ID) > 64 {
		c.sendError("", apperr.New(apperr.InvalidArgument, "id is at most 64 bytes"))
		return
	}
	c.checkExpiry()
	switch f.Type {
	case "auth":
		c.auth(f.Token)
	case "sub":
		c.subscribe(f)
	case "unsub":
		c.unsubscribe(f.ID)
	case "call":
		c.call(f)
	case "ping":
		c.send(outFrame{Type: "pong"})
	default:
		c.sendError(f.ID, apperr.New(apperr.InvalidArgument, "unknown frame type %q", f.Type))
	}
}

// caller returns who is on the socket, or an error if no valid token is.
func (c *wsConn) caller() (engine.Caller, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.user.ID == "" {
		return engine.Caller{Conn: c.id}, apperr.New(apperr.Unauthenticated, "send auth first")
	}
	if c.paused.Load() {
		return engine.Caller{Conn: c.id}, apperr.New(apperr.Unauthenticated, "token expired: send auth with a fresh token")
	}
	return engine.Caller{User: c.user, Conn: c.id}, nil
}

func (c *wsConn) auth(token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, exp, err := c.srv.opts.Verifier.Verify(ctx, token)
	if err != nil {
		c.sendError("", apperr.As(err))
		return
	}
	c.mu.Lock()
	if c.user.ID != "" && c.user.ID != u.ID {
		c.mu.Unlock()
		c.sendError("", apperr.New(apperr.Unauthenticated, "this socket belongs to another user: reconnect to switch"))
		return
	}
	c.user, c.exp = u, exp
	stop(c.expiry)
	c.expiry = c.srv.clock.AfterFunc(exp.Sub(c.srv.clock.Now()), c.expire)
	resume := c.paused.Swap(false)
	c.mu.Unlock()
	c.send(outFrame{Type: "authed", User: &u})
	if resume {
		c.resume()
	}
}

// checkExpiry pauses the socket if its token expired before its timer fired.
func (c *wsConn) checkExpiry() {
	c.mu.Lock()
	expired := c.user.ID != "" && !c.paused.Load() && !c.srv.clock.Now().Before(c.exp)
	c.mu.Unlock()
	if expired {
		c.expire()
	}
}

// expire pauses the socket: its subscriptions stop (kept to be resumed) and
// the client is told to send a fresh token.
func (c *wsConn) expire() {
	c.mu.Lock()
	if c.paused.Load() || c.dead || c.srv.clock.Now().Before(c.exp) {
		c.mu.Unlock()
		return
	}
	c.paused.Store(true)
	for _, ws := range c.subs {
		if ws.sub != nil && !c.srv.opts.Engine.IsPublic(ws.query) {
			ws.sub.Close()
			ws.sub = nil
		}
	}
	c.mu.Unlock()
	c.sendError("", apperr.New(apperr.Unauthenticated, "token expired: send auth with a fresh token"))
}

// resume re-subscribes every paused subscription; each sends its current value.
func (c *wsConn) resume() {
	c.mu.Lock()
	var ids []string
	for id, ws := range c.subs {
		if ws.sub == nil {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.mu.Lock()
		ws := c.subs[id]
		c.mu.Unlock()
		if ws != nil {
			c.open(id, ws)
		}
	}
}

func (c *wsConn) subscribe(f inFrame) {
	if f.ID == "" || f.Query == "" {
		c.sendError(f.ID, apperr.New(apperr.InvalidArgument, "sub needs an id and a query"))
		return
	}
	if _, err := c.caller(); err != nil && !c.srv.opts.Engine.IsPublic(f.Query) {
		c.sendError(f.ID, err)
		return
	}
	c.mu.Lock()
	old, dup := c.subs[f.ID]
	full := len(c.subs) >= c.srv.opts.MaxSubs
	ws := &wsSub{query: f.Query, args: f.Args}
	switch {
	case dup:
		// The error below carries the id, and an error with a
		// subscription's id ends it: the client drops it, so must we.
		delete(c.subs, f.ID)
	case !full:
		c.subs[f.ID] = ws
	}
	c.mu.Unlock()
	switch {
	case dup:
		if old.sub != nil {
			old.sub.Close()
		}
		c.sendError(f.ID, apperr.New(apperr.InvalidArgument, "subscription id %q is in use", f.ID))
	case full:
		c.sendError(f.ID, apperr.New(apperr.TooLarge, "at most %d subscriptions per socket", c.srv.opts.MaxSubs))
	default:
		c.open(f.ID, ws)
	}
}

// open subscribes ws in the engine; an error ends the subscription.
func (c *wsConn) open(id string, ws *wsSub) {
	caller, _ := c.caller()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := dataPrefix(id)
	public := c.srv.opts.Engine.IsPublic(ws.query)
	sink := func(v json.RawMessage, err error) {
		if err == nil {
			// Nothing private is served between expiry and re-auth; resume re-sends.
			if public || !c.paused.Load() {
				c.write(dataFrame(prefix, v))
			}
			return
		}
		// The engine ended it (the caller lost the right to see it).
		c.mu.Lock()
		if c.subs[id] == ws {
			delete(c.subs, id)
		}
		c.mu.Unlock()
		c.sendError(id, err)
	}
	sub, err := c.srv.opts.Engine.Subscribe(ctx, caller, ws.query, ws.args, sink)
	c.mu.Lock()
	current := c.subs[id] == ws && !c.dead
	// A token that expired meanwhile leaves it to be resumed with the others.
	keep := err == nil && current && !(c.paused.Load() && !public)
	if keep {
		ws.sub = sub
	} else if current && err != nil {
		delete(c.subs, id)
	}
	c.mu.Unlock()
	if err == nil && !keep {
		sub.Close() // unsubscribed, closed or paused meanwhile
	}
	if err != nil {
		c.sendError(id, err)
	}
}

func (c *wsConn) unsubscribe(id string) {
	c.mu.Lock()
	ws := c.subs[id]
	delete(c.subs, id)
	c.mu.Unlock()
	if ws != nil && ws.sub != nil {
		ws.sub.Close()
	}
}

func (c *wsConn) call(f inFrame) {
	if f.ID == "" || f.Fn == "" {
		c.sendError(f.ID, apperr.New(apperr.InvalidArgument, "call needs an id and a fn"))
		return
	}
	caller, err := c.caller()
	if err != nil {
		c.sendError(f.ID, err)
		return
	}
	v, err := c.srv.invoke(caller, f.Fn, f.Args)
	if err != nil {
		c.sendError(f.ID, err)
		return
	}
	c.send(outFrame{Type: "result", ID: f.ID, Value: v})
}

// invoke runs a function for a caller, rate-limited per user; it is shared
// by the socket and HTTP.
func (s *Server) invoke(caller engine.Caller, fn string, args json.RawMessage) (json.RawMessage, error) {
	if wait := s.limits.take(caller.User.ID); wait > 0 {
		return nil, &apperr.Error{Code: apperr.RateLimited, Message: "too many calls", RetryAfterMs: wait.Milliseconds() + 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	v, err := s.opts.Engine.Call(ctx, caller, fn, args)
	s.metrics.observeCall(fn, apperr.CodeOf(err), time.Since(start))
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return b, nil
}
