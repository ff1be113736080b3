// Package presence is who is here: a user is present in a scope ("global",
// "exam:<exam_id>", "chat:<session_id>") while a socket of theirs carries
// it, and typing in a chat while their flag is fresh. It has its own table
// and its own keys (presence:<scope>), so a presence touch or a typing flag
// never re-runs a chat's message list.
//
// Rules:
//   - touchPresence marks the caller present in a scope and ties it to the
//     socket; setScope moves this socket from the scope it last entered to
//     another. Over plain HTTP (no socket) both just mark the caller present.
//   - A user is online while a socket of theirs carries the scope, and shows
//     online:false at once when the last one closes (or leaves it by
//     setScope). A row that no socket carries expires (is deleted) once its
//     last_seen is older than TTL (INVIGIL_PRESENCE_TTL): an HTTP client
//     stays present by touching within it.
//   - A typing flag (chat.setTyping) clears itself TypingTTL
//     (INVIGIL_TYPING_TTL) after it was last set, when its user's socket in
//     that scope closes, and when they send a message.
//   - Scopes are authorized: "global" for any signed-in user; "exam:<id>" for
//     the exam's students (those it lists, or any student when it lists
//     none), its tutors and admins; "chat:<id>" for whoever may read that
//     chat (package chat decides: ChatAccess). Others get forbidden; an
//     unknown exam or chat not_found.
//
// listPresence is a list query (rows by user id, key presence:<scope>), so a
// touch costs each subscriber one row.
package presence

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/carriers"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/store"
)

// Key is the presence list of a scope.
func Key(scope string) string { return "presence:" + scope }

// ChatScope is the presence scope of a chat.
func ChatScope(sessionID string) string { return "chat:" + sessionID }

// Config holds the presence rules.
type Config struct {
	TTL       time.Duration // an uncarried row expires this long after last_seen
	TypingTTL time.Duration // a typing flag clears itself after this
	// ChatAccess judges whether u may be present in (and see who is in) a
	// chat's scope: nil or a not_found / forbidden error; it returns the
	// keys whose change may change that answer (for re-checks).
	ChatAccess func(ctx context.Context, u identity.User, sessionID string) (recheck []string, err error)
	Logger     *slog.Logger
}

// Service implements the presence functions and queries.
type Service struct {
	db    *store.DB
	exams *exam.Registry
	cfg   Config
	log   *slog.Logger

	live *carriers.Set[store.PresenceKey] // the sockets carrying each (scope, user)

	mu      sync.Mutex
	current map[uint64]store.PresenceKey // the scope each socket entered last (which setScope leaves)
}

// New returns the service.
func New(db *store.DB, exams *exam.Registry, cfg Config) *Service {
	if cfg.TTL <= 0 {
		cfg.TTL = 60 * time.Second
	}
	if cfg.TypingTTL <= 0 {
		cfg.TypingTTL = 6 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{
		db: db, exams: exams, cfg: cfg, log: cfg.Logger,
		live: carriers.New[store.PresenceKey](), current: map[uint64]store.PresenceKey{},
	}
}

// Register adds the functions and queries to the engine.
func (s *Service) Register(e *engine.Engine) {
	e.Func("presence.touchPresence", s.touchPresence)
	e.Func("presence.setScope", s.setScope)
	e.Query("presence.listPresence", engine.Query{Prepare: s.listPresence})
	e.OnConnClosed(s.connClosed)
}

// Authorize checks that u may be present in scope (and see who is); it
// returns the keys whose change may change the answer.
func (s *Service) Authorize(ctx context.Context, u identity.User, scope string) ([]string, error) {
	kind, id, _ := strings.Cut(scope, ":")
	switch {
	case scope == "global":
		return nil, nil
	case kind == "exam" && id != "":
		ex, err := s.exams.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if exam.CanWatch(u, ex) || (u.Role == identity.Student && (ex.StudentIDs == nil || slices.Contains(ex.StudentIDs, u.ID))) {
			return []string{exam.Key(id)}, nil
		}
		return nil, apperr.New(apperr.Forbidden, "exam %q's presence is for its students and tutors", id)
	case kind == "chat" && id != "":
		if s.cfg.ChatAccess == nil {
			return nil, apperr.New(apperr.NotFound, "no chat %q", id)
		}
		return s.cfg.ChatAccess(ctx, u, id)
	}
	return nil, apperr.New(apperr.InvalidArgument, `scope is "global", "exam:<exam_id>" or "chat:<session_id>"`)
}

// ScopeArgs are the arguments of touchPresence and setScope. The argument
// types are exported for app/api's table of the contract: a field tagged
// omitempty is optional for clients.
type ScopeArgs struct {
	Scope       string `json:"scope"`
	DisplayName string `json:"display_name,omitempty"`
}

func decodeScope(raw json.RawMessage, a *ScopeArgs) error {
	if err := args.Decode(raw, a); err != nil {
		return err
	}
	if err := args.Text("scope", a.Scope, 200); err != nil {
		return err
	}
	if a.Scope == "" {
		return apperr.New(apperr.InvalidArgument, "scope is required")
	}
	return args.Text("display_name", a.DisplayName, 100)
}

func (s *Service) touchPresence(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a ScopeArgs
	if err := decodeScope(raw, &a); err != nil {
		return nil, err
	}
	if _, err := s.Authorize(ctx, c.User, a.Scope); err != nil {
		return nil, err
	}
	return s.enter(ctx, c, a.Scope, a.DisplayName, false)
}

func (s *Service) setScope(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a ScopeArgs
	if err := decodeScope(raw, &a); err != nil {
		return nil, err
	}
	if _, err := s.Authorize(ctx, c.User, a.Scope); err != nil {
		return nil, err
	}
	return s.enter(ctx, c, a.Scope, a.DisplayName, true)
}

// enter marks c present in scope (and, with move, takes this socket out of
// the scope it entered last). The socket carries the scope before the
// write, so that a close racing with it can never leave it shown offline.
func (s *Service) enter(ctx context.Context, c engine.Caller, scope, name string, move bool) (View, error) {
	k := store.PresenceKey{Scope: scope, UserID: c.User.ID}
	left := s.attach(c.Conn, k, move)
	var row store.Presence
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		if left != "" {
			if err := s.offline(tx, store.PresenceKey{Scope: left, UserID: c.User.ID}); err != nil {
				return err
			}
		}
		row = store.Presence{Scope: scope, UserID: c.User.ID, DisplayName: displayName(c.User, name), Role: string(c.User.Role),
			Online: true, LastSeen: store.FormatTime(tx.Now())}
		if err := tx.TouchPresence(row); err != nil {
			return err
		}
		tx.TouchRows(Key(scope), c.User.ID)
		return nil
	})
	if err != nil {
		return View{}, err
	}
	return view(row), nil
}

