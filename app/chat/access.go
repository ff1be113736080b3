package chat

import (
	"context"
	"errors"
	"slices"

	"invigil/app/apperr"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/store"
)

// Action is something a caller does to a chat; Rule decides whether they may.
type Action string

const (
	Read   Action = "read"   // getMessages, and the chat's presence scope (touch, setScope, listPresence)
	Write  Action = "write"  // sendMessage, markRead, setTyping
	Claim  Action = "claim"  // assignAgent to oneself
	Assign Action = "assign" // assignAgent to someone else
	End    Action = "end"    // endChat
)

// Relation is who a caller is to one chat. A caller may be several at once
// (an admin who started a chat is its owner and an admin).
type Relation struct {
	Owner    bool // started it (the chat is theirs)
	Staff    bool // support: an agent; exam room: a tutor of its exam
	Admin    bool
	Assignee bool // the staff member (or admin) it is assigned to
}

// Relate says who u is to chat s (ex is its exam, for exam rooms). Being
// named assigned_to grants nothing to a caller whose current token is not
// staff for the chat (an admin may assign any id: roles of absent users
// cannot be checked here; the token decides when they act).
func Relate(u identity.User, s store.ChatSession, ex *store.Exam) Relation {
	r := Relation{Owner: u.ID == s.StudentID, Admin: u.Role == identity.Admin}
	switch s.Scope {
	case ScopeSupport:
		r.Staff = u.Role == identity.Agent
	case ScopeExam:
		r.Staff = u.Role == identity.Tutor && ex != nil && slices.Contains(ex.TutorIDs, u.ID)
	}
	r.Assignee = s.AssignedTo != "" && s.AssignedTo == u.ID && (r.Staff || r.Admin)
	return r
}

// Rule decides whether a caller related to chat s by r may do a. It is the
// table of the package comment; every error is an *apperr.Error. An ended
// chat refuses writes, claims and assignments with conflict (after the
// forbidden a stranger gets); endChat on it is answered with the chat as
// it is.
func Rule(r Relation, s store.ChatSession, a Action) error {
	if !(r.Owner || r.Staff || r.Admin) {
		return apperr.New(apperr.Forbidden, "you are not a participant of this chat")
	}
	ended := s.Status == store.ChatEnded
	switch a {
	case Read:
		return nil
	case Write:
		if ended {
			return apperr.New(apperr.Conflict, "the chat has ended")
		}
		if r.Owner || s.Scope == ScopeExam || r.Assignee {
			return nil // an exam room belongs to all of its exam's tutors
		}
		// Support: the agent it is assigned to writes; others claim first.
		if s.Status == store.ChatWaiting {
			return apperr.New(apperr.Conflict, "claim this chat first (chat.assignAgent)")
		}
		if r.Admin {
			return nil // an admin may step into any agent's chat
		}
		return apperr.New(apperr.Forbidden, "this chat is assigned to another agent")
	case Claim:
		if !(r.Staff || r.Admin) {
			return apperr.New(apperr.Forbidden, "only agents (support) and the exam's tutors (exam rooms) answer chats")
		}
		if ended {
			return apperr.New(apperr.Conflict, "the chat has ended")
		}
		if r.Assignee || s.Status == store.ChatWaiting || r.Admin {
			return nil
		}
		return apperr.New(apperr.Conflict, "the chat was already claimed")
	case Assign:
		if !r.Admin {
			return apperr.New(apperr.Forbidden, "only admins assign chats to others")
		}
		if ended {
			return apperr.New(apperr.Conflict, "the chat has ended")
		}
		return nil
	case End:
		if ended {
			return nil
		}
		if r.Owner || r.Admin || r.Assignee || s.Scope == ScopeExam ||
			(r.Staff && s.Status == store.ChatWaiting) {
			return nil
		}
		return apperr.New(apperr.Forbidden, "this chat is assigned to another agent")
	}
	return apperr.New(apperr.Forbidden, "not allowed")
}

// chatFor reads a chat and, for an exam room, its exam; an unknown chat
// is not_found.
func (s *Service) chatFor(ctx context.Context, r *store.Reader, id string) (store.ChatSession, *store.Exam, error) {
	var sess store.ChatSession
	var err error
	if r != nil {
		sess, err = r.ChatSession(ctx, id)
	} else {
		sess, err = s.db.ChatSession(ctx, id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return sess, nil, apperr.New(apperr.NotFound, "no chat %q", id)
	}
	if err != nil || sess.Scope != ScopeExam {
		return sess, nil, err
	}
	ex, err := s.db.Exam(ctx, sess.ExamID)
	if errors.Is(err, store.ErrNotFound) {
		return sess, nil, nil // an unregistered exam has no tutors
	}
	if err != nil {
		return sess, nil, err
	}
	return sess, &ex, nil
}

// allow reads the chat and checks that u may do a to it.
func (s *Service) allow(ctx context.Context, u identity.User, id string, a Action) (store.ChatSession, *store.Exam, error) {
	sess, ex, err := s.chatFor(ctx, nil, id)
	if err != nil {
		return sess, ex, err
	}
	return sess, ex, Rule(Relate(u, sess, ex), sess, a)
}

// Access is the presence rule for scope chat:<id>: whoever may read the
// chat. It returns the keys whose change may change the answer (an exam
// room's exam: its tutors).
func (s *Service) Access(ctx context.Context, u identity.User, id string) ([]string, error) {
	sess, _, err := s.allow(ctx, u, id, Read)
	if err != nil {
		return nil, err
	}
	return recheckKeys(sess), nil
}

func recheckKeys(sess store.ChatSession) []string {
	if sess.Scope == ScopeExam {
		return []string{exam.Key(sess.ExamID)}
	}
	return nil
}
