// Package archive delivers the outbox: what invigil owes others (session
// summaries and chat transcripts to Supabase REST, exam reminders to the
// platform's notification endpoint) waits in SQLite until they accept it.
//
// Delivery is per item, a few at a time, so that an item that fails or
// hangs never holds back the others: each request has its own timeout,
// each outcome is recorded by a write of its own (on a context no caller
// can cancel, so that every attempt counts), and a finished delivery makes
// room for the next due item at once. A failure is retried with exponential
// backoff and jitter, never sooner than the answer's Retry-After; an answer
// that retrying will not fix (a 4xx other than 408 and 429) keeps the item,
// flagged with that answer, and retries it at the backoff cap. Items never
// tried yet may share a request when their sink allows it (transcripts);
// once an item failed, it goes alone.
package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/metrics"
	"invigil/store"
)

// DefaultRequestTimeout bounds one request to Supabase: shorter than the
// deadline of any job that waits on one (jobs.Deadline), so that a hanging
// Supabase is a failed attempt, recorded, not a job killed mid-way.
const DefaultRequestTimeout = 10 * time.Second

// Config says where and how to deliver.
type Config struct {
	// SupabaseURL and ServiceRoleKey, both or neither, add the "supabase"
	// sink: upserts through Supabase REST.
	SupabaseURL    string // https://<ref>.supabase.co
	ServiceRoleKey string
	// BatchTargets are the Supabase tables whose never-tried items may
	// share one request; default chat_messages (transcripts).
	BatchTargets []string
	// ReminderURL and ReminderSecret (a whsec_ secret, or a comma list
	// whose first is used) add the "reminder" sink: signed POSTs.
	ReminderURL, ReminderSecret string
	// Sinks adds or replaces sinks by name (tests).
	Sinks map[string]Sink

	HTTPClient     *http.Client  // default: RequestTimeout, no redirects followed
	RequestTimeout time.Duration // one request's limit, default 10 s
	Concurrency    int           // requests at once, default 4
	// Backoff after the first failure, doubled per attempt up to MaxBackoff;
	// a lasting refusal is retried every MaxBackoff.
	Backoff, MaxBackoff time.Duration
	MaxRetryAfter       time.Duration // a longer Retry-After is cut to this; default 1 h
	BatchItems          int           // items per shared request, default 20
	BatchBytes          int           // body bytes per shared request, default 1 MiB
	// Jitter spreads a wait; default: uniformly in [d/2, d).
	Jitter func(d time.Duration) time.Duration

	Clock   clockwork.Clock
	Logger  *slog.Logger
	Metrics *metrics.Metrics // nil: a private set
}

// Deliverer sends due outbox items. It is safe for concurrent use.
type Deliverer struct {
	db    *store.DB
	cfg   Config
	sinks map[string]Sink
	names []string // of sinks, for the due query
	log   *slog.Logger
	m     *metrics.Metrics

	base   context.Context // every request's parent: cancelled by Stop
	cancel context.CancelFunc

	mu       sync.Mutex
	inflight map[int64]struct{}
	busy     int           // requests under way
	idle     chan struct{} // closed when busy drops to 0
	pumping  bool
	again    bool
	stopped  bool
	wg       sync.WaitGroup

	delivered atomic.Int64
}

