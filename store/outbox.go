package store

import (
	"context"
	"fmt"
	"time"
)

// OutboxItem is one delivery to Supabase: rows to upsert into a table.
type OutboxItem struct {
	ID         int64
	Target     string
	OnConflict string
	Body       string // JSON array of rows
	Attempts   int
	CreatedAt  string
}

// Enqueue adds a delivery, due at once. Call it in the transaction that made
// the change it reports, so that neither exists without the other.
func (tx *Tx) Enqueue(ctx context.Context, target, onConflict, body string) error {
	now := FormatTime(tx.now)
	_, err := tx.tx.ExecContext(ctx, `INSERT INTO outbox (target, on_conflict, body, created_at, next_attempt_at)
		VALUES (?, ?, ?, ?, ?)`, target, onConflict, body, now, now)
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", target, err)
	}
	return nil
}

// DueOutbox lists undelivered items whose next attempt is due, oldest first.
func (r *Reader) DueOutbox(ctx context.Context, now time.Time, limit int) ([]OutboxItem, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT id, target, on_conflict, body, attempts, created_at FROM outbox
		WHERE delivered_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?`, FormatTime(now), limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxItem
	for rows.Next() {
		var it OutboxItem
		if err := rows.Scan(&it.ID, &it.Target, &it.OnConflict, &it.Body, &it.Attempts, &it.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan outbox: %w", err)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// OutboxPending counts items not yet delivered.
func (r *Reader) OutboxPending(ctx context.Context) (pending int, err error) {
	err = r.q.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE delivered_at IS NULL`).Scan(&pending)
	return pending, err
}

// OutboxDelivered marks an item delivered.
func (tx *Tx) OutboxDelivered(ctx context.Context, id int64) error {
	_, err := tx.tx.ExecContext(ctx, `UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL
		WHERE id = ?`, FormatTime(tx.now), id)
	return err
}

// OutboxFailed records a failed attempt and when to try again.
func (tx *Tx) OutboxFailed(ctx context.Context, id int64, next time.Time, reason string) error {
	_, err := tx.tx.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
		WHERE id = ?`, FormatTime(next), reason, id)
	return err
}

// PurgeDelivered forgets items delivered before the cutoff.
func (tx *Tx) PurgeDelivered(ctx context.Context, before time.Time) (int64, error) {
	res, err := tx.tx.ExecContext(ctx, `DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?`, FormatTime(before))
	if err != nil {
		return 0, fmt.Errorf("purge outbox: %w", err)
	}
	return res.RowsAffected()
}
