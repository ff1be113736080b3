package proctoring

import (
	"context"
	"errors"
	"time"

	"invigil/store"
)

// attach records that a socket carries a session, so that its close (or its
// silence, which closes it) shows the student disconnected. HTTP callers
// (conn 0) are judged by their heartbeats alone.
func (s *Service) attach(conn uint64, k store.SessionKey) {
	if conn == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.byConn[conn]
	if set == nil {
		set = map[store.SessionKey]struct{}{}
		s.byConn[conn] = set
	}
	if _, ok := set[k]; !ok {
		set[k] = struct{}{}
		s.carriers[k]++
	}
}

// carried reports whether a live socket carries the session.
func (s *Service) carried(k store.SessionKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.carriers[k] > 0
}

// connClosed disconnects every active session whose last socket this was.
func (s *Service) connClosed(conn uint64) {
	s.mu.Lock()
	var orphans []store.SessionKey
	for k := range s.byConn[conn] {
		if s.carriers[k]--; s.carriers[k] <= 0 {
			delete(s.carriers, k)
			orphans = append(orphans, k)
		}
	}
	delete(s.byConn, conn)
	s.mu.Unlock()
	if len(orphans) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.disconnect(ctx, orphans, time.Time{}); err != nil {
		s.log.Error("disconnect on socket close", "err", err)
	}
}

// SweepSilent disconnects active sessions that no socket carries and that
// sent no heartbeat for DisconnectAfter. It returns how many it disconnected.
func (s *Service) SweepSilent(ctx context.Context) (int, error) {
	cutoff := s.db.Now().Add(-s.cfg.DisconnectAfter)
	silent, err := s.db.SilentSessions(ctx, cutoff)
	if err != nil {
		return 0, err
	}
	orphans := silent[:0]
	for _, k := range silent {
		if !s.carried(k) {
			orphans = append(orphans, k)
		}
	}
	return s.disconnect(ctx, orphans, cutoff)
}

// disconnect marks sessions disconnected if they are still active, carried
// by no socket (and, with a cutoff, still silent since it), all re-checked
// inside the write: a heartbeat that just arrived, or a reload's new socket
// that took the session over, wins.
func (s *Service) disconnect(ctx context.Context, keys []store.SessionKey, cutoff time.Time) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	n := 0
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		for _, k := range keys {
			sess, err := tx.Reader().Session(ctx, k.ExamID, k.StudentID)
			if err != nil || sess.Status != store.StatusActive {
				continue
			}
			if !cutoff.IsZero() && sess.LastHeartbeat >= store.FormatTime(cutoff) {
				continue
			}
			if s.carried(k) {
				continue
			}
			if err := tx.SetSessionStatus(k.ExamID, k.StudentID, store.StatusDisconnected); err != nil {
				return err
			}
			touchSession(tx, sess)
			n++
		}
		return nil
	})
	return n, err
}

// ResetSession deletes a student's session and its violations, as if they
// had never joined. Only the demo uses it, to let simulated students sit
// the exam again; no client function reaches it.
func (s *Service) ResetSession(ctx context.Context, examID, studentID string) error {
	return s.db.Update(ctx, func(tx *store.Tx) error {
		sess, err := tx.Reader().Session(ctx, examID, studentID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		touchSession(tx, sess)
		tx.Touch(violationsKey(examID)) // its violations leave the stream, however many
		return tx.DeleteSession(examID, studentID)
	})
}
