package app

import (
	"context"
	"encoding/json"
	"time"

	"invigil/app/archive"
	"invigil/app/metrics"
	"invigil/app/transport"
	"invigil/store"
)

// newArchive builds the outbox's deliverer for the sinks configured:
// Supabase REST with the service role key (not in --demo), and
// INVIGIL_REMINDER_URL (signed with the first INVIGIL_WEBHOOK_SECRET).
// Without either it is nil and the outbox waits.
func newArchive(db *store.DB, cfg Config, d Deps, m *metrics.Metrics) (*archive.Deliverer, error) {
	ac := archive.Config{Clock: d.Clock, Logger: d.Logger, Metrics: m,
		ReminderURL: cfg.ReminderURL, ReminderSecret: cfg.WebhookSecret}
	if cfg.ServiceRoleKey != "" && !cfg.Demo {
		ac.SupabaseURL, ac.ServiceRoleKey = cfg.SupabaseURL, cfg.ServiceRoleKey
	} else if !cfg.Demo {
		d.Logger.Warn("SUPABASE_SERVICE_ROLE_KEY is not set: summaries wait in the outbox until it is")
	}
	if ac.SupabaseURL == "" && ac.ReminderURL == "" {
		return nil, nil
	}
	return archive.New(db, ac)
}

// adminEndpoints are GET /api/admin/{name}, for admins.
func (a *App) adminEndpoints() map[string]transport.AdminHandler {
	return map[string]transport.AdminHandler{
		"jobs":   a.adminJobs,
		"outbox": a.adminOutbox,
	}
}

// JobView is one scheduled job at GET /api/admin/jobs.
type JobView struct {
	Name           string  `json:"name"`
	EveryS         float64 `json:"every_s"`
	Runs           int     `json:"runs"`
	Failures       int     `json:"failures"`
	LastStartedAt  *string `json:"last_started_at"`
	LastFinishedAt *string `json:"last_finished_at"`
	LastDurationMs int64   `json:"last_duration_ms"`
	LastRows       int     `json:"last_rows"`
	LastError      *string `json:"last_error"`
	LastOKAt       *string `json:"last_ok_at"`
}

func (a *App) adminJobs(ctx context.Context) (any, error) {
	ms, err := a.DB.JobsMeta(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]JobView, len(ms))
	for i, m := range ms {
		out[i] = JobView{Name: m.Name, EveryS: m.Every.Seconds(), Runs: m.Runs, Failures: m.Failures,
			LastStartedAt: optional(m.LastStartedAt), LastFinishedAt: optional(m.LastFinishedAt),
			LastDurationMs: m.LastDuration.Milliseconds(), LastRows: m.LastRows, LastError: optional(m.LastError),
			LastOKAt: optional(m.LastOKAt)}
	}
	return out, nil
}

// OutboxView is GET /api/admin/outbox: the counts, and the items not yet
// delivered (at most 200: those refused for good first, then the oldest).
type OutboxView struct {
	Pending        int              `json:"pending"`
	Rejected       int              `json:"rejected"`
	OldestPendingS float64          `json:"oldest_pending_s"`
	Sinks          []string         `json:"sinks"` // served by this process; other items wait
	Items          []OutboxItemView `json:"items"`
}

// OutboxItemView is one undelivered item. Its body is left out (it may be
// a chat transcript); rows and bytes say how big it is.
type OutboxItemView struct {
	ID            int64   `json:"id"`
	Sink          string  `json:"sink"`
	Target        string  `json:"target"`
	OnConflict    string  `json:"on_conflict,omitempty"`
	MsgID         string  `json:"msg_id,omitempty"`
	Ref           string  `json:"ref,omitempty"` // table/id of the row it archives
	Rows          int     `json:"rows"`
	Bytes         int     `json:"bytes"`
	CreatedAt     string  `json:"created_at"`
	Attempts      int     `json:"attempts"`
	NextAttemptAt string  `json:"next_attempt_at"`
	LastStatus    *int    `json:"last_status"`
	LastError     *string `json:"last_error"`
	RejectedAt    *string `json:"rejected_at"` // a 4xx that retrying will not fix: retried at the backoff cap
}

func (a *App) adminOutbox(ctx context.Context) (any, error) {
	st, err := a.DB.OutboxStats(ctx, a.clock.Now())
	if err != nil {
		return nil, err
	}
	items, err := a.DB.PendingOutbox(ctx, 200)
	if err != nil {
		return nil, err
	}
	v := OutboxView{Pending: st.Pending, Rejected: st.Rejected, OldestPendingS: st.OldestAge.Round(time.Millisecond).Seconds(),
		Sinks: []string{}, Items: make([]OutboxItemView, len(items))}
	if a.Archive != nil {
		v.Sinks = a.Archive.Sinks()
	}
	for i, it := range items {
		iv := OutboxItemView{ID: it.ID, Sink: it.Sink, Target: it.Target, OnConflict: it.OnConflict, MsgID: it.MsgID,
			Rows: 1, Bytes: len(it.Body), CreatedAt: it.CreatedAt, Attempts: it.Attempts, NextAttemptAt: it.NextAttemptAt,
			LastError: optional(it.LastError), RejectedAt: optional(it.RejectedAt)}
		if it.RefTable != "" {
			iv.Ref = it.RefTable + "/" + it.RefID
		}
		var rows []json.RawMessage
		if json.Unmarshal([]byte(it.Body), &rows) == nil {
			iv.Rows = len(rows)
		}
		if it.LastStatus != 0 {
			s := it.LastStatus
			iv.LastStatus = &s
		}
		v.Items[i] = iv
	}
	return v, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
