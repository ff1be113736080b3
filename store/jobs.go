package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// JobRun is one finished run of a scheduled job.
type JobRun struct {
	Name              string
	Started, Finished time.Time
	Rows              int
	Err               string // "" on success
}

// JobMeta is what jobs_meta holds about a job.
type JobMeta struct {
	Name           string
	Every          time.Duration
	Runs, Failures int
	LastStartedAt  string // "" before the first run
	LastFinishedAt string
	LastDuration   time.Duration
	LastRows       int
	LastError      string // "" when the last run succeeded
	LastOKAt       string
}

// RegisterJobs records the jobs scheduled now and their periods, and forgets
// jobs no longer scheduled.
func (tx *Tx) RegisterJobs(every map[string]time.Duration) error {
	names := make([]string, 0, len(every))
	for name, d := range every {
		names = append(names, name)
		if _, err := tx.exec(`INSERT INTO jobs_meta (name, every_ms) VALUES (?, ?)
			ON CONFLICT (name) DO UPDATE SET every_ms = excluded.every_ms`, name, d.Milliseconds()); err != nil {
			return fmt.Errorf("register job %s: %w", name, err)
		}
	}
	b, err := json.Marshal(names)
	if err != nil {
		return err
	}
	if _, err := tx.exec(`DELETE FROM jobs_meta WHERE name NOT IN (SELECT value FROM json_each(?))`, string(b)); err != nil {
		return fmt.Errorf("forget old jobs: %w", err)
	}
	return nil
}

// RecordJobRun stores a finished run.
func (tx *Tx) RecordJobRun(r JobRun) error {
	var lastErr any
	if r.Err != "" {
		lastErr = r.Err
	}
	finished := FormatTime(r.Finished)
	_, err := tx.exec(`UPDATE jobs_meta SET runs = runs + 1, failures = failures + (?1 IS NOT NULL),
			last_started_at = ?2, last_finished_at = ?3, last_duration_ms = ?4, last_rows = ?5, last_error = ?1,
			last_ok_at = CASE WHEN ?1 IS NULL THEN ?3 ELSE last_ok_at END
		WHERE name = ?6`, lastErr, FormatTime(r.Started), finished, r.Finished.Sub(r.Started).Milliseconds(), r.Rows, r.Name)
	if err != nil {
		return fmt.Errorf("record job %s: %w", r.Name, err)
	}
	return nil
}

// JobsMeta reads every job's record, by name.
func (db *DB) JobsMeta(ctx context.Context) ([]JobMeta, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT name, every_ms, runs, failures, coalesce(last_started_at, ''),
		coalesce(last_finished_at, ''), coalesce(last_duration_ms, 0), coalesce(last_rows, 0), coalesce(last_error, ''),
		coalesce(last_ok_at, '') FROM jobs_meta ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read jobs_meta: %w", err)
	}
	return collectRows(rows, func(sc scanner) (JobMeta, error) {
		var m JobMeta
		var every, dur int64
		err := sc.Scan(&m.Name, &every, &m.Runs, &m.Failures, &m.LastStartedAt, &m.LastFinishedAt, &dur, &m.LastRows,
			&m.LastError, &m.LastOKAt)
		m.Every, m.LastDuration = time.Duration(every)*time.Millisecond, time.Duration(dur)*time.Millisecond
		return m, err
	})
}
