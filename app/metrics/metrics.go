// Package metrics holds invigil's Prometheus metrics: one registry per
// process (no global state), the Go and process collectors, and the
// counters and histograms every part of the server reports to. Names are
// the contract of deploy/alerts.yml and the Grafana dashboard.
package metrics

import (
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the process's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	Calls        *prometheus.CounterVec   // fn, code
	CallDuration *prometheus.HistogramVec // fn
	Hooks        *prometheus.CounterVec   // hook, code

	Sockets     *prometheus.GaugeVec // role
	SlowClosed  prometheus.Counter
	Shed        prometheus.Counter
	PushLatency prometheus.Histogram

	OutboxDelivered prometheus.Counter
	OutboxAttempts  *prometheus.CounterVec // class

	JobRuns     *prometheus.CounterVec // job
	JobErrors   *prometheus.CounterVec // job
	JobDuration *prometheus.HistogramVec

	StoreBatch  prometheus.Histogram
	StoreCommit prometheus.Histogram
}

// latency buckets from 0.5 ms to 10 s.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New makes the metrics and registers them with a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invigil_calls_total", Help: "Function calls by function and result code (ok or a contract error code).",
		}, []string{"fn", "code"}),
		CallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "invigil_call_duration_seconds", Help: "Function call latency in the server.", Buckets: latencyBuckets,
		}, []string{"fn"}),
		Hooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invigil_hooks_total", Help: "Inbound hook deliveries by hook and result code.",
		}, []string{"hook", "code"}),
		Sockets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invigil_ws_connections", Help: "Open WebSocket connections by the role signed in on them.",
		}, []string{"role"}),
		SlowClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "invigil_ws_slow_closed_total", Help: "Sockets closed because they could not keep up with their frames.",
		}),
		Shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "invigil_shed_total", Help: "New sockets, subscriptions and queries refused (rate_limited) because the server was past its capacity.",
		}),
		PushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "invigil_push_latency_seconds", Help: "From a change's commit to the frame that carries it written to a socket.",
			Buckets: latencyBuckets,
		}),
		OutboxDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "invigil_outbox_delivered_total", Help: "Outbox items Supabase accepted.",
		}),
		OutboxAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invigil_outbox_attempts_total", Help: "Delivery attempts to Supabase by outcome class (2xx, 4xx, 5xx, network).",
		}, []string{"class"}),
		JobRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invigil_job_runs_total", Help: "Scheduled job runs.",
		}, []string{"job_name"}),
		JobErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invigil_job_errors_total", Help: "Scheduled job runs that failed.",
		}, []string{"job_name"}),
		JobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "invigil_job_duration_seconds", Help: "Scheduled job run time.", Buckets: latencyBuckets,
		}, []string{"job_name"}),
		StoreBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "invigil_store_batch_size", Help: "Writes per group commit.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		StoreCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "invigil_store_commit_seconds", Help: "Time to run and commit one group-committed batch.",
			Buckets: latencyBuckets,
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Calls, m.CallDuration, m.Hooks, m.Sockets, m.SlowClosed, m.Shed, m.PushLatency,
		m.OutboxDelivered, m.OutboxAttempts, m.JobRuns, m.JobErrors, m.JobDuration, m.StoreBatch, m.StoreCommit,
	)
	// Known label values start at zero, so that rates and alerts see a
	// series from the first scrape on.
	for _, role := range []string{"student", "tutor", "agent", "admin", "anonymous"} {
		m.Sockets.WithLabelValues(role)
	}
	for _, class := range []string{"2xx", "4xx", "5xx", "network"} {
		m.OutboxAttempts.WithLabelValues(class)
	}
	return m
}

// Known declares the functions, hooks and jobs the process has, so their
// series exist (at zero) before the first call, delivery or run.
func (m *Metrics) Known(funcs, hooks, jobs []string) {
	for _, fn := range funcs {
		m.Calls.WithLabelValues(fn, "ok")
		m.CallDuration.WithLabelValues(fn)
	}
	for _, h := range hooks {
		m.Hooks.WithLabelValues(h, "ok")
	}
	for _, j := range jobs {
		m.JobRuns.WithLabelValues(j)
		m.JobErrors.WithLabelValues(j)
		m.JobDuration.WithLabelValues(j)
	}
}

// Gauge registers a gauge read from f at every scrape.
func (m *Metrics) Gauge(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Counter registers a counter read from f at every scrape.
func (m *Metrics) Counter(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// ObserveCall counts a function call and its latency.
func (m *Metrics) ObserveCall(fn, code string, d time.Duration) {
	if code == "" {
		code = "ok"
	}
	m.Calls.WithLabelValues(fn, code).Inc()
	m.CallDuration.WithLabelValues(fn).Observe(d.Seconds())
}

// ObserveCommit is the store's batch observer.
func (m *Metrics) ObserveCommit(writes int, d time.Duration) {
	m.StoreBatch.Observe(float64(writes))
	m.StoreCommit.Observe(d.Seconds())
}

// Handler serves /metrics; with a token, only to "Authorization: Bearer <token>".
func (m *Metrics) Handler(token string) http.Handler {
	return BearerOnly(token, promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
}

// BearerOnly lets through only requests that carry the token as a bearer
// token, when there is one.
func BearerOnly(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"code":"unauthenticated","message":"send Authorization: Bearer <INVIGIL_METRICS_TOKEN>"}`))
			return
		}
		h.ServeHTTP(w, r)
	})
}
