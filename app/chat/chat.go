// Package chat is live chat: support chats between a student (or tutor)
// and the support agents, and exam rooms between an exam's students and
// its tutors. Messages are stored numbered per chat, read receipts as each
// reader's mark, and typing and presence live apart (package presence), so
// a typing flag never touches a message list.
//
// Support chats start waiting and appear at once in every agent's queue
// (listSessions {scope:"support"}); chat.assignAgent makes one agent the
// answerer, atomically: of agents claiming together exactly one wins and
// the others get conflict. An admin may assign a chat to another agent (any
// id: roles of users who are not here cannot be checked, so being named
// grants nothing to a caller whose token is not an agent's). Exam rooms
// belong to an exam: its students start them (those the exam lists, or any
// student when it lists none, while it is scheduled or open), and every
// tutor of the exam reads and answers them; a tutor's first answer to a
// waiting room claims it (assigned_to says who answered).
//
// Who may do what to one chat (a caller can be several of these; Rule is
// this table, and chat_test.go checks every cell):
//
//	                     owner  staff, support        staff, exam room  assignee  admin             anyone else
//	read (getMessages,   yes    yes                   yes               yes       yes               forbidden
//	  chat:<id> presence)
//	write (sendMessage,  yes    waiting: conflict     yes               yes       exam: yes;        forbidden
//	  markRead,                 (claim first);                                    support waiting:
//	  setTyping)                another's: forbidden                              conflict, else yes
//	claim (assignAgent   forbidden waiting: yes;      waiting: yes;     yes       yes               forbidden
//	  to oneself)               claimed: conflict     claimed: conflict
//	assign (assignAgent  forbidden forbidden          forbidden         forbidden yes               forbidden
//	  to agent_id)
//	end (endChat)        yes    waiting: yes;         yes               yes       yes               forbidden
//	                            another's: forbidden
//
// "owner" started the chat; "staff" is an agent for a support chat and a
// tutor of the exam for an exam room; "assignee" is the staff member the
// chat is assigned to. An unknown chat is not_found for everyone. Once a
// chat has ended, writes, claims and assignments get conflict; endChat
// again returns it as it is (and sends no second transcript).
//
// Who starts a chat: support chats, students and tutors (agents and admins
// answer them); exam rooms, the exam's students. Starting again while one's
// chat in that scope (and exam) has not ended returns it.
//
// Messages: body 1–4000 characters, counted as Unicode code points (as
// Postgres's char_length counts them in Supabase's chat_messages), not
// blank; up to 10 attachments, each a reference {url (https only), name,
// size, mime}, never bytes. A sender's client_msg_id is stored once per
// chat: a retry (also after a reconnect) returns the message already
// stored. Each user may send a burst of 10 messages, then about one a
// second (rate_limited with retry_after_ms). Sending also marks everything
// before the new message read by its sender (they have seen it) and clears
// their typing flag.
//
// read_by lists who, other than its sender, has read a message: a reader's
// markRead mark (every message up to it) reached it.
//
// Keys: chat:<id>:messages (getMessages, rows by message id: a new
// message costs a subscriber one row, a receipt the rows whose read_by
// changed); chat:support:sessions, chat:exam:<exam_id>:sessions,
// chat:user:<user_id>:sessions and chat:sessions (listSessions' audiences:
// the agents' queue, an exam's rooms for its tutors, a user's own chats,
// everything for admins; rows by chat id). Presence uses presence:<scope>.
package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/presence"
	"invigil/app/ratelimit"
	"invigil/store"
)

// Scopes of a chat.
const (
	ScopeSupport = "support"
	ScopeExam    = "exam"
)

// Limits.
const (
	MaxBody        = 4000 // characters (code points)
	MaxAttachments = 10
	DefaultLimit   = 50 // getMessages
	MaxLimit       = 200
	DefaultList    = 100 // listSessions
	MaxList        = 500
	previewRunes   = 140
)

// Keys chat writes touch and its queries read.
func messagesKey(sessionID string) string { return "chat:" + sessionID + ":messages" }

const (
	supportKey = "chat:support:sessions"
	allKey     = "chat:sessions"
)

func examKey(examID string) string { return "chat:exam:" + examID + ":sessions" }
func userKey(userID string) string { return "chat:user:" + userID + ":sessions" }

// Config holds the chat rules.
type Config struct {
	// MessageRate and MessageBurst limit sendMessage per user: a burst,
	// then rate a second. Defaults: 10, then 1.
	MessageRate, MessageBurst float64
	// Retention is how long an ended chat stays once Supabase has its
	// transcript (INVIGIL_RETENTION).
	Retention time.Duration
	Clock     clockwork.Clock
	Logger    *slog.Logger
}

// Service implements the chat functions and queries.
type Service struct {
	db       *store.DB
	exams    *exam.Registry
	presence *presence.Service
	cfg      Config
	log      *slog.Logger
	limits   *ratelimit.Limiter
}

// New returns the service; typing flags go through pres.
func New(db *store.DB, exams *exam.Registry, pres *presence.Service, cfg Config) *Service {
	if cfg.MessageRate <= 0 {
		cfg.MessageRate = 1
	}
	if cfg.MessageBurst <= 0 {
		cfg.MessageBurst = 10
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{db: db, exams: exams, presence: pres, cfg: cfg, log: cfg.Logger,
		limits: ratelimit.New(cfg.Clock, cfg.MessageRate, cfg.MessageBurst)}
}

// Register adds the functions and queries to the engine.
func (s *Service) Register(e *engine.Engine) {
	e.Func("chat.startChat", s.startChat)
	e.Func("chat.assignAgent", s.assignAgent)
	e.Func("chat.sendMessage", s.sendMessage)
	e.Func("chat.markRead", s.markRead)
	e.Func("chat.setTyping", s.setTyping)
	e.Func("chat.endChat", s.endChat)
	e.Query("chat.listSessions", engine.Query{Prepare: s.listSessions})
	e.Query("chat.getMessages", engine.Query{Prepare: s.getMessages})
}

// touchChat names a chat's row in every list it belongs to.
func touchChat(tx *store.Tx, sess store.ChatSession) {
	if sess.Scope == ScopeExam {
		tx.TouchRows(examKey(sess.ExamID), sess.ID)
	} else {
		tx.TouchRows(supportKey, sess.ID)
	}
	tx.TouchRows(userKey(sess.StudentID), sess.ID)
	tx.TouchRows(allKey, sess.ID)
}

// PurgeEnded deletes chats that ended more than Retention ago and whose
// transcript reached Supabase (a job); it returns how many.
func (s *Service) PurgeEnded(ctx context.Context) (int, error) {
	n := 0
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		gone, err := tx.PurgeEndedChats(tx.Now().Add(-s.cfg.Retention), 500)
		for _, sess := range gone {
			touchChat(tx, sess)
			tx.Touch(messagesKey(sess.ID))
		}
		n = len(gone)
		return err
	})
	return n, err
}

// seqOrder is a message's place in its chat as a list order (fixed width,
// so that text order is number order).
func seqOrder(seq int64) string { return fmt.Sprintf("%020d", seq) }

// preview is what lists show of a message: its start on one line.
func preview(body string) string {
	body = strings.Join(strings.Fields(body), " ")
	r := []rune(body)
	if len(r) > previewRunes {
		return string(r[:previewRunes-1]) + "…"
	}
	return body
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain data always encodes
	}
	return string(b)
}
