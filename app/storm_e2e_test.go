package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/identity"
)

// stormClient is a socket that behaves as invigil.js does after a drop:
// reconnect after a full-jitter delay (250 ms base, doubling), authenticate,
// re-subscribe (tutors) or start the session again (students).
type stormClient struct {
	h      *apptest.Harness
	user   identity.User
	token  string
	exam   string
	tutor  bool
	conn   *websocket.Conn
	mu     sync.Mutex
	view   *apptest.View
	calls  map[string]chan time.Duration
	seq    atomic.Int64
	rounds int // reconnect attempts the last time
}

func (c *stormClient) url() string { return "ws" + strings.TrimPrefix(c.h.URL, "http") + "/ws" }

// connect dials until the server takes the socket (it may shed it under
// load: then it waits as asked and tries again).
func (c *stormClient) connect(rng *rand.Rand) error {
	for attempt := 0; attempt < 30; attempt++ {
		if attempt > 0 || c.conn != nil {
			time.Sleep(time.Duration(rng.Int64N(int64(min(10*time.Second, 250*time.Millisecond<<min(attempt, 6))))))
		}
		c.rounds = attempt + 1
		conn, _, err := websocket.DefaultDialer.Dial(c.url(), nil)
		if err != nil {
			continue
		}
		conn.WriteJSON(map[string]string{"type": "auth", "token": c.token})
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		var f apptest.Frame
		if err := conn.ReadJSON(&f); err != nil || f.Type != "authed" {
			conn.Close()
			if f.RetryAfterMs > 0 {
				time.Sleep(time.Duration(f.RetryAfterMs) * time.Millisecond)
			}
			continue
		}
		conn.SetReadDeadline(time.Time{})
		if c.tutor {
			c.mu.Lock()
			c.view = &apptest.View{}
			c.mu.Unlock()
			conn.WriteJSON(map[string]any{"type": "sub", "id": "grid", "query": "proctoring.getExamSessions", "deltas": true, "args": map[string]string{"exam_id": c.exam}})
		} else {
			conn.WriteJSON(map[string]any{"type": "call", "id": "start", "fn": "proctoring.startSession", "args": map[string]string{"exam_id": c.exam}})
		}
		// Published after its first frame: one writer at a time per socket.
		c.mu.Lock()
		c.conn = conn
		c.mu.Unlock()
		go c.read(conn)
		return nil
	}
	return fmt.Errorf("%s never got back in", c.user.ID)
}

func (c *stormClient) read(conn *websocket.Conn) {
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var f apptest.Frame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		f.Raw = string(b)
		c.mu.Lock()
		switch {
		case f.Type == "data" || f.Type == "delta":
			c.view.Apply(f)
		case f.Type == "error" && f.ID == "grid":
			// Shed: subscribe again when told, as invigil.js does.
			time.AfterFunc(time.Duration(f.RetryAfterMs)*time.Millisecond, func() {
				conn.WriteJSON(map[string]any{"type": "sub", "id": "grid", "query": "proctoring.getExamSessions", "deltas": true, "args": map[string]string{"exam_id": c.exam}})
			})
		case c.calls[f.ID] != nil:
			c.calls[f.ID] <- 0
			delete(c.calls, f.ID)
		}
		c.mu.Unlock()
	}
}

// heartbeat times one heartbeat's round trip.
func (c *stormClient) heartbeat() (time.Duration, error) {
	n := c.seq.Add(1)
	id := "h" + strconv.FormatInt(n, 10)
	done := make(chan time.Duration, 1)
	c.mu.Lock()
	c.calls[id] = done
	conn := c.conn
	c.mu.Unlock()
	start := time.Now()
	err := conn.WriteJSON(map[string]any{"type": "call", "id": id, "fn": "proctoring.heartbeat",
		"args": map[string]any{"exam_id": c.exam, "current_question": 1, "answered_count": n}})
	if err != nil {
		return 0, err
	}
	select {
	case <-done:
		return time.Since(start), nil
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("no answer")
	}
}

