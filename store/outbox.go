package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Sinks an outbox item can be delivered by.
const (
	SinkSupabase = "supabase" // an upsert through Supabase REST into Target
	SinkReminder = "reminder" // a signed POST to INVIGIL_REMINDER_URL
)

// OutboxItem is one delivery: for Supabase, rows to upsert into a table.
type OutboxItem struct {
	ID         int64
	Sink       string // SinkSupabase when empty
	Target     string // Supabase table (or the sink's own label)
	OnConflict string // its upsert key columns
	Body       string // JSON: an array of rows for Supabase
	// MsgID is the id the receiver deduplicates on (a signed POST's
	// webhook-id); "" when the body deduplicates itself (an upsert).
	MsgID string
	// RefTable and RefID name the row this item archives (e.g. the
	// exam_sessions row of a summary): once every item about it is
	// delivered, its archived_at is set and retention may purge it.
	RefTable, RefID string

	Attempts      int
	CreatedAt     string
	NextAttemptAt string
	LastStatus    int    // HTTP status of the last answer; 0: none (network error, or never tried)
	LastError     string // "" after a success or before any attempt
	RejectedAt    string // set while the last answer was a 4xx that retrying will not fix
}

// Enqueue adds a Supabase upsert, due at once. Call it in the transaction
// that made the change it reports, so that neither exists without the other.
func (tx *Tx) Enqueue(target, onConflict, body string) error {
	_, err := tx.EnqueueItem(OutboxItem{Target: target, OnConflict: onConflict, Body: body})
	return err
}

// EnqueueItem adds it.Sink's delivery of it, due at once, and returns its id.
// Call it in the transaction that made the change it reports.
func (tx *Tx) EnqueueItem(it OutboxItem) (int64, error) {
	if it.Sink == "" {
		it.Sink = SinkSupabase
	}
	if it.RefTable != "" && !archivedTables[it.RefTable] {
		return 0, fmt.Errorf("enqueue %s: %q is not an archived table", it.Target, it.RefTable)
	}
	now := FormatTime(tx.now)
	res, err := tx.exec(`INSERT INTO outbox (sink, target, on_conflict, body, msg_id, ref_table, ref_id, created_at, next_attempt_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, it.Sink, it.Target, it.OnConflict, it.Body, nullString(it.MsgID),
		nullString(it.RefTable), nullString(it.RefID), now, now)
	if err != nil {
		return 0, fmt.Errorf("enqueue %s: %w", it.Target, err)
	}
	if it.RefTable != "" {
		// A new item about the row: it is not archived until this one is.
		if _, err := tx.exec(`UPDATE `+it.RefTable+` SET archived_at = NULL WHERE id = ?`, it.RefID); err != nil {
			return 0, fmt.Errorf("enqueue %s: %w", it.Target, err)
		}
	}
	return res.LastInsertId()
}

const outboxColumns = `id, sink, target, on_conflict, body, coalesce(msg_id, ''), coalesce(ref_table, ''),
	coalesce(ref_id, ''), attempts, created_at, next_attempt_at, coalesce(last_status, 0), coalesce(last_error, ''),
	coalesce(rejected_at, '')`

func scanOutbox(sc interface{ Scan(...any) error }) (OutboxItem, error) {
	var it OutboxItem
	err := sc.Scan(&it.ID, &it.Sink, &it.Target, &it.OnConflict, &it.Body, &it.MsgID, &it.RefTable, &it.RefID,
		&it.Attempts, &it.CreatedAt, &it.NextAttemptAt, &it.LastStatus, &it.LastError, &it.RejectedAt)
	return it, err
}

// DueOutbox lists at most limit undelivered items of the given sinks whose
// next attempt is due, those waiting longest first, leaving out the ids in
// skip (items already on their way).
func (db *DB) DueOutbox(ctx context.Context, now time.Time, sinks []string, skip []int64, limit int) ([]OutboxItem, error) {
	s, err := json.Marshal(sinks)
	if err != nil {
		return nil, err
	}
	if skip == nil {
		skip = []int64{}
	}
	k, err := json.Marshal(skip)
	if err != nil {
		return nil, err
	}
	rows, err := db.read.QueryContext(ctx, `SELECT `+outboxColumns+` FROM outbox
		WHERE delivered_at IS NULL AND next_attempt_at <= ?
			AND sink IN (SELECT value FROM json_each(?)) AND id NOT IN (SELECT value FROM json_each(?))
		ORDER BY next_attempt_at, id LIMIT ?`, FormatTime(now), string(s), string(k), limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return collectRows(rows, scanOutbox)
}

// PendingOutbox lists at most limit undelivered items: those Supabase
// refused for good first, then the oldest.
func (db *DB) PendingOutbox(ctx context.Context, limit int) ([]OutboxItem, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE delivered_at IS NULL
		ORDER BY rejected_at IS NULL, id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return collectRows(rows, scanOutbox)
}

// scanner is a row to scan: *sql.Row or *sql.Rows.
type scanner = interface{ Scan(...any) error }

// collectRows scans every row of rows and closes them.
func collectRows[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("store: scan: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// OutboxPending counts items not yet delivered.
func (db *DB) OutboxPending(ctx context.Context) (pending int, err error) {
	err = db.read.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE delivered_at IS NULL`).Scan(&pending)
	return pending, err
}

