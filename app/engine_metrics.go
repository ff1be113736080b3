package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"invigil/app/engine"
)

var engineRunsDesc = prometheus.NewDesc("invigil_engine_runs_total",
	"Query executions for subscriptions: full runs, and row patches of lists.", []string{"kind"}, nil)

// engineRuns exposes the engine's run counters, read at each scrape.
type engineRuns struct{ e *engine.Engine }

func (c engineRuns) Describe(ch chan<- *prometheus.Desc) { ch <- engineRunsDesc }

func (c engineRuns) Collect(ch chan<- prometheus.Metric) {
	st := c.e.Stats()
	ch <- prometheus.MustNewConstMetric(engineRunsDesc, prometheus.CounterValue, float64(st.FullRuns), "full")
	ch <- prometheus.MustNewConstMetric(engineRunsDesc, prometheus.CounterValue, float64(st.PatchRuns), "patch")
}
