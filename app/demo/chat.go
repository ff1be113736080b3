package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
)

// The demo's chat cast: visitors who ask support, students of the demo
// exam who ask its tutor, and a simulated agent who takes the oldest
// waiting chat when the queue grows long (agent-1, a person at /support,
// and tutor-1 at /proctor/demo answer the rest).
var (
	supportVisitors = []identity.User{
		{ID: "sim-help-1", Role: identity.Student, Name: "Maya Kowalski"},
		{ID: "sim-help-2", Role: identity.Student, Name: "Tomás Rivera"},
		{ID: "sim-help-3", Role: identity.Student, Name: "Aiko Tanaka"},
		{ID: "sim-help-4", Role: identity.Tutor, Name: "Mr. Oduya (tutor)"},
	}
	roomStudents = []identity.User{
		{ID: "sim-room-1", Role: identity.Student, Name: "Lena Fischer"},
		{ID: "sim-room-2", Role: identity.Student, Name: "Kwame Asante"},
	}
	simAgent = identity.User{ID: "agent-sim", Role: identity.Agent, Name: "Sam (simulated agent)"}
)

var supportQuestions = []string{
	"Hi! The exam page says my session expired, but I just signed in. What should I do?",
	"Hello, I paid for the premium plan yesterday but my account still shows the free one.",
	"My webcam permission popup never shows up on the exam page. Can you help?",
	"Can I take the exam on a tablet, or do I need a laptop?",
	"I was disconnected during my exam. Will my answers be lost?",
	"How do I add a second tutor to my course? The button is greyed out.",
	"I never received the confirmation email for my exam booking.",
}

var supportFollowUps = []string{
	"Thanks. I'm on Chrome, the latest version I think.",
	"OK, I tried that. It seems to work now!",
	"Great, thank you so much for your help 🙏",
	"Sure, one moment please…",
	"That makes sense. Thanks!",
}

var roomQuestions = []string{
	"Is a calculator allowed for this exam?",
	"In question 3, does \"largest\" mean by area or by volume?",
	"My screen went black for a second: did that count as leaving the exam?",
	"Can we use scrap paper?",
	"How much time is left? My timer disappeared.",
}

var roomFollowUps = []string{
	"Thank you!",
	"Got it, thanks.",
	"OK, understood 👍",
}

var agentLines = []string{
	"Hi %s, this is Sam from support. Let me look into that for you.",
	"Could you tell me which browser you are using?",
	"Thanks! I've reset it on our side: please reload the page and try again.",
	"Glad it's sorted. Anything else I can help with?",
}

// SimulateChats keeps a few support chats and exam-room questions going
// until ctx ends, through the engine as sockets would: visitors open
// chats, wait (and nudge) until someone answers, answer back (typing
// first), then thank and end the chat; exam students ask tutor-1 in the
// demo exam's rooms. So the agent console and the tutor's chat panel are
// alive the moment they open.
func SimulateChats(ctx context.Context, e *engine.Engine, clock clockwork.Clock, log *slog.Logger) {
	var wg sync.WaitGroup
	cast := append(append([]identity.User{}, supportVisitors...), roomStudents...)
	for i, u := range cast {
		c := newChatter(e, clock, log, u, uint64(i))
		scope := "support"
		if i >= len(supportVisitors) {
			scope = "exam"
		}
		// The first two visitors arrive at once: the queue is never empty
		// when the console opens.
		first := time.Duration(c.rng.IntN(20_000)) * time.Millisecond
		if i < 2 {
			first = time.Duration(200+c.rng.IntN(800)) * time.Millisecond
		}
		wg.Go(func() { c.visit(ctx, scope, first) })
	}
	wg.Go(func() { newChatter(e, clock, log, simAgent, uint64(len(cast))).answerQueue(ctx) })
	wg.Wait()
}

// chatter is one simulated chat user.
type chatter struct {
	e     *engine.Engine
	clock clockwork.Clock
	log   *slog.Logger
	rng   *rand.Rand
	user  identity.User
	conn  uint64
	sent  int
	idx   int // in the cast
	asked int // questions asked so far
}