// TestReconnectStorm: every socket is dropped at once, server side; all
// come back (spread by full jitter, shed and told when to return if the
// server is past capacity), re-authenticate, re-subscribe, and each tutor
// ends with the current rows; heartbeats during the storm are timed.
// INVIGIL_STORM_SOCKETS sets the size (the README's figure is 10,000).
func TestReconnectStorm(t *testing.T) {
	n := 600
	if v, err := strconv.Atoi(os.Getenv("INVIGIL_STORM_SOCKETS")); err == nil && v > 0 {
		n = v
	} else if testing.Short() {
		t.Skip("a reconnect storm")
	}
	h := apptest.Boot(t, apptest.WithRealClock(), apptest.WithConfig(func(c *app.Config) {
		c.HeartbeatMin = time.Millisecond
		c.StallLag = 250 * time.Millisecond // overload control on, as in production
	}))
	exams := max(1, n/100)
	var clients []*stormClient
	for e := range exams {
		id := fmt.Sprintf("storm-%03d", e)
		tutor := identity.User{ID: "t-" + id, Role: identity.Tutor, Name: "Tutor " + id}
		h.Exam(exam.Registration{ExamID: id, Title: id, TutorIDs: []string{tutor.ID}, Status: exam.Open})
		clients = append(clients, &stormClient{h: h, user: tutor, token: h.TokenTTL(tutor, 24*time.Hour), exam: id, tutor: true, calls: map[string]chan time.Duration{}})
	}
	for i := range n {
		u := identity.User{ID: fmt.Sprintf("s-%05d", i), Role: identity.Student, Name: fmt.Sprintf("Student %05d", i)}
		clients = append(clients, &stormClient{h: h, user: u, token: h.TokenTTL(u, 24*time.Hour), exam: fmt.Sprintf("storm-%03d", i%exams), calls: map[string]chan time.Duration{}})
	}
	connectAll := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(clients))
		sem := make(chan struct{}, 512)
		for i, c := range clients {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := c.connect(rand.New(rand.NewPCG(uint64(i), 7))); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	connectAll()

	// The storm: everyone dropped at once, while the first ones back heartbeat.
	var lat []time.Duration
	var latMu sync.Mutex
	stop := make(chan struct{})
	var beats sync.WaitGroup
	students := clients[exams:]
	h.App.Server.KillConnections()
	for _, c := range clients {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
	}
	for _, c := range students[:min(50, len(students))] {
		beats.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				c.mu.Lock()
				up := c.conn != nil
				c.mu.Unlock()
				if !up {
					continue
				}
				if d, err := c.heartbeat(); err == nil {
					latMu.Lock()
					lat = append(lat, d)
					latMu.Unlock()
				}
			}
		})
	}
	took := connectAll()
	close(stop)
	beats.Wait()
	if err := h.App.Engine.Settle(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Every tutor ends with the current rows.
	for _, c := range clients[:exams] {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, body := h.Query(c.user, "proctoring.getExamSessions", map[string]string{"exam_id": c.exam})
			c.mu.Lock()
			held := string(c.view.JSON())
			c.mu.Unlock()
			if held != "" && normJSON(t, held) == normJSON(t, body) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("tutor of %s holds other rows than the current ones", c.exam)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	slices.Sort(lat)
	attempts := 0
	for _, c := range clients {
		attempts += c.rounds
	}
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(float64(len(lat)-1)*p)]
	}
	t.Logf("storm: %d sockets back in %v (%.2f attempts each, %v shed); heartbeats during it: %d, p50 %v, p99 %v, max %v",
		len(clients), took.Round(time.Millisecond), float64(attempts)/float64(len(clients)),
		metric(t, h, "invigil_shed_total"), len(lat), pct(0.5), pct(0.99), pct(1))
	if len(lat) == 0 {
		t.Fatal("no heartbeat was answered during the storm")
	}
}

func normJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %.100s", s)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
