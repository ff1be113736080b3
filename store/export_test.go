package store

import (
	"errors"
	"fmt"
)

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

// QueryForTest runs a query on the reader pool and returns each row's last column.
func (db *DB) QueryForTest(q string, args ...any) ([]string, error) {
	rows, err := db.read.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		rows.Scan(ptrs...)
		out = append(out, fmt.Sprint(vals[len(vals)-1]))
	}
	return out, rows.Err()
}
