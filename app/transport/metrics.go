package transport

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"invigil/app/apperr"
	"invigil/store"
)

// metrics are the counters /metrics exposes in Prometheus text format.
type metrics struct {
	connections atomic.Int64
	slowClosed  atomic.Uint64

	mu    sync.Mutex
	calls map[callLabel]*callStat
}

type callLabel struct {
	fn   string
	code apperr.Code
}

type callStat struct {
	count   uint64
	seconds float64
}

func (m *metrics) observeCall(fn string, code apperr.Code, d time.Duration) {
	if code == "" {
		code = "ok"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.calls == nil {
		m.calls = map[callLabel]*callStat{}
	}
	k := callLabel{fn, code}
	if len(fn) > 64 || (m.calls[k] == nil && len(m.calls) > 1000) {
		k.fn = "other" // unknown names must not grow the label set without bound
	}
	st := m.calls[k]
	if st == nil {
		st = &callStat{}
		m.calls[k] = st
	}
	st.count++
	st.seconds += d.Seconds()
}

func (s *Server) serveMetrics(c echo.Context) error {
	var b strings.Builder
	st := s.opts.Engine.Stats()
	gauge := func(name, help string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %v\n", name, help, name, name, v)
	}
	counter := func(name, help string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %v\n", name, help, name, name, v)
	}
	gauge("invigil_ws_connections", "Open WebSocket connections.", s.metrics.connections.Load())
	counter("invigil_ws_slow_closed_total", "Sockets closed because their send buffer was full.", s.metrics.slowClosed.Load())
	gauge("invigil_subscriptions", "Live subscriptions.", st.Subscriptions)
	gauge("invigil_query_instances", "Distinct (query, args) being kept current.", st.Instances)
	counter("invigil_query_runs_total", "Query executions for subscriptions.", st.Runs)
	counter("invigil_pushes_total", "Values pushed to subscribers.", st.Pushes)
	var pending int
	s.opts.Engine.DB().Read(c.Request().Context(), func(r *store.Reader) (err error) {
		pending, err = r.OutboxPending(c.Request().Context())
		return err
	})
	gauge("invigil_outbox_pending", "Deliveries to Supabase not yet accepted.", pending)

	s.metrics.mu.Lock()
	labels := make([]callLabel, 0, len(s.metrics.calls))
	for k := range s.metrics.calls {
		labels = append(labels, k)
	}
	sort.Slice(labels, func(i, j int) bool {
		if labels[i].fn != labels[j].fn {
			return labels[i].fn < labels[j].fn
		}
		return labels[i].code < labels[j].code
	})
	b.WriteString("# HELP invigil_calls_total Function calls by outcome.\n# TYPE invigil_calls_total counter\n")
	for _, k := range labels {
		fmt.Fprintf(&b, "invigil_calls_total{fn=%q,code=%q} %d\n", k.fn, k.code, s.metrics.calls[k].count)
	}
	b.WriteString("# HELP invigil_call_seconds_total Time spent in function calls.\n# TYPE invigil_call_seconds_total counter\n")
	for _, k := range labels {
		fmt.Fprintf(&b, "invigil_call_seconds_total{fn=%q,code=%q} %g\n", k.fn, k.code, s.metrics.calls[k].seconds)
	}
	s.metrics.mu.Unlock()
	return c.Blob(http.StatusOK, "text/plain; version=0.0.4; charset=utf-8", []byte(b.String()))
}
