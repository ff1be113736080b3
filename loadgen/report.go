package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is what a run measured: the final table, the --json output, and
// what a child process hands its parent (the histograms travel whole, so
// that the parent's percentiles are those of all samples, not an average of
// percentiles).
type Report struct {
	RunID    string   `json:"run_id"`
	Settings Settings `json:"settings"`
	Cores    int      `json:"cores"` // of the machine the load generator ran on
	SetupS   float64  `json:"setup_s"`
	ElapsedS float64  `json:"elapsed_s"` // the measured phase

	Connections map[string]*Conns `json:"connections"` // students, tutors, projectors

	CallsTotal    int64            `json:"calls_total"`    // attempted, setup included
	CallsMeasured int64            `json:"calls_measured"` // attempted during the measured phase
	CallsPerS     float64          `json:"calls_per_s"`    // measured calls per second
	ErrorsTotal   int64            `json:"errors_total"`
	ErrorPct      float64          `json:"error_pct"`
	ErrorsByCode  map[string]int64 `json:"errors_by_code"`
	Fns           map[string]*Fn   `json:"fns"`
	Anomalies     map[string]int64 `json:"anomalies,omitempty"`

	HeartbeatAck       Latency      `json:"heartbeat_ack"`
	Propagation        Propagation  `json:"propagation"`
	MessagePropagation *Propagation `json:"message_propagation,omitempty"`
	ScorePropagation   *Propagation `json:"score_propagation,omitempty"`
	TutorBytes         TutorBytes   `json:"tutor_bytes_per_s"`

	Server  *ProcStats `json:"server,omitempty"`
	LoadGen *ProcStats `json:"load_generator,omitempty"`
}

// Settings echoes the flags that shaped the load.
type Settings struct {
	URL           string  `json:"url"`
	Students      int     `json:"students"`
	Exams         int     `json:"exams"`
	TutorsPerExam int     `json:"tutors_per_exam"`
	Interval      string  `json:"interval"`
	Duration      string  `json:"duration"`
	Violations    float64 `json:"violations"`
	ChatRate      float64 `json:"chat_rate"`
	ScoresRate    float64 `json:"scores_rate"`
	Procs         int     `json:"procs"`
	SourceAddrs   int     `json:"source_addrs,omitempty"`
}

// Conns counts one kind of socket.
type Conns struct {
	Wanted int64 `json:"wanted"`
	Ready  int64 `json:"ready"` // connected, authenticated, joined or subscribed
	Open   int64 `json:"open"`  // still open when the report was taken
}

// Fn is one function's calls.
type Fn struct {
	Calls    int64            `json:"calls"`
	Measured int64            `json:"measured_calls"`
	Errors   map[string]int64 `json:"errors,omitempty"`
	Ack      Latency          `json:"ack"`
}

// Latency is a distribution of delays.
type Latency struct {
	N    int64    `json:"n"`
	P50  float64  `json:"p50_ms"`
	P95  float64  `json:"p95_ms"`
	P99  float64  `json:"p99_ms"`
	Max  float64  `json:"max_ms"`
	Hist HistSnap `json:"hist"`
}

// Propagation is write → the watcher's frame that shows it, and how many of
// the sightings expected (successful writes × watchers) were made.
type Propagation struct {
	Latency
	Expected         int64 `json:"expected"`
	Seen             int64 `json:"seen"`
	Watchers         int64 `json:"watchers"`
	WatchersMeasured int64 `json:"watchers_measured"` // watchers with at least one sighting
}

// TutorBytes is the frame bytes each tutor socket received per second of
// the measured phase.
type TutorBytes struct {
	Tutors int64   `json:"tutors"`
	Mean   float64 `json:"mean"`
	Max    float64 `json:"max"`
	Sum    float64 `json:"sum"`
	Zero   int64   `json:"tutors_without_bytes"`
}

