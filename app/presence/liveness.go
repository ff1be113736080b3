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
	// Under s.mu, so that two scope moves of one socket leave one scope each.
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.current[conn]; move && ok && old.Scope != k.Scope && s.live.Detach(conn, old) {
		left = old.Scope
	}
	s.live.Attach(conn, k)
	s.current[conn] = k
	return left
}

// connClosed shows the socket's user offline, at once, in every scope no
// other socket of theirs carries.
func (s *Service) connClosed(conn uint64) {
	s.mu.Lock()
	delete(s.current, conn)
	orphans := s.live.Close(conn)
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
		s.log.Error("presence offline on socket close", "user_id", orphans[0].UserID, "err", err)
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
			if k := (store.PresenceKey{Scope: p.Scope, UserID: p.UserID}); !s.live.Carried(k) {
				gone = append(gone, k)
			}
		}
		if len(gone) > 0 {
			err = s.db.Update(ctx, func(tx *store.Tx) error {
				for _, k := range gone {
					if s.live.Carried(k) {
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
