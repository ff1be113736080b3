package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Presence is one user's presence in one scope.
type Presence struct {
	Scope       string
	UserID      string
	DisplayName string
	Role        string
	Online      bool
	LastSeen    string
	TypingUntil string // "" when not typing
}

// PresenceKey names one presence row.
type PresenceKey struct{ Scope, UserID string }

const presenceColumns = `scope, user_id, display_name, role, online, last_seen, coalesce(typing_until, '')`

func scanPresence(sc scanner) (Presence, error) {
	var p Presence
	err := sc.Scan(&p.Scope, &p.UserID, &p.DisplayName, &p.Role, &p.Online, &p.LastSeen, &p.TypingUntil)
	return p, err
}

func scanPresenceKey(sc scanner) (PresenceKey, error) {
	var k PresenceKey
	err := sc.Scan(&k.Scope, &k.UserID)
	return k, err
}

// PresenceList reads a scope's presence rows, by display name, at most limit.
func (db *DB) PresenceList(ctx context.Context, scope string, limit int) ([]Presence, error) {
	return query(ctx, db.read, scanPresence, `SELECT `+presenceColumns+` FROM presence WHERE scope = ?
		ORDER BY display_name, user_id LIMIT ?`, scope, limit)
}

// PresenceByID reads a scope's presence rows of the users among ids.
func (db *DB) PresenceByID(ctx context.Context, scope string, ids []string) ([]Presence, error) {
	b, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	return query(ctx, db.read, scanPresence, presenceByIDSQL, scope, string(b))
}

// TouchPresence marks a user present and online in a scope now. A typing
// flag is left as it is; typingUntil, when not empty, sets one.
func (tx *Tx) TouchPresence(p Presence) error {
	_, err := tx.exec(`INSERT INTO presence (scope, user_id, display_name, role, online, last_seen, typing_until)
		VALUES (?, ?, ?, ?, 1, ?, ?)
		ON CONFLICT (scope, user_id) DO UPDATE SET display_name = excluded.display_name, role = excluded.role,
			online = 1, last_seen = excluded.last_seen, typing_until = coalesce(excluded.typing_until, presence.typing_until)`,
		p.Scope, p.UserID, p.DisplayName, p.Role, FormatTime(tx.now), nullString(p.TypingUntil))
	if err != nil {
		return fmt.Errorf("touch presence %s/%s: %w", p.Scope, p.UserID, err)
	}
	return nil
}

// ClearTyping clears a user's typing flag in a scope; it reports whether
// there was one.
func (tx *Tx) ClearTyping(k PresenceKey) (bool, error) {
	res, err := tx.exec(`UPDATE presence SET typing_until = NULL WHERE scope = ? AND user_id = ? AND typing_until IS NOT NULL`,
		k.Scope, k.UserID)
	if err != nil {
		return false, fmt.Errorf("clear typing %s/%s: %w", k.Scope, k.UserID, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SetOffline shows a user offline (and not typing) in a scope, seen now;
// it reports whether they were shown online.
func (tx *Tx) SetOffline(k PresenceKey) (bool, error) {
	res, err := tx.exec(`UPDATE presence SET online = 0, typing_until = NULL, last_seen = ?
		WHERE scope = ? AND user_id = ? AND online = 1`, FormatTime(tx.now), k.Scope, k.UserID)
	if err != nil {
		return false, fmt.Errorf("set %s/%s offline: %w", k.Scope, k.UserID, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// ExpireTyping clears every typing flag due by now and returns whose.
func (tx *Tx) ExpireTyping() ([]PresenceKey, error) {
	return query(tx.ctx, tx.tx, scanPresenceKey, `UPDATE presence SET typing_until = NULL
		WHERE typing_until IS NOT NULL AND typing_until <= ? RETURNING scope, user_id`, FormatTime(tx.now))
}

// StalePresence lists presence rows last seen before cutoff, oldest first,
// at most limit, from just after the row after (its last_seen and key; the
// zero values start from the oldest): a caller that skips rows (those a
// live socket carries) pages through them all.
func (db *DB) StalePresence(ctx context.Context, cutoff time.Time, after Presence, limit int) ([]Presence, error) {
	return query(ctx, db.read, scanPresence, `SELECT `+presenceColumns+` FROM presence
		WHERE last_seen < ? AND (last_seen, scope, user_id) > (?, ?, ?)
		ORDER BY last_seen, scope, user_id LIMIT ?`,
		FormatTime(cutoff), after.LastSeen, after.Scope, after.UserID, limit)
}

// DeletePresence removes a presence row if it was still last seen before
// cutoff; it reports whether it did.
func (tx *Tx) DeletePresence(k PresenceKey, cutoff time.Time) (bool, error) {
	res, err := tx.exec(`DELETE FROM presence WHERE scope = ? AND user_id = ? AND last_seen < ?`,
		k.Scope, k.UserID, FormatTime(cutoff))
	if err != nil {
		return false, fmt.Errorf("expire presence %s/%s: %w", k.Scope, k.UserID, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
