package chat_test

import (
	"fmt"
	"testing"

	"invigil/app/apperr"
	"invigil/app/chat"
	"invigil/app/identity"
	"invigil/store"
)

var (
	student  = identity.User{ID: "stu", Role: identity.Student}
	agentA   = identity.User{ID: "agent-a", Role: identity.Agent}
	agentB   = identity.User{ID: "agent-b", Role: identity.Agent}
	tutorT   = identity.User{ID: "tutor-t", Role: identity.Tutor} // teaches exam e1
	tutorU   = identity.User{ID: "tutor-u", Role: identity.Tutor} // teaches exam e1 too
	tutorX   = identity.User{ID: "tutor-x", Role: identity.Tutor} // teaches another exam
	admin    = identity.User{ID: "admin", Role: identity.Admin}
	stranger = identity.User{ID: "other-stu", Role: identity.Student}
	exam1    = &store.Exam{ID: "e1", TutorIDs: []string{tutorT.ID, tutorU.ID}}
)

func chatOf(scope, status, assigned string) store.ChatSession {
	s := store.ChatSession{ID: "c1", Scope: scope, StudentID: student.ID, Status: status, AssignedTo: assigned}
	if scope == chat.ScopeExam {
		s.ExamID = "e1"
	}
	return s
}

// TestRuleTable checks every cell of the package comment's table: each
// caller against each action on a support chat and an exam room, waiting,
// assigned (to someone else or to the caller) and ended. "" is allowed.
func TestRuleTable(t *testing.T) {
	const (
		ok  = ""
		frb = apperr.Forbidden
		cfl = apperr.Conflict
	)
	type want map[chat.Action]apperr.Code
	// every action allowed but what is listed
	all := func(w want) want {
		out := want{chat.Read: ok, chat.Write: ok, chat.Claim: ok, chat.Assign: ok, chat.End: ok}
		for k, v := range w {
			out[k] = v
		}
		return out
	}
	none := want{chat.Read: frb, chat.Write: frb, chat.Claim: frb, chat.Assign: frb, chat.End: frb}
	cases := []struct {
		chat   store.ChatSession
		caller identity.User
		want   want
	}{
		// Support, waiting: any agent reads, claims and may end it; writing needs a claim.
		{chatOf("support", "waiting", ""), student, all(want{chat.Claim: frb, chat.Assign: frb})},
		{chatOf("support", "waiting", ""), agentA, all(want{chat.Write: cfl, chat.Assign: frb})},
		{chatOf("support", "waiting", ""), admin, all(want{chat.Write: cfl})},
		{chatOf("support", "waiting", ""), tutorT, none},
		{chatOf("support", "waiting", ""), stranger, none},
		// Support, agent A answers it: B only reads.
		{chatOf("support", "active", agentA.ID), student, all(want{chat.Claim: frb, chat.Assign: frb})},
		{chatOf("support", "active", agentA.ID), agentA, all(want{chat.Assign: frb})},
		{chatOf("support", "active", agentA.ID), agentB, all(want{chat.Write: frb, chat.Claim: cfl, chat.Assign: frb, chat.End: frb})},
		{chatOf("support", "active", agentA.ID), admin, all(nil)},
		{chatOf("support", "active", agentA.ID), tutorT, none},
		{chatOf("support", "active", agentA.ID), stranger, none},
		// Named without an agent's token: nothing beyond their own role.
		{chatOf("support", "active", tutorT.ID), tutorT, none},
		// Exam room, waiting: every tutor of the exam answers; others are strangers.
		{chatOf("exam", "waiting", ""), student, all(want{chat.Claim: frb, chat.Assign: frb})},
		{chatOf("exam", "waiting", ""), tutorT, all(want{chat.Assign: frb})},
		{chatOf("exam", "waiting", ""), tutorX, none},
		{chatOf("exam", "waiting", ""), agentA, none},
		{chatOf("exam", "waiting", ""), admin, all(nil)},
		{chatOf("exam", "waiting", ""), stranger, none},
		// Exam room answered by tutor T: U still answers, but cannot claim it.
		{chatOf("exam", "active", tutorT.ID), tutorT, all(want{chat.Assign: frb})},
		{chatOf("exam", "active", tutorT.ID), tutorU, all(want{chat.Claim: cfl, chat.Assign: frb})},
		{chatOf("exam", "active", tutorT.ID), student, all(want{chat.Claim: frb, chat.Assign: frb})},
		{chatOf("exam", "active", tutorT.ID), tutorX, none},
		// Ended: read only; endChat again is answered; strangers still forbidden.
		{chatOf("support", "ended", agentA.ID), student, want{chat.Read: ok, chat.Write: cfl, chat.Claim: frb, chat.Assign: frb, chat.End: ok}},
		{chatOf("support", "ended", agentA.ID), agentA, want{chat.Read: ok, chat.Write: cfl, chat.Claim: cfl, chat.Assign: frb, chat.End: ok}},
		{chatOf("support", "ended", agentA.ID), admin, want{chat.Read: ok, chat.Write: cfl, chat.Claim: cfl, chat.Assign: cfl, chat.End: ok}},
		{chatOf("exam", "ended", tutorT.ID), tutorU, want{chat.Read: ok, chat.Write: cfl, chat.Claim: cfl, chat.Assign: frb, chat.End: ok}},
		{chatOf("exam", "ended", tutorT.ID), stranger, none},
	}
	for _, c := range cases {
		for _, a := range []chat.Action{chat.Read, chat.Write, chat.Claim, chat.Assign, chat.End} {
			name := fmt.Sprintf("%s/%s/%s/%s/%s", c.chat.Scope, c.chat.Status, c.chat.AssignedTo, c.caller.ID, a)
			t.Run(name, func(t *testing.T) {
				got := apperr.CodeOf(chat.Rule(chat.Relate(c.caller, c.chat, exam1), c.chat, a))
				if got != c.want[a] {
					t.Fatalf("got %q, want %q", got, c.want[a])
				}
			})
		}
	}
}