// Typing sets (typing) or clears c's typing flag in scope, which the caller
// has authorized; it marks c present there too.
func (s *Service) Typing(ctx context.Context, c engine.Caller, scope string, typing bool) error {
	k := store.PresenceKey{Scope: scope, UserID: c.User.ID}
	s.attach(c.Conn, k, false)
	return s.db.Update(ctx, func(tx *store.Tx) error {
		row := store.Presence{Scope: scope, UserID: c.User.ID, DisplayName: displayName(c.User, ""), Role: string(c.User.Role)}
		if typing {
			row.TypingUntil = store.FormatTime(tx.Now().Add(s.cfg.TypingTTL))
		} else if _, err := tx.ClearTyping(k); err != nil {
			return err
		}
		if err := tx.TouchPresence(row); err != nil {
			return err
		}
		tx.TouchRows(Key(scope), c.User.ID)
		return nil
	})
}

// ClearTyping clears a user's typing flag inside another write (a sent
// message ends its sender's typing).
func ClearTyping(tx *store.Tx, scope, userID string) error {
	cleared, err := tx.ClearTyping(store.PresenceKey{Scope: scope, UserID: userID})
	if cleared {
		tx.TouchRows(Key(scope), userID)
	}
	return err
}

// offline shows k offline in tx unless a socket carries it again.
func (s *Service) offline(tx *store.Tx, k store.PresenceKey) error {
	if s.live.Carried(k) {
		return nil
	}
	changed, err := tx.SetOffline(k)
	if changed {
		tx.TouchRows(Key(k.Scope), k.UserID)
	}
	return err
}

func displayName(u identity.User, name string) string {
	switch {
	case strings.TrimSpace(name) != "":
		return name
	case u.Name != "":
		return u.Name
	}
	return u.ID
}

// ListArgs are listPresence's arguments.
type ListArgs struct {
	Scope string `json:"scope"`
	Limit *int   `json:"limit,omitempty"`
}

func (s *Service) listPresence(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a ListArgs
	if err := args.Decode(raw, &a); err != nil {
		return engine.Plan{}, err
	}
	if a.Scope == "" {
		return engine.Plan{}, apperr.New(apperr.InvalidArgument, "scope is required")
	}
	if err := args.Text("scope", a.Scope, 200); err != nil {
		return engine.Plan{}, err
	}
	limit := 500
	if a.Limit != nil {
		if *a.Limit < 1 || *a.Limit > 5000 {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "limit must be between 1 and 5000")
		}
		limit = *a.Limit
	}
	recheck, err := s.Authorize(ctx, c.User, a.Scope)
	if err != nil {
		return engine.Plan{}, err
	}
	u, scope := c.User, a.Scope
	plan := engine.Plan{
		Share: scope + "\x00" + itoa(limit),
		List: &engine.List{
			Key: Key(scope), Limit: limit,
			All: func(ctx context.Context) ([]engine.Row, error) {
				ps, err := s.db.PresenceList(ctx, scope, limit)
				return rows(ps), err
			},
			Fetch: func(ctx context.Context, ids []string) ([]engine.Row, error) {
				ps, err := s.db.PresenceByID(ctx, scope, ids)
				return rows(ps), err
			},
		},
	}
	if len(recheck) > 0 {
		plan.RecheckKeys = recheck
		plan.Recheck = func(ctx context.Context) error {
			_, err := s.Authorize(ctx, u, scope)
			return err
		}
	}
	return plan, nil
}

// View is one presence row as listPresence sends it.
type View struct {
	ID          string `json:"_id"` // the user id
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name"`
	Role        string `json:"role"`
	IsTyping    bool   `json:"is_typing"`
	LastSeen    string `json:"last_seen"`
	Online      bool   `json:"online"`
}

func view(p store.Presence) View {
	return View{ID: p.UserID, UserID: p.UserID, DisplayName: p.DisplayName, Role: p.Role,
		IsTyping: p.TypingUntil != "", LastSeen: p.LastSeen, Online: p.Online}
}

// rows are presence rows in the documented order: by display name, then
// user id (as the SQL sorts them: bytewise).
func rows(ps []store.Presence) []engine.Row {
	out := make([]engine.Row, len(ps))
	for i, p := range ps {
		out[i] = engine.Row{ID: p.UserID, Order: p.DisplayName + "\x00" + p.UserID, Value: view(p)}
	}
	return out
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
