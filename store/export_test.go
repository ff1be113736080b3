package store

import "errors"

// QueueLen is how many writes wait for the writer (tests wait for a batch to form).
func (db *DB) QueueLen() int { return len(db.queue) }

// SlowStatement runs a statement that takes a while, the way every write's
// statements run (tests cancel the caller meanwhile).
func (tx *Tx) SlowStatement() error {
	_, err := tx.exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)
		INSERT INTO hook_receipts (id, received_at) SELECT 'slow', count(*) FROM n`)
	return err
}

// BreakTransaction ends the batch's transaction behind the writer's back,
// as SQLite itself does on some errors, and fails.
func (tx *Tx) BreakTransaction() error {
	if _, err := tx.exec(`ROLLBACK`); err != nil {
		return err
	}
	return errors.New("the transaction is gone")
}
