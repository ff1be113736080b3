package proctoring

import (
	"context"
	"time"

	"invigil/store"
)

// batch bounds how many sessions one write expires or purges, so that a
// large exam's end does not hold the writer for long.
const batch = 200

// ExpireStale ends every session that nobody submitted, whose exam is over
// (closed, or past its ends_at) and that has been silent for StaleAfter
// since: it stays on the grid, disconnected, and its summary (status
// disconnected) goes to the outbox in the same write. An expired session
// is final. It returns how many it expired.
func (s *Service) ExpireStale(ctx context.Context) (int, error) {
	total := 0
	for {
		n, more := 0, false
		err := s.db.Update(ctx, func(tx *store.Tx) error {
			n = 0
			keys, err := tx.StaleSessions(tx.Now().Add(-s.cfg.StaleAfter), batch)
			if err != nil {
				return err
			}
			more = len(keys) == batch
			for _, k := range keys {
				expired, err := tx.ExpireSession(k.ExamID, k.StudentID)
				if err != nil {
					return err
				}
				if !expired {
					continue
				}
				sess, err := tx.Reader().Session(ctx, k.ExamID, k.StudentID)
				if err != nil {
					return err
				}
				touchSession(tx, sess)
				if err := enqueueSummary(tx, sess); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if !more {
			return total, nil
		}
	}
}

// PurgeArchived deletes the sessions (and their violations) whose summary
// reached Supabase before cutoff: they leave the grid and the stream. It
// returns how many sessions it deleted.
func (s *Service) PurgeArchived(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		var refs []store.SessionRef
		err := s.db.Update(ctx, func(tx *store.Tx) (err error) {
			if refs, err = tx.PurgeArchivedSessions(before, batch); err != nil {
				return err
			}
			for _, r := range refs {
				tx.TouchRows(sessionsKey(r.ExamID), r.ID)
				tx.Touch(sessionKey(r.ExamID, r.StudentID), violationsKey(r.ExamID))
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += len(refs)
		if len(refs) < batch {
			return total, nil
		}
	}
}