// New returns a deliverer with the sinks cfg names; it needs at least one.
func New(db *store.DB, cfg Config) (*Deliverer, error) {
	if (cfg.SupabaseURL == "") != (cfg.ServiceRoleKey == "") {
		return nil, errors.New("archive: SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both needed")
	}
	setDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	setDefault(&cfg.Concurrency, 4)
	setDefault(&cfg.Backoff, 2*time.Second)
	setDefault(&cfg.MaxBackoff, 10*time.Minute)
	setDefault(&cfg.MaxRetryAfter, time.Hour)
	setDefault(&cfg.BatchItems, 20)
	setDefault(&cfg.BatchBytes, 1<<20)
	if cfg.BatchTargets == nil {
		cfg.BatchTargets = []string{"chat_messages"}
	}
	if cfg.Jitter == nil {
		cfg.Jitter = equalJitter
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout: cfg.RequestTimeout,
			// A redirect is a misconfigured URL, and following one would
			// turn the POST into a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	sinks := map[string]Sink{}
	if cfg.SupabaseURL != "" {
		sinks[store.SinkSupabase] = Supabase(cfg.SupabaseURL, cfg.ServiceRoleKey, cfg.BatchTargets...)
	}
	if cfg.ReminderURL != "" {
		s, err := SignedPost(cfg.ReminderURL, cfg.ReminderSecret, cfg.Clock)
		if err != nil {
			return nil, fmt.Errorf("archive: INVIGIL_REMINDER_URL: %w", err)
		}
		sinks[store.SinkReminder] = s
	}
	for name, s := range cfg.Sinks {
		sinks[name] = s
	}
	if len(sinks) == 0 {
		return nil, errors.New("archive: nothing to deliver to: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or INVIGIL_REMINDER_URL")
	}
	d := &Deliverer{db: db, cfg: cfg, sinks: sinks, log: cfg.Logger, m: cfg.Metrics,
		inflight: map[int64]struct{}{}, idle: make(chan struct{})}
	for name := range sinks {
		d.names = append(d.names, name)
	}
	sort.Strings(d.names)
	d.base, d.cancel = context.WithCancel(context.Background())
	for _, class := range []string{"2xx", "4xx", "5xx", "network"} {
		d.m.OutboxAttempts.WithLabelValues(class)
	}
	return d, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Sinks are the sinks this deliverer serves (items of others wait).
func (d *Deliverer) Sinks() []string { return append([]string(nil), d.names...) }

// Kick starts a delivery for due items while requests are free, and
// returns how many items it started; it does not wait for them. Each
// delivery, when done, kicks again, so a backlog drains at full speed
// between two runs of the job that kicks.
func (d *Deliverer) Kick(ctx context.Context) (int, error) {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return 0, nil
	}
	if d.pumping {
		d.again = true // the running pass will look once more
		d.mu.Unlock()
		return 0, nil
	}
	d.pumping = true
	d.mu.Unlock()
	total := 0
	for {
		n, err := d.fill(ctx)
		total += n
		d.mu.Lock()
		if err != nil || !d.again {
			d.pumping = false
			d.mu.Unlock()
			return total, err
		}
		d.again = false
		d.mu.Unlock()
	}
}

// fill starts requests for due items into the free slots.
func (d *Deliverer) fill(ctx context.Context) (int, error) {
	d.mu.Lock()
	free := d.cfg.Concurrency - d.busy
	skip := make([]int64, 0, len(d.inflight))
	for id := range d.inflight {
		skip = append(skip, id)
	}
	d.mu.Unlock()
	if free <= 0 {
		return 0, nil
	}
	due, err := d.db.DueOutbox(ctx, d.cfg.Clock.Now(), d.names, skip, min(200, free*d.cfg.BatchItems))
	if err != nil {
		return 0, err
	}
	started := 0
	for _, g := range d.group(due) {
		if !d.claim(g) {
			break
		}
		started += len(g)
		go d.deliver(g)
	}
	return started, nil
}

// claim takes a request slot for g and marks its items on their way.
func (d *Deliverer) claim(g []store.OutboxItem) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.busy >= d.cfg.Concurrency {
		return false
	}
	d.busy++
	for _, it := range g {
		d.inflight[it.ID] = struct{}{}
	}
	d.wg.Add(1)
	return true
}

// release frees g's slot.
func (d *Deliverer) release(g []store.OutboxItem) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.busy--
	for _, it := range g {
		delete(d.inflight, it.ID)
	}
	if d.busy == 0 {
		close(d.idle)
		d.idle = make(chan struct{})
	}
}

// group puts items into requests: alone, or, for never-tried items of a
// sink and target that allow it, several to a request.
func (d *Deliverer) group(items []store.OutboxItem) [][]store.OutboxItem {
	type key struct{ sink, target, onConflict string }
	var out [][]store.OutboxItem
	open := map[key]int{}
	size := map[int]int{}
	for _, it := range items {
		if it.Attempts > 0 || !d.sinks[it.Sink].CanBatch(it.Target) {
			out = append(out, []store.OutboxItem{it})
			continue
		}
		k := key{it.Sink, it.Target, it.OnConflict}
		if i, ok := open[k]; ok && len(out[i]) < d.cfg.BatchItems && size[i]+len(it.Body) <= d.cfg.BatchBytes {
			out[i] = append(out[i], it)
			size[i] += len(it.Body)
			continue
		}
		open[k] = len(out)
		size[len(out)] = len(it.Body)
		out = append(out, []store.OutboxItem{it})
	}
	return out
}

// deliver sends one request and records its outcome for each item.
func (d *Deliverer) deliver(g []store.OutboxItem) {
	defer d.wg.Done()
	out := d.send(g)
	d.record(g, out)
	d.release(g)
	if _, err := d.Kick(d.base); err != nil && d.base.Err() == nil {
		d.log.Error("outbox: read due items", "err", err)
	}
}