// ProcStats is a process's CPU and memory over the measured phase.
type ProcStats struct {
	PID       int     `json:"pid,omitempty"`
	Procs     int     `json:"procs,omitempty"` // load generator processes summed
	CPUPct    float64 `json:"cpu_pct"`         // mean, of one core
	RSSMaxMB  float64 `json:"rss_max_mb"`
	RSSPeakMB float64 `json:"rss_peak_mb,omitempty"` // VmHWM: the process's lifetime peak
	FDs       int     `json:"fds,omitempty"`
	Note      string  `json:"note,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func latencyOf(h HistSnap) Latency {
	return Latency{N: h.N(), P50: ms(h.Quantile(.50)), P95: ms(h.Quantile(.95)),
		P99: ms(h.Quantile(.99)), Max: ms(h.Quantile(1)), Hist: h}
}

// finish recomputes every derived figure from the raw counts.
func (r *Report) finish() {
	r.CallsTotal, r.CallsMeasured, r.ErrorsTotal = 0, 0, 0
	r.ErrorsByCode = map[string]int64{}
	for name, f := range r.Fns {
		f.Ack = latencyOf(f.Ack.Hist)
		r.CallsTotal += f.Calls
		r.CallsMeasured += f.Measured
		for code, n := range f.Errors {
			r.ErrorsByCode[code] += n
			r.ErrorsTotal += n
		}
		if f.Calls == 0 && len(f.Errors) == 0 {
			delete(r.Fns, name)
		}
	}
	r.ErrorPct = 0
	if r.CallsTotal > 0 {
		r.ErrorPct = 100 * float64(r.ErrorsTotal) / float64(r.CallsTotal)
	}
	if f := r.Fns[fnHeartbeat]; f != nil {
		r.HeartbeatAck = f.Ack
	} else {
		r.HeartbeatAck = Latency{}
	}
	for _, p := range []*Propagation{&r.Propagation, r.MessagePropagation, r.ScorePropagation} {
		if p != nil {
			p.Latency = latencyOf(p.Hist)
		}
	}
	if r.TutorBytes.Tutors > 0 {
		r.TutorBytes.Mean = r.TutorBytes.Sum / float64(r.TutorBytes.Tutors)
	}
}

// merge adds a child's report to r (the parent's sum of its children).
func (r *Report) merge(o *Report) {
	r.SetupS = max(r.SetupS, o.SetupS)
	r.Cores = max(r.Cores, o.Cores)
	r.ElapsedS = max(r.ElapsedS, o.ElapsedS)
	r.CallsPerS += o.CallsPerS
	if r.Connections == nil {
		r.Connections = map[string]*Conns{}
	}
	for k, c := range o.Connections {
		m := r.Connections[k]
		if m == nil {
			m = &Conns{}
			r.Connections[k] = m
		}
		m.Wanted += c.Wanted
		m.Ready += c.Ready
		m.Open += c.Open
	}
	if r.Fns == nil {
		r.Fns = map[string]*Fn{}
	}
	for name, f := range o.Fns {
		m := r.Fns[name]
		if m == nil {
			m = &Fn{}
			r.Fns[name] = m
		}
		m.Calls += f.Calls
		m.Measured += f.Measured
		for code, n := range f.Errors {
			if m.Errors == nil {
				m.Errors = map[string]int64{}
			}
			m.Errors[code] += n
		}
		m.Ack.Hist = m.Ack.Hist.Merge(f.Ack.Hist)
	}
	for code, n := range o.Anomalies {
		if r.Anomalies == nil {
			r.Anomalies = map[string]int64{}
		}
		r.Anomalies[code] += n
	}
	mergeProp(&r.Propagation, &o.Propagation)
	if o.MessagePropagation != nil {
		if r.MessagePropagation == nil {
			r.MessagePropagation = &Propagation{}
		}
		mergeProp(r.MessagePropagation, o.MessagePropagation)
	}
	if o.ScorePropagation != nil {
		if r.ScorePropagation == nil {
			r.ScorePropagation = &Propagation{}
		}
		mergeProp(r.ScorePropagation, o.ScorePropagation)
	}
	r.TutorBytes.Tutors += o.TutorBytes.Tutors
	r.TutorBytes.Sum += o.TutorBytes.Sum
	r.TutorBytes.Zero += o.TutorBytes.Zero
	r.TutorBytes.Max = max(r.TutorBytes.Max, o.TutorBytes.Max)
	if o.LoadGen != nil {
		if r.LoadGen == nil {
			r.LoadGen = &ProcStats{}
		}
		r.LoadGen.Procs++
		r.LoadGen.CPUPct += o.LoadGen.CPUPct
		r.LoadGen.RSSMaxMB += o.LoadGen.RSSMaxMB
	}
}

func mergeProp(p, o *Propagation) {
	p.Hist = p.Hist.Merge(o.Hist)
	p.Expected += o.Expected
	p.Seen += o.Seen
	p.Watchers += o.Watchers
	p.WatchersMeasured += o.WatchersMeasured
}

// Failed reports whether more than 5 % of the calls failed.
func (r *Report) Failed() bool { return r.ErrorPct > 5 }

func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
}

func fmtBytes(b float64) string {
	switch {
	case b >= 1<<20:
		return strconv.FormatFloat(b/(1<<20), 'f', 2, 64) + " MB"
	case b >= 1<<10:
		return strconv.FormatFloat(b/(1<<10), 'f', 1, 64) + " KB"
	}
	return strconv.FormatFloat(b, 'f', 0, 64) + " B"
}

// Print writes the final table.
func (r *Report) Print(w io.Writer) {
	s := r.Settings
	fmt.Fprintf(w, "\ninvigil load %s: %d students in %d exams, %d tutor(s) per exam, heartbeat every %s, %.1fs measured (setup %.1fs)",
		r.RunID, s.Students, s.Exams, s.TutorsPerExam, s.Interval, r.ElapsedS, r.SetupS)
	if s.Procs > 1 {
		fmt.Fprintf(w, ", %d processes", s.Procs)
	}
	fmt.Fprintln(w)
	var conns []string
	for _, k := range []string{"students", "tutors", "projectors"} {
		if c := r.Connections[k]; c != nil && c.Wanted > 0 {
			conns = append(conns, fmt.Sprintf("%s %d/%d (%d open at end)", k, c.Ready, c.Wanted, c.Open))
		}
	}
	row := func(label, format string, a ...any) {
		fmt.Fprintf(w, "  %-30s "+format+"\n", append([]any{label}, a...)...)
	}
	row("connections", "%s", strings.Join(conns, ", "))
	var fns []string
	for _, name := range slices.Sorted(maps.Keys(r.Fns)) {
		if f := r.Fns[name]; f.Measured > 0 {
			fns = append(fns, fmt.Sprintf("%s %d", name, f.Measured))
		}
	}
	row("calls/s", "%.1f  (%d calls in the measured phase: %s; %d in all)", r.CallsPerS, r.CallsMeasured, strings.Join(fns, ", "), r.CallsTotal)
	row("errors", "%s", r.errorLine())
	if len(r.Anomalies) > 0 {
		var an []string
		for _, k := range slices.Sorted(maps.Keys(r.Anomalies)) {
			an = append(an, fmt.Sprintf("%s %d", k, r.Anomalies[k]))
		}
		row("anomalies", "%s", strings.Join(an, ", "))
	}
	row("", "%9s %9s %9s %9s %9s", "p50", "p95", "p99", "max", "n")
	lat := func(label string, l Latency, extra string) {
		row(label, "%9s %9s %9s %9s %9d%s", fmtMs(l.P50), fmtMs(l.P95), fmtMs(l.P99), fmtMs(l.Max), l.N, extra)
	}
	lat("heartbeat ack", r.HeartbeatAck, "")
	prop := func(label string, p *Propagation) {
		if p.N == 0 {
			row(label, "not measured: %d watchers, %d sightings expected", p.Watchers, p.Expected)
			return
		}
		lat(label, p.Latency, fmt.Sprintf("  (%d of %d expected sightings; %d of %d watchers measured)",
			p.Seen, p.Expected, p.WatchersMeasured, p.Watchers))
	}
	prop("propagation", &r.Propagation)
	if r.MessagePropagation != nil {
		prop("message propagation", r.MessagePropagation)
	}
	if r.ScorePropagation != nil {
		prop("score propagation", r.ScorePropagation)
	}
	row("other calls' acks", "")
	for _, name := range slices.Sorted(maps.Keys(r.Fns)) {
		if f := r.Fns[name]; name != fnHeartbeat && f.Ack.N > 0 {
			lat("  "+name, f.Ack, "")
		}
	}
	tb := r.TutorBytes
	row("bytes/tutor/s", "mean %s/s, max %s/s over %d tutors", fmtBytes(tb.Mean), fmtBytes(tb.Max), tb.Tutors)
	if p := r.Server; p != nil {
		if p.Note != "" && p.PID == 0 {
			row("server", "%s", p.Note)
		} else {
			row("server", "pid %d: CPU %.1f%% of one core (mean%s), RSS max %.0f MB (peak %.0f MB), %d descriptors%s",
				p.PID, p.CPUPct, r.ofCores(p.CPUPct), p.RSSMaxMB, p.RSSPeakMB, p.FDs, noteOf(p))
		}
	}
	if p := r.LoadGen; p != nil {
		procs := ""
		if p.Procs > 1 {
			procs = fmt.Sprintf(" in %d processes", p.Procs)
		}
		row("load generator", "CPU %.1f%% of one core (mean%s), RSS %.0f MB%s", p.CPUPct, r.ofCores(p.CPUPct), p.RSSMaxMB, procs)
	}
	if r.Failed() {
		fmt.Fprintf(w, "  FAILED: %.2f%% of calls failed (limit 5%%)\n", r.ErrorPct)
	}
	if n := r.Fns[fnHeartbeat]; n != nil && n.Errors["rate_limited"] > 0 {
		limited, first := n.Errors["rate_limited"], r.Anomalies[anomalyFirstLimited]
		if first > 0 {
			fmt.Fprintf(w, "  note: %d of the %d rate_limited heartbeats were students' first, sent soon after startSession:\n"+
				"        either the server was shedding heartbeats (busy), or it counts startSession as a heartbeat,\n"+
				"        which CONTRACT §4 says it must not (--settle with its INVIGIL_HEARTBEAT_MIN_INTERVAL measures past it)\n", first, limited)
		}
		if limited > first {
			fmt.Fprintf(w, "  note: %d later heartbeats were rate_limited (and the students waited the retry_after_ms asked):\n"+
				"        the server shed them while busy, or its INVIGIL_HEARTBEAT_MIN_INTERVAL is above 90%% of --interval\n", limited-first)
		}
	}
}

// ofCores restates a share of one core as a share of the machine.
func (r *Report) ofCores(pct float64) string {
	if r.Cores <= 1 {
		return ""
	}
	return fmt.Sprintf("; %.1f%% of %d cores", pct/float64(r.Cores), r.Cores)
}

func noteOf(p *ProcStats) string {
	if p.Note == "" {
		return ""
	}
	return " (" + p.Note + ")"
}

func (r *Report) errorLine() string {
	if r.ErrorsTotal == 0 {
		return "0"
	}
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(r.ErrorsByCode)) {
		var by []string
		for _, name := range slices.Sorted(maps.Keys(r.Fns)) {
			if n := r.Fns[name].Errors[code]; n > 0 {
				by = append(by, fmt.Sprintf("%s %d", name, n))
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d (%s)", code, r.ErrorsByCode[code], strings.Join(by, ", ")))
	}
	return fmt.Sprintf("%d = %.3f%% of calls: %s", r.ErrorsTotal, r.ErrorPct, strings.Join(parts, "; "))
}

// progressLine is one line every few seconds: how far, how fast, how well.
func progressLine(cur, prev *Report, server *ProcStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "load %5.0fs", cur.ElapsedS)
	for _, k := range []string{"students", "tutors"} {
		if c := cur.Connections[k]; c != nil && c.Wanted > 0 {
			fmt.Fprintf(&b, "  %s %d/%d", k, c.Open, c.Wanted)
		}
	}
	rate := 0.0
	if dt := cur.ElapsedS - prev.ElapsedS; dt > 0 {
		rate = float64(cur.CallsMeasured-prev.CallsMeasured) / dt
	}
	fmt.Fprintf(&b, "  calls/s %.0f  errors %d (%.2f%%)", rate, cur.ErrorsTotal, cur.ErrorPct)
	fmt.Fprintf(&b, "  ack p99 %s", fmtMs(cur.HeartbeatAck.P99))
	if cur.Propagation.N > 0 {
		fmt.Fprintf(&b, "  prop p99 %s", fmtMs(cur.Propagation.P99))
	}
	if server != nil && server.PID > 0 {
		fmt.Fprintf(&b, "  server cpu %.0f%% rss %.0fMB", server.CPUPct, server.RSSMaxMB)
	}
	return b.String()
}
