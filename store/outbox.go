package store

import (
	"context"
	"database/sql"
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
func (tx *Tx) Enqueue(target, onConflict, body string) error {
	now := FormatTime(tx.now)
	_, err := tx.exec(`INSERT INTO outbox (target, on_conflict, body, created_at, next_attempt_at)
		VALUES (?, ?, ?, ?, ?)`, target, onConflict, body, now, now)
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", target, err)
	}
	return nil
}

// DueOutbox lists undelivered items whose next attempt is due, oldest first.
func (db *DB) DueOutbox(ctx context.Context, now time.Time, limit int) ([]OutboxItem, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT id, target, on_conflict, body, attempts, created_at FROM outbox
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
func (db *DB) OutboxPending(ctx context.Context) (pending int, err error) {
	err = db.read.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE delivered_at IS NULL`).Scan(&pending)
	return pending, err
}

// OutboxDelivered marks an item delivered.
func (tx *Tx) OutboxDelivered(id int64) error {
	_, err := tx.exec(`UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL
		WHERE id = ?`, FormatTime(tx.now), id)
	return err
}

// OutboxFailed records a failed attempt and when to try again.
func (tx *Tx) OutboxFailed(id int64, next time.Time, reason string) error {
	_, err := tx.exec(`UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
		WHERE id = ?`, FormatTime(next), reason, id)
	return err
}

// PurgeDelivered forgets items delivered before the cutoff.
func (tx *Tx) PurgeDelivered(before time.Time) (int64, error) {
	res, err := tx.exec(`DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?`, FormatTime(before))
	if err != nil {
		return 0, fmt.Errorf("purge outbox: %w", err)
	}
	return res.RowsAffected()
}

// OutboxStats are the outbox's figures for /metrics.
type OutboxStats struct {
	Pending   int
	OldestAge time.Duration // of the oldest pending item; 0 when none
}

// OutboxStats counts pending items and the age of the oldest.
func (db *DB) OutboxStats(ctx context.Context, now time.Time) (OutboxStats, error) {
	var st OutboxStats
	var oldest sql.NullString
	err := db.read.QueryRowContext(ctx, `SELECT count(*), min(created_at) FROM outbox WHERE delivered_at IS NULL`).Scan(&st.Pending, &oldest)
	if err != nil {
		return st, fmt.Errorf("outbox stats: %w", err)
	}
	if t, err := ParseTime(oldest.String); err == nil && oldest.Valid {
		st.OldestAge = max(0, now.Sub(t))
	}
	return st, nil
}