// OutboxDelivered records an accepted attempt. The row the item archives
// is archived once no item about it is left undelivered.
func (tx *Tx) OutboxDelivered(id int64, status int) error {
	now := FormatTime(tx.now)
	_, err := tx.exec(`UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_status = ?,
		last_error = NULL, rejected_at = NULL WHERE id = ?`, now, nullInt(status), id)
	if err != nil {
		return fmt.Errorf("outbox %d delivered: %w", id, err)
	}
	var table, ref sql.NullString
	err = tx.tx.QueryRowContext(tx.ctx, `SELECT ref_table, ref_id FROM outbox WHERE id = ?`, id).Scan(&table, &ref)
	if err != nil || !table.Valid || !archivedTables[table.String] {
		return err
	}
	_, err = tx.exec(`UPDATE `+table.String+` SET archived_at = ?1 WHERE id = ?2 AND NOT EXISTS (
		SELECT 1 FROM outbox WHERE ref_table = ?3 AND ref_id = ?2 AND delivered_at IS NULL)`, now, ref.String, table.String)
	if err != nil {
		return fmt.Errorf("outbox %d: archive %s %s: %w", id, table.String, ref.String, err)
	}
	return nil
}

// OutboxFailed records a failed attempt: the answer's status (0 for none),
// why, when to try again, and whether the answer was a refusal that
// retrying will not fix (the item is kept and flagged, never dropped).
func (tx *Tx) OutboxFailed(id int64, next time.Time, status int, reason string, rejected bool) error {
	_, err := tx.exec(`UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_status = ?, last_error = ?,
		rejected_at = CASE WHEN ? THEN coalesce(rejected_at, ?) END
		WHERE id = ?`, FormatTime(next), nullInt(status), reason, rejected, FormatTime(tx.now), id)
	if err != nil {
		return fmt.Errorf("outbox %d failed: %w", id, err)
	}
	return nil
}

// PurgeDelivered forgets items delivered before the cutoff.
func (tx *Tx) PurgeDelivered(before time.Time) (int64, error) {
	res, err := tx.exec(`DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?`, FormatTime(before))
	if err != nil {
		return 0, fmt.Errorf("purge outbox: %w", err)
	}
	return res.RowsAffected()
}

// OutboxStats are the outbox's figures for /metrics and the admin page.
type OutboxStats struct {
	Pending   int
	Rejected  int           // pending items whose last answer was a lasting refusal
	OldestAge time.Duration // of the oldest pending item; 0 when none
}

// OutboxStats counts pending items and the age of the oldest.
func (db *DB) OutboxStats(ctx context.Context, now time.Time) (OutboxStats, error) {
	var st OutboxStats
	var oldest sql.NullString
	err := db.read.QueryRowContext(ctx, `SELECT count(*), count(rejected_at), min(created_at) FROM outbox
		WHERE delivered_at IS NULL`).Scan(&st.Pending, &st.Rejected, &oldest)
	if err != nil {
		return st, fmt.Errorf("outbox stats: %w", err)
	}
	if t, err := ParseTime(oldest.String); err == nil && oldest.Valid {
		st.OldestAge = max(0, now.Sub(t))
	}
	return st, nil
}

func nullInt(n int) any {
	if n == 0 {
		return nil
	}
	return n
}