func newChatter(e *engine.Engine, clock clockwork.Clock, log *slog.Logger, u identity.User, i uint64) *chatter {
	return &chatter{e: e, clock: clock, log: log, user: u, idx: int(i),
		rng: rand.New(rand.NewPCG(i*0x9E3779B97F4A7C15+1, 8)), conn: 1<<61 + i*100_000}
}

func (c *chatter) caller() engine.Caller { return engine.Caller{User: c.user, Conn: c.conn} }

func (c *chatter) call(ctx context.Context, fn string, args map[string]any) (json.RawMessage, error) {
	raw, _ := json.Marshal(args)
	v, err := c.e.Call(ctx, c.caller(), fn, raw)
	if err != nil {
		if code := apperr.CodeOf(err); code != apperr.Conflict && code != apperr.RateLimited {
			c.log.Debug("demo chat call failed", "user_id", c.user.ID, "fn", fn, "err", err)
		}
		return nil, err
	}
	return json.Marshal(v)
}

func (c *chatter) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-c.clock.After(d):
		return true
	}
}

func (c *chatter) jitter(min, max time.Duration) time.Duration {
	return min + time.Duration(c.rng.Int64N(int64(max-min)+1))
}

type simChat struct {
	ID     string `json:"_id"`
	Status string `json:"status"`
}

type simMessage struct {
	ID       string `json:"_id"`
	Seq      int64  `json:"seq"`
	SenderID string `json:"sender_id"`
}

// say types for a moment, then sends body.
func (c *chatter) say(ctx context.Context, chatID, body string) error {
	c.call(ctx, "chat.setTyping", map[string]any{"session_id": chatID, "typing": true})
	if !c.sleep(ctx, c.jitter(1500*time.Millisecond, 3500*time.Millisecond)) {
		return ctx.Err()
	}
	c.sent++
	_, err := c.call(ctx, "chat.sendMessage", map[string]any{
		"session_id": chatID, "body": body, "client_msg_id": c.user.ID + "-" + strconv.Itoa(c.sent),
	})
	return err
}

// converse answers each message of the others with the next of lines,
// until lines run out (done), the chat ends (err), or nobody writes for
// patience (silent).
func (c *chatter) converse(ctx context.Context, chatID string, lines []string, patience time.Duration) (silent bool, err error) {
	poke := make(chan struct{}, 1)
	sub, err := c.e.Subscribe(ctx, c.caller(), "chat.getMessages", mustRaw(map[string]any{"session_id": chatID}),
		func(engine.Update, error) {
			select { // a sink must never block
			case poke <- struct{}{}:
			default:
			}
		})
	if err != nil {
		return false, err
	}
	defer sub.Close()
	var seen int64
	quiet := c.clock.Now()
	// One timer, stopped while busy: a chatter waits on the clock once at a
	// time (tests move a fake clock when every chatter waits).
	look := c.clock.NewTimer(10 * time.Second)
	defer look.Stop()
	for next := 0; next < len(lines); look.Reset(10 * time.Second) {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-poke:
			look.Stop()
		case <-look.Chan(): // look whether the chat ended meanwhile
			if c.ended(ctx, chatID) {
				return false, nil
			}
			if c.clock.Since(quiet) > patience {
				return true, nil
			}
			continue
		}
		raw, err := c.e.Get(ctx, c.caller(), "chat.getMessages", mustRaw(map[string]any{"session_id": chatID}))
		if err != nil {
			return false, err
		}
		var msgs []simMessage
		json.Unmarshal(raw, &msgs)
		var last *simMessage
		for i, m := range msgs {
			if m.Seq > seen && m.SenderID != c.user.ID {
				last = &msgs[i]
			}
		}
		if last == nil {
			continue
		}
		seen, quiet = last.Seq, c.clock.Now()
		c.call(ctx, "chat.markRead", map[string]any{"session_id": chatID, "up_to_message_id": last.ID})
		if !c.sleep(ctx, c.jitter(time.Second, 3*time.Second)) {
			return false, ctx.Err()
		}
		if err := c.say(ctx, chatID, lines[next]); err != nil {
			return false, err
		}
		next++
	}
	return false, nil
}

