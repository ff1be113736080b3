package presence

import (
	"context"
	"time"

	"invigil/store"
)

// attach records that a socket carries k (HTTP callers, conn 0, carry
// nothing: their presence lasts TTL). With move, the socket leaves the
// scope it entered last; left names it when no socket of the user carries
// it any more (the caller shows it offline in its write).
func (s *Service) attach(conn uint64, k store.PresenceKey, move bool) (left string) {
	if conn == 0 {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := s.conns[conn]
	if cp == nil {
		cp = &connPresence{user: k.UserID, scopes: map[string]bool{}}
		s.conns[conn] = cp
	}
	if move && cp.current != "" && cp.current != k.Scope && cp.scopes[cp.current] {
		old := store.PresenceKey{Scope: cp.current, UserID: cp.user}
		delete(cp.scopes, cp.current)
		if s.carriers[old]--; s.carriers[old] <= 0 {
			delete(s.carriers, old)
			left = old.Scope
		}
	}
	if !cp.scopes[k.Scope] {
		cp.scopes[k.Scope] = true
		s.carriers[k]++
	}
	cp.current = k.Scope
	return left
}

// carried reports whether a live socket carries k.
func (s *Service) carried(k store.PresenceKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.carriers[k] > 0
}

// connClosed shows the socket's user offline, at once, in every scope no
// other socket of theirs carries.
func (s *Service) connClosed(conn uint64) {
	s.mu.Lock()
	cp := s.conns[conn]
	delete(s.conns, conn)
	var orphans []store.PresenceKey
	if cp != nil {
		for scope := range cp.scopes {
			k := store.PresenceKey{Scope: scope, UserID: cp.user}
			if s.carriers[k]--; s.carriers[k] <= 0 {
				delete(s.carriers, k)
				orphans = append(orphans, k)
			}
		}
	}
	s.mu.Unlock()
	if len(orphans) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		for _, k := range orphans {
			if err := s.offline(tx, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("presence offline on socket close", "user_id", cp.user, "err", err)
	}
}

// ExpireTyping clears the typing flags older than TypingTTL; it returns how
// many (a job: run it every second or so).
func (s *Service) ExpireTyping(ctx context.Context) (int, error) {
	n := 0
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		keys, err := tx.ExpireTyping()
		for _, k := range keys {
			tx.TouchRows(Key(k.Scope), k.UserID)
		}
		n = len(keys)
		return err
	})
	return n, err
}

// ExpireStale deletes presence rows that no socket carries and that were
// last seen more than TTL ago; it returns how many (a job). Rows a live
// socket carries stay however old their last_seen: they are paged past.
func (s *Service) ExpireStale(ctx context.Context) (int, error) {
	cutoff := s.db.Now().Add(-s.cfg.TTL)
	n := 0
	var after store.Presence
	for {
		stale, err := s.db.StalePresence(ctx, cutoff, after, 500)
		if err != nil || len(stale) == 0 {
			return n, err
		}
		after = stale[len(stale)-1]
		var gone []store.PresenceKey
		for _, p := range stale {
			if k := (store.PresenceKey{Scope: p.Scope, UserID: p.UserID}); !s.carried(k) {
				gone = append(gone, k)
			}
		}
		if len(gone) > 0 {
			err = s.db.Update(ctx, func(tx *store.Tx) error {
				for _, k := range gone {
					if s.carried(k) {
						continue // a socket took it up meanwhile
					}
					deleted, err := tx.DeletePresence(k, cutoff)
					if err != nil {
						return err
					}
					if deleted {
						tx.TouchRows(Key(k.Scope), k.UserID)
						n++
					}
				}
				return nil
			})
			if err != nil {
				return n, err
			}
		}
		if len(stale) < 500 {
			return n, nil
		}
	}
}
