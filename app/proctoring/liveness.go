package proctoring

import (
	"context"
	"errors"
	"time"

	"invigil/store"
)

// connClosed disconnects every active session whose last socket this was.
func (s *Service) connClosed(conn uint64) {
	orphans := s.live.Close(conn)
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
		if !s.live.Carried(k) {
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
			if s.live.Carried(k) {
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
