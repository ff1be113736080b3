// Package api is the contract's table: every function and query a client
// may call (CONTRACT §4), with the Go types of its arguments and of what it
// returns. It is the one place that says which Go type is on the wire for
// which name, so that the TypeScript types shipped with the browser client
// (static/invigil.d.ts) can be checked against it: types_test.go fails when
// a name, a field, its optionality or its JSON type disagree, and when the
// engine serves a name this table lacks.
//
// Conventions the check relies on (the features follow them):
//   - Arguments: a field tagged omitempty is optional for clients; any
//     other field is required (the server refuses or defaults it).
//   - Results: a pointer is nullable (T | null); omitempty makes a field
//     optional (absent when empty); slices and maps are never null.
//   - A json.RawMessage field carries the Go type named in Raw, or anything
//     (TypeScript's unknown) when Raw does not name it.
package api

import (
	"reflect"

	"invigil/app/chat"
	"invigil/app/identity"
	"invigil/app/leaderboard"
	"invigil/app/presence"
	"invigil/app/proctoring"
	"invigil/store"
)

// Kind tells a function (a call) from a query (a subscription).
type Kind string

// The two kinds of names.
const (
	Function Kind = "function"
	Query    Kind = "query"
)

// Entry is one name of the contract: its arguments, and its result (a
// function's return value, a query's whole value; a list query's value is a
// slice of its rows).
type Entry struct {
	Name   string
	Kind   Kind
	Args   reflect.Type
	Result reflect.Type
	Public bool // readable without a token
}

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

// Contract lists every function and query, in the contract's order.
var Contract = []Entry{
	// Proctoring.
	{Name: "proctoring.startSession", Kind: Function, Args: typeOf[proctoring.ExamArgs](), Result: typeOf[proctoring.SessionView]()},
	{Name: "proctoring.heartbeat", Kind: Function, Args: typeOf[proctoring.HeartbeatArgs](), Result: typeOf[proctoring.HeartbeatResult]()},
	{Name: "proctoring.logViolation", Kind: Function, Args: typeOf[proctoring.ViolationArgs](), Result: typeOf[proctoring.ViolationView]()},
	{Name: "proctoring.endSession", Kind: Function, Args: typeOf[proctoring.ExamArgs](), Result: typeOf[proctoring.SessionView]()},
	{Name: "proctoring.getExamSessions", Kind: Query, Args: typeOf[proctoring.ExamArgs](), Result: typeOf[[]proctoring.SessionView]()},
	{Name: "proctoring.getSession", Kind: Query, Args: typeOf[proctoring.SessionArgs](), Result: typeOf[*proctoring.SessionDetail]()},
	{Name: "proctoring.getViolations", Kind: Query, Args: typeOf[proctoring.ViolationsArgs](), Result: typeOf[[]proctoring.ViolationView]()},

	// Chat.
	{Name: "chat.startChat", Kind: Function, Args: typeOf[chat.StartArgs](), Result: typeOf[chat.SessionView]()},
	{Name: "chat.assignAgent", Kind: Function, Args: typeOf[chat.AssignArgs](), Result: typeOf[chat.SessionView]()},
	{Name: "chat.sendMessage", Kind: Function, Args: typeOf[chat.SendArgs](), Result: typeOf[chat.MessageView]()},
	{Name: "chat.markRead", Kind: Function, Args: typeOf[chat.ReadArgs](), Result: typeOf[chat.Receipt]()},
	{Name: "chat.setTyping", Kind: Function, Args: typeOf[chat.TypingArgs](), Result: typeOf[chat.TypingResult]()},
	{Name: "chat.endChat", Kind: Function, Args: typeOf[chat.SessionArgs](), Result: typeOf[chat.SessionView]()},
	{Name: "chat.listSessions", Kind: Query, Args: typeOf[chat.ListArgs](), Result: typeOf[[]chat.SessionView]()},
	{Name: "chat.getMessages", Kind: Query, Args: typeOf[chat.MessagesArgs](), Result: typeOf[[]chat.MessageView]()},

	// Presence.
	{Name: "presence.touchPresence", Kind: Function, Args: typeOf[presence.ScopeArgs](), Result: typeOf[presence.View]()},
	{Name: "presence.setScope", Kind: Function, Args: typeOf[presence.ScopeArgs](), Result: typeOf[presence.View]()},
	{Name: "presence.listPresence", Kind: Query, Args: typeOf[presence.ListArgs](), Result: typeOf[[]presence.View]()},

	// Leaderboard (public).
	{Name: "leaderboard.getLeaderboard", Kind: Query, Args: typeOf[leaderboard.BoardArgs](), Result: typeOf[[]leaderboard.Entry](), Public: true},
	{Name: "leaderboard.getQuiz", Kind: Query, Args: typeOf[leaderboard.BoardArgs](), Result: typeOf[leaderboard.Quiz](), Public: true},
}

// Raw names the Go type a json.RawMessage field carries, by "Type.json_name"
// (the Go type's name, its field's JSON name).
var Raw = map[string]reflect.Type{
	// The last heartbeat's network figures as the student sent them, or null.
	"SessionDetail.network": typeOf[*proctoring.Network](),
	// A message's attachments: references to files in Supabase Storage.
	"MessageView.attachments": typeOf[[]chat.Attachment](),
}

// Enums are string fields whose values are a closed set, by the name of
// the TypeScript type that lists them.
var Enums = map[string][]string{
	"ViolationType": keys(proctoring.ViolationTypes),
	"SessionStatus": {store.StatusActive, store.StatusDisconnected, store.StatusSubmitted},
	"Role":          {string(identity.Student), string(identity.Tutor), string(identity.Agent), string(identity.Admin)},
	"ChatScope":     {chat.ScopeSupport, chat.ScopeExam},
	"ChatStatus":    {store.ChatWaiting, store.ChatActive, store.ChatEnded},
}

// Lookup returns the entry for name.
func Lookup(name string) (Entry, bool) {
	for _, e := range Contract {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
