// Package archive delivers the outbox to Supabase: each item is an upsert
// through Supabase REST (PostgREST) with the service role key, retried with
// exponential backoff until Supabase accepts it, across restarts.
package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/store"
)

// Config says where and how to deliver.
type Config struct {
	SupabaseURL    string // https://<ref>.supabase.co
	ServiceRoleKey string
	HTTPClient     *http.Client
	Clock          clockwork.Clock
	Logger         *slog.Logger
	// Backoff after the first failure, doubled per attempt up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	Batch               int // items per run
}

// Deliverer sends due outbox items.
type Deliverer struct {
	db  *store.DB
	cfg Config
}

// New returns a deliverer; it needs the URL and the service role key.
func New(db *store.DB, cfg Config) (*Deliverer, error) {
	if cfg.SupabaseURL == "" || cfg.ServiceRoleKey == "" {
		return nil, errors.New("archive: SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both needed")
	}
	cfg.SupabaseURL = strings.TrimRight(cfg.SupabaseURL, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 2 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Minute
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 50
	}
	return &Deliverer{db: db, cfg: cfg}, nil
}

// DeliverDue sends every due item once and records each outcome; it
// returns how many Supabase accepted.
func (d *Deliverer) DeliverDue(ctx context.Context) (int, error) {
	due, err := d.db.DueOutbox(ctx, d.cfg.Clock.Now(), d.cfg.Batch)
	if err != nil {
		return 0, err
	}
	delivered := 0
	for _, it := range due {
		sendErr := d.send(ctx, it)
		err := d.db.Update(ctx, func(tx *store.Tx) error {
			if sendErr == nil {
				return tx.OutboxDelivered(it.ID)
			}
			return tx.OutboxFailed(it.ID, tx.Now().Add(d.backoff(it.Attempts)), sendErr.Error())
		})
		if err != nil {
			return delivered, err
		}
		if sendErr != nil {
			d.cfg.Logger.Warn("archive delivery failed; will retry", "target", it.Target, "outbox_id", it.ID,
				"attempt", it.Attempts+1, "err", sendErr)
			continue
		}
		delivered++
	}
	return delivered, nil
}

// backoff is Backoff·2^attempts, at most MaxBackoff.
func (d *Deliverer) backoff(attempts int) time.Duration {
	b := d.cfg.Backoff
	for range min(attempts, 30) {
		if b *= 2; b >= d.cfg.MaxBackoff {
			return d.cfg.MaxBackoff
		}
	}
	return b
}

// send upserts one item: POST /rest/v1/<table>?on_conflict=<cols> with
// Prefer: resolution=merge-duplicates, as Supabase REST expects.
func (d *Deliverer) send(ctx context.Context, it store.OutboxItem) error {
	u := d.cfg.SupabaseURL + "/rest/v1/" + url.PathEscape(it.Target) + "?on_conflict=" + url.QueryEscape(it.OnConflict)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(it.Body))
	if err != nil {
		return err
	}
	req.Header.Set("apikey", d.cfg.ServiceRoleKey)
	req.Header.Set("Authorization", "Bearer "+d.cfg.ServiceRoleKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "resolution=merge-duplicates,return=minimal")
	res, err := d.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 2048))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("supabase answered %d: %s", res.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
