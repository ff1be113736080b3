package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jonboulle/clockwork"
	"github.com/labstack/echo/v4"
	"github.com/olahol/melody"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
)

// inFrame is any client frame.
type inFrame struct {
	Type   string          `json:"type"`
	ID     string          `json:"id"`
	Token  string          `json:"token"`
	Query  string          `json:"query"`
	Fn     string          `json:"fn"`
	Args   json.RawMessage `json:"args"`
	Deltas bool            `json:"deltas"`
}

// outFrame is any server frame but data and delta (made by hand: see
// dataFrame).
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
	m.Config.WriteWait = s.opts.WriteTimeout
	// Frames past MaxFrameBytes are answered too_large; past this hard limit
	// the socket is closed by the WebSocket library itself.
	m.Config.MaxMessageSize = int64(4 * s.opts.MaxFrameBytes)
	m.Config.MessageBufferSize = sendWindow + 8 // the queue never fills it: see sendQueue
	m.Upgrader.CheckOrigin = s.checkOrigin
	// Zero sizes make the WebSocket reuse the HTTP connection's buffers,
	// which net/http keeps for the socket's life anyway (2 KB a socket).
	m.Upgrader.ReadBufferSize, m.Upgrader.WriteBufferSize = 0, 0
	m.HandleConnect(func(ms *melody.Session) { s.conn(ms).start(ms) })
	m.HandleDisconnect(func(ms *melody.Session) { s.conn(ms).closed() })
	m.HandleMessage(func(ms *melody.Session, b []byte) {
		// A frame is handled on a goroutine of its own while the socket's
		// reader waits: the deep stack a call needs (JSON, the feature, the
		// store) is freed when it ends, instead of staying with each of
		// thousands of idle readers (about 10 KB a socket). Frames of one
		// socket are still handled one at a time, in order.
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.conn(ms).handle(b)
		}()
		<-done
	})
	m.HandleMessageBinary(func(ms *melody.Session, _ []byte) {
		s.conn(ms).sendError("", apperr.New(apperr.InvalidArgument, "frames are JSON text"))
	})
	m.HandleSentMessage(func(ms *melody.Session, _ []byte) { s.conn(ms).q.written() })
	m.HandleError(func(ms *melody.Session, err error) {
		c := s.conn(ms)
		var timeout net.Error
		var read *net.OpError
		switch {
		case errors.Is(err, melody.ErrMessageBufferFull):
			// The send queue keeps melody's buffer from filling; should it
			// fill anyway, a dropped frame would be a stale screen.
			c.kill("send buffer full")
		case errors.As(err, &timeout) && timeout.Timeout() && !(errors.As(err, &read) && read.Op == "read"):
			// A write that waited WriteTimeout: the client stopped reading.
			s.metrics.SlowClosed.Inc()
			c.srv.log.Info("closing socket", "conn", c.id, "reason", "client too slow: a write waited "+s.opts.WriteTimeout.String())
		}
	})
	return m
}

// sendWindow is how many frames a socket may have in melody's buffer.
const sendWindow = 16

func (s *Server) conn(ms *melody.Session) *wsConn {
	v, _ := ms.Get(connKey)
	return v.(*wsConn)
}

// hijackRecorder keeps the raw connection melody upgrades, so that a socket
// that cannot keep up can be closed at once (melody offers no way to).
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
	wc.q = newSendQueue(s.opts.SendQueueBytes, sendWindow, &s.queuedBytes, &s.sentBytes, wc.write, wc.overflowed, wc.pushed)
	err := s.mel.HandleRequestWithKeys(rec, c.Request(), map[string]any{connKey: wc})
	if err != nil && rec.conn == nil {
		s.log.Debug("websocket upgrade refused", "err", err)
	}
	return nil
}