// send makes one request for g, on a context of its own.
func (d *Deliverer) send(g []store.OutboxItem) outcome {
	ctx, cancel := context.WithTimeout(d.base, d.cfg.RequestTimeout)
	defer cancel()
	req, err := d.sinks[g[0].Sink].Request(ctx, g)
	if err != nil {
		return outcome{err: err}
	}
	return do(d.cfg.HTTPClient, req, d.cfg.Clock.Now)
}

// record writes the attempt's outcome for each item, on a context no
// caller can cancel: a request that timed out is an attempt too.
func (d *Deliverer) record(g []store.OutboxItem, out outcome) {
	class := out.class()
	d.m.OutboxAttempts.WithLabelValues(class).Inc()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lasting := out.lasting()
	err := d.db.Update(ctx, func(tx *store.Tx) error {
		now := tx.Now()
		for _, it := range g {
			var err error
			switch {
			case out.ok():
				err = tx.OutboxDelivered(it.ID, out.status)
			case lasting && len(g) > 1:
				// One bad row refuses a whole batch: each goes alone, now.
				err = tx.OutboxFailed(it.ID, now, out.status, "refused in a batch, retried alone: "+out.describe(), false)
			case lasting:
				err = tx.OutboxFailed(it.ID, now.Add(d.cfg.MaxBackoff), out.status, out.describe(), true)
			default:
				err = tx.OutboxFailed(it.ID, now.Add(d.wait(it.Attempts, out)), out.status, out.describe(), false)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		d.log.Error("outbox: could not record an attempt; its items stay due", "items", len(g), "class", class, "err", err)
		return
	}
	if out.ok() {
		d.delivered.Add(int64(len(g)))
		d.m.OutboxDelivered.Add(float64(len(g)))
		return
	}
	level := slog.LevelWarn
	if lasting && len(g) == 1 {
		level = slog.LevelError
	}
	d.log.Log(ctx, level, "outbox: delivery failed; will retry", "sink", g[0].Sink, "target", g[0].Target,
		"outbox_id", g[0].ID, "items", len(g), "attempt", g[0].Attempts+1, "status", out.status, "class", class,
		"lasting", lasting, "err", out.err)
}

// wait is how long an item that failed for the (attempts+1)th time waits:
// the jittered backoff, and never less than the answer's Retry-After.
func (d *Deliverer) wait(attempts int, out outcome) time.Duration {
	w := d.cfg.Jitter(backoff(d.cfg.Backoff, d.cfg.MaxBackoff, attempts))
	if out.hasRetryAfter {
		w = max(w, min(out.retryAfter, d.cfg.MaxRetryAfter))
	}
	return w
}

// DeliverDue delivers every due item, waiting for each outcome (tests,
// and a last chance at shutdown); it returns how many items were
// delivered meanwhile. It stops waiting when ctx ends.
func (d *Deliverer) DeliverDue(ctx context.Context) (int, error) {
	before := d.delivered.Load()
	n := func() int { return int(d.delivered.Load() - before) }
	for {
		if _, err := d.Kick(ctx); err != nil {
			return n(), err
		}
		if err := d.waitIdle(ctx); err != nil {
			return n(), err
		}
		due, err := d.db.DueOutbox(ctx, d.cfg.Clock.Now(), d.names, nil, 1)
		if err != nil {
			return n(), err
		}
		// Nothing due may mean a delivery recorded but not yet counted:
		// done only when nothing is under way either.
		d.mu.Lock()
		stopped, busy := d.stopped, d.busy
		d.mu.Unlock()
		if stopped || (len(due) == 0 && busy == 0) {
			return n(), nil
		}
	}
}

// Wait waits until no request is under way (tests).
func (d *Deliverer) Wait(ctx context.Context) error { return d.waitIdle(ctx) }

func (d *Deliverer) waitIdle(ctx context.Context) error {
	d.mu.Lock()
	if d.busy == 0 {
		d.mu.Unlock()
		return nil
	}
	ch := d.idle
	d.mu.Unlock()
	select {
	case <-ch:
		return d.waitIdle(ctx) // a finished delivery may have started another
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop starts no more requests and waits for those under way until ctx
// ends, then cancels them; every outcome is recorded before it returns.
func (d *Deliverer) Stop(ctx context.Context) {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		d.cancel()
		<-done
	}
	d.cancel()
}

// describe is an attempt's outcome for last_error (admins only: a
// refusal's answer may quote the rows).
func (o outcome) describe() string {
	if o.err != nil && o.status == 0 {
		return o.err.Error()
	}
	msg := fmt.Sprintf("answered %d", o.status)
	if o.answer != "" {
		msg += ": " + strings.TrimSpace(o.answer)
	}
	return msg
}