func (c *chatter) ended(ctx context.Context, chatID string) bool {
	raw, err := c.e.Get(ctx, c.caller(), "chat.listSessions", mustRaw(map[string]any{"status": "ended", "limit": 20}))
	if err != nil {
		return false
	}
	var chats []simChat
	json.Unmarshal(raw, &chats)
	for _, ch := range chats {
		if ch.ID == chatID {
			return true
		}
	}
	return false
}

// visit is a visitor's life: arrive, ask, wait for an answer (nudging once),
// talk, thank, end; then come back later with another question.
func (c *chatter) visit(ctx context.Context, scope string, first time.Duration) {
	if !c.sleep(ctx, first) {
		return
	}
	for ctx.Err() == nil {
		c.conn++
		args := map[string]any{"scope": scope}
		questions, followUps, patience := supportQuestions, supportFollowUps, 6*time.Minute
		if scope == "exam" {
			args["exam_id"] = ExamID
			questions, followUps, patience = roomQuestions, roomFollowUps, 4*time.Minute
		}
		raw, err := c.call(ctx, "chat.startChat", args)
		var ch simChat
		if err == nil && json.Unmarshal(raw, &ch) == nil && ch.ID != "" {
			c.call(ctx, "presence.touchPresence", map[string]any{"scope": "chat:" + ch.ID})
			// Each in turn, starting at a different one: no two visitors open alike.
			c.talk(ctx, ch.ID, questions[(c.idx*3+c.asked)%len(questions)], followUps, patience)
			c.asked++
		}
		c.e.ConnClosed(c.conn) // the visitor's tab closes: offline at once
		if !c.sleep(ctx, c.jitter(40*time.Second, 3*time.Minute)) {
			return
		}
	}
}

func (c *chatter) talk(ctx context.Context, chatID, question string, followUps []string, patience time.Duration) {
	if c.say(ctx, chatID, question) != nil {
		return
	}
	lines := make([]string, 0, 2)
	for _, i := range c.rng.Perm(len(followUps))[:min(2, len(followUps))] {
		lines = append(lines, followUps[i])
	}
	silent, err := c.converse(ctx, chatID, lines, patience/2)
	if err == nil && silent {
		c.say(ctx, chatID, "Hello? Is anyone there?")
		if silent, err = c.converse(ctx, chatID, lines, patience/2); err == nil && silent {
			c.say(ctx, chatID, "Never mind, I found the answer. Thanks anyway!")
		}
	}
	if err == nil && c.sleep(ctx, c.jitter(5*time.Second, 20*time.Second)) {
		c.call(ctx, "chat.endChat", map[string]any{"session_id": chatID})
	}
}

// answerQueue is the simulated agent: when four or more support chats
// wait, it takes the oldest and talks it through.
func (c *chatter) answerQueue(ctx context.Context) {
	for c.sleep(ctx, 5*time.Second) {
		raw, err := c.e.Get(ctx, c.caller(), "chat.listSessions", mustRaw(map[string]any{"scope": "support", "status": "waiting"}))
		if err != nil {
			continue
		}
		var waiting []struct {
			simChat
			StudentName string `json:"student_name"`
		}
		json.Unmarshal(raw, &waiting)
		if len(waiting) < 4 {
			continue
		}
		oldest := waiting[len(waiting)-1] // newest activity first
		if _, err := c.call(ctx, "chat.assignAgent", map[string]any{"session_id": oldest.ID}); err != nil {
			continue // someone was quicker
		}
		c.conn++
		c.call(ctx, "presence.touchPresence", map[string]any{"scope": "chat:" + oldest.ID})
		if c.say(ctx, oldest.ID, fmt.Sprintf(agentLines[0], oldest.StudentName)) == nil {
			if _, err := c.converse(ctx, oldest.ID, agentLines[1:], 3*time.Minute); err == nil {
				c.call(ctx, "chat.endChat", map[string]any{"session_id": oldest.ID})
			}
		}
		c.e.ConnClosed(c.conn)
	}
}

func mustRaw(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