// wsConn is one socket's protocol state.
//
// Lock order: mu guards the fields below it and is never held while
// calling the engine (Subscribe, Close, Reauthorize) nor while writing:
// sinks run under the engine's instance locks and touch only the send
// queue and atomics, so no sink can wait for a lock a closer holds.
type wsConn struct {
	srv    *Server
	id     uint64
	rec    *hijackRecorder
	ms     *melody.Session
	q      *sendQueue
	remote net.Addr // the client's address (anonymous readers' budget is per address)

	killed atomic.Bool
	// paused: the token expired; waiting for a fresh auth. Changed under
	// mu, read without it by sinks.
	paused atomic.Bool
	role   atomic.Value // identity.Role for the sockets gauge, "" before auth

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
	query  string
	args   json.RawMessage
	deltas bool
	sub    *engine.Subscription // nil while paused or opening
	ended  atomic.Bool          // the engine ended it (its error was sent)
}

func (c *wsConn) start(ms *melody.Session) {
	c.ms, c.remote = ms, ms.RemoteAddr()
	c.srv.track(c, true)
	c.setRole("anonymous")
	c.srv.log.Info("socket open", "conn", c.id, "remote", c.remote.String())
	if err := c.srv.overloaded(); err != nil {
		// Past capacity: this socket comes back later; the others stay served.
		c.sendError("", err)
		c.closeSoon(retryAfterClose(time.Duration(apperr.As(err).RetryAfterMs) * time.Millisecond))
		return
	}
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

// setRole moves the socket between the gauge's roles.
func (c *wsConn) setRole(role string) {
	if old, _ := c.role.Swap(role).(string); old != "" {
		c.srv.metrics.Sockets.WithLabelValues(old).Dec()
	}
	if role != "" {
		c.srv.metrics.Sockets.WithLabelValues(role).Inc()
	}
}

// closed runs once the socket is gone: subscriptions end and the features
// hear of it (a proctored student shows disconnected).
func (c *wsConn) closed() {
	defer c.srv.recoverConn(c, "close")
	c.mu.Lock()
	c.dead = true
	subs := c.subs
	c.subs = nil
	stop(c.expiry)
	stop(c.authTimeout)
	user := c.user.ID
	c.mu.Unlock()
	for _, ws := range subs {
		if ws.sub != nil {
			ws.sub.Close()
		}
	}
	c.q.close()
	if user != "" {
		c.srv.releaseSocket(user)
	}
	c.setRole("")
	c.srv.track(c, false)
	c.srv.log.Info("socket closed", "conn", c.id, "user_id", user)
	c.srv.opts.Engine.ConnClosed(c.id)
}

func stop(t clockwork.Timer) {
	if t != nil {
		t.Stop()
	}
}

// kill closes the socket at once, without waiting for queued frames. It
// takes no lock: it may be called from anywhere, a sink included.
func (c *wsConn) kill(reason string) {
	if !c.killed.CompareAndSwap(false, true) {
		return
	}
	c.srv.log.Info("closing socket", "conn", c.id, "reason", reason)
	if c.rec.conn != nil {
		c.rec.conn.Close()
	}
}

// overflowed is the send queue's bound being passed: the client is too
// slow for its frames.
func (c *wsConn) overflowed(bytes int) {
	c.srv.metrics.SlowClosed.Inc()
	c.kill(fmt.Sprintf("client too slow: %d bytes waiting to be sent", bytes))
}

// write hands a frame to melody (from the send queue, under its lock).
func (c *wsConn) write(b []byte) {
	if c.ms != nil {
		c.ms.Write(b)
	}
}

// pushed is told when a frame carrying a change was written.
func (c *wsConn) pushed(since time.Time) {
	c.srv.metrics.PushLatency.Observe(c.srv.clock.Since(since).Seconds())
}

func (c *wsConn) send(f outFrame) {
	b, err := json.Marshal(f)
	if err != nil {
		c.srv.log.Error("encode frame", "err", err)
		return
	}
	c.q.push(b)
}

// framePrefix is the start of every data or delta frame of subscription id.
func framePrefix(typ, id string) []byte {
	idJSON, _ := json.Marshal(id)
	return append(append([]byte(`{"type":"`+typ+`","id":`), idJSON...), ',')
}

// dataFrame wraps a value the engine encoded with json.Marshal (valid,
// compact and HTML-escaped already) in a data frame, byte for byte what
// json.Marshal(outFrame{...}) gives, without re-scanning the value through
// json's compactor once per subscriber.
func dataFrame(prefix []byte, v json.RawMessage) []byte {
	b := make([]byte, 0, len(prefix)+len(`"value":`)+len(v)+1)
	return append(append(append(append(b, prefix...), `"value":`...), v...), '}')
}

func (c *wsConn) sendError(id string, err error) {
	e := apperr.As(err)
	if e.Code == apperr.Internal {
		c.srv.log.Error("socket request failed", "conn", c.id, "code", e.Code, "err", err)
	}
	c.send(outFrame{Type: "error", ID: id, Code: e.Code, Message: e.Message, RetryAfterMs: e.RetryAfterMs})
}

// handle serves one client frame. A panic ends only what the frame asked
// for (internal), never the socket.
func (c *wsConn) handle(b []byte) {
	var f inFrame
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("panic serving a frame", "conn", c.id, "type", f.Type, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			c.sendError(f.ID, apperr.New(apperr.Internal, "internal error"))
		}
	}()
	// Any frame is a sign of life, as a pong is (melody counts only pongs).
	if c.rec.conn != nil {
		c.rec.conn.SetReadDeadline(time.Now().Add(c.srv.opts.DisconnectAfter))
	}
	if len(b) > c.srv.opts.MaxFrameBytes {
		c.sendError("", apperr.New(apperr.TooLarge, "frames are at most %d bytes", c.srv.opts.MaxFrameBytes))
		return
	}
	if err := json.Unmarshal(b, &f); err != nil {
		c.sendError("", apperr.New(apperr.InvalidArgument, "a frame is a JSON object with a type"))
		return
	}
	if len(f.ID) > 64 {
		f.ID = ""
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

// recoverConn contains a panic in a socket's connect or close handling.
func (s *Server) recoverConn(c *wsConn, what string) {
	if p := recover(); p != nil {
		s.log.Error("panic in socket "+what, "conn", c.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
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
	if c.user.ID == "" && !c.srv.claimSocket(u.ID) {
		c.mu.Unlock()
		// One user cannot hold the server's sockets: this one is refused,
		// and closed once the client has read why.
		c.sendError("", &apperr.Error{Code: apperr.RateLimited, RetryAfterMs: 10_000,
			Message: fmt.Sprintf("at most %d sockets per user: close another tab", c.srv.opts.MaxSocketsPerUser)})
		c.closeSoon(retryAfterClose(10 * time.Second))
		return
	}
	changed := c.user.ID != "" && c.user != u
	c.user, c.exp = u, exp
	stop(c.expiry)
	c.expiry = c.srv.clock.AfterFunc(exp.Sub(c.srv.clock.Now()), c.expire)
	resume := c.paused.Swap(false)
	var live []*wsSub
	if changed {
		for _, ws := range c.subs {
			if ws.sub != nil {
				live = append(live, ws)
			}
		}
	}
	c.mu.Unlock()
	c.setRole(string(u.Role))
	c.send(outFrame{Type: "authed", User: &u})
	// Every right is judged on the current token: a changed identity (a
	// new role) re-authorizes each live view; one it may no longer see ends
	// with its error.
	for _, ws := range live {
		ws.sub.Reauthorize(ctx, engine.Caller{User: u, Conn: c.id})
	}
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
	var closing []*engine.Subscription
	for _, ws := range c.subs {
		if ws.sub != nil && !c.srv.opts.Engine.IsPublic(ws.query) {
			closing = append(closing, ws.sub)
			ws.sub = nil
		}
	}
	c.mu.Unlock()
	for _, sub := range closing {
		sub.Close()
	}
	c.sendError("", apperr.New(apperr.Unauthenticated, "token expired: send auth with a fresh token"))
}

// resume re-subscribes every paused subscription; each sends its current value.
func (c *wsConn) resume() {
	c.mu.Lock()
	paused := map[string]*wsSub{}
	for id, ws := range c.subs {
		if ws.sub == nil {
			paused[id] = ws
		}
	}
	c.mu.Unlock()
	for id, ws := range paused {
		c.open(id, ws)
	}
}

func (c *wsConn) subscribe(f inFrame) {
	if f.ID == "" || f.Query == "" {
		c.sendError(f.ID, apperr.New(apperr.InvalidArgument, "sub needs an id and a query"))
		return
	}
	caller, err := c.caller()
	if err != nil && !c.srv.opts.Engine.IsPublic(f.Query) {
		c.sendError(f.ID, err)
		return
	}
	if err := c.srv.admitRead(caller.User.ID, c.remote); err != nil {
		c.sendError(f.ID, err)
		return
	}
	if err := c.srv.overloaded(); err != nil {
		c.sendError(f.ID, err)
		return
	}
	c.mu.Lock()
	old, dup := c.subs[f.ID]
	if dup && old.ended.Load() {
		dup = false // ended by the engine, which said so: the id is free again
	}
	full := len(c.subs) >= c.srv.opts.MaxSubs
	ws := &wsSub{query: f.Query, args: f.Args, deltas: f.Deltas}
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
	sub, err := c.srv.opts.Engine.Subscribe(ctx, caller, ws.query, ws.args, c.sink(id, ws))
	public := c.srv.opts.Engine.IsPublic(ws.query)
	c.mu.Lock()
	current := c.subs[id] == ws && !c.dead
	// A token that expired meanwhile leaves it to be resumed with the others.
	keep := err == nil && current && !(c.paused.Load() && !public)
	if keep {
		ws.sub, ws.args = sub, sub.Args() // keep only what the query read
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

// sink turns a subscription's updates into frames: whole values as data,
// changes of a list as deltas when the client asked for them.
func (c *wsConn) sink(id string, ws *wsSub) engine.Sink {
	dataPrefix, deltaPrefix := framePrefix("data", id), framePrefix("delta", id)
	public := c.srv.opts.Engine.IsPublic(ws.query)
	return func(u engine.Update, err error) {
		if err != nil {
			// The engine ended it (the caller lost the right to see it, or
			// its query failed).
			ws.ended.Store(true)
			c.sendError(id, err)
			return
		}
		if !public && c.paused.Load() {
			return // nothing private between expiry and re-auth; resume re-sends
		}
		if u.Replace || !ws.deltas || u.Delta() == nil {
			c.q.pushValue(id, dataFrame(dataPrefix, u.Whole()), u.Since)
		} else {
			c.q.pushDelta(id, deltaPrefix, u.DeltaBody(), u.Delta(), u.Since,
				func() []byte { return dataFrame(dataPrefix, u.Whole()) })
		}
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
	if wait := s.limits.Take(caller.User.ID); wait > 0 {
		return nil, &apperr.Error{Code: apperr.RateLimited, Message: "too many calls", RetryAfterMs: wait.Milliseconds() + 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := s.clock.Now()
	v, err := s.opts.Engine.Call(ctx, caller, fn, args)
	label := fn
	if !s.opts.Engine.HasFunc(fn) {
		label = "unknown" // a client's made-up names must not grow the label set
	}
	s.metrics.ObserveCall(label, string(apperr.CodeOf(err)), s.clock.Since(start))
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// closeSoon closes the socket with msg after what is queued before it.
func (c *wsConn) closeSoon(msg []byte) {
	if c.ms != nil {
		c.ms.CloseWithMsg(msg)
	}
}

// retryAfterClose is a close frame telling the client when to come back.
func retryAfterClose(d time.Duration) []byte {
	return websocket.FormatCloseMessage(websocket.CloseTryAgainLater, fmt.Sprintf("retry_after_ms=%d", d.Milliseconds()))
}

// admitRead spends a subscription's or query's token for user (or, for an
// anonymous reader, for its address).
func (s *Server) admitRead(user string, addr net.Addr) error {
	key := user
	if key == "" && addr != nil {
		host, _, _ := net.SplitHostPort(addr.String())
		key = "anon:" + host
	}
	if wait := s.reads.Take(key); wait > 0 {
		return &apperr.Error{Code: apperr.RateLimited, Message: "too many subscriptions and queries", RetryAfterMs: wait.Milliseconds() + 1}
	}
	return nil
}

// closeFrame is the close frame sockets get when the server shuts down.
var closeFrame = websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down: reconnect")
