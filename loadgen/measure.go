package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// measure runs the measured phase: every joined student heartbeats, the
// chat and score drivers send at their rates, and a progress line comes
// every few seconds. Then it waits briefly for the last answers and
// sightings and takes the figures, before any socket is closed.
func (r *runner) measure(ctx context.Context) *Report {
	for _, w := range r.tutors {
		w.bytes0 = w.bytes.Load()
	}
	if r.server != nil {
		r.server.restart()
	}
	if s, err := newSampler(os.Getpid()); err == nil {
		r.self = s
	}
	r.st.measuring.Store(true)
	start := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()

	var senders sync.WaitGroup
	for _, s := range r.students {
		if s.conn != nil {
			senders.Go(func() { s.run(runCtx, start) })
		}
	}
	if r.cfg.ChatRate > 0 {
		senders.Go(func() { r.chat(runCtx) })
	}
	if r.cfg.ScoresRate > 0 {
		senders.Go(func() { r.scores(runCtx) })
	}
	progressDone := make(chan struct{})
	go r.progress(runCtx, start, progressDone)
	go pollRSS(runCtx, r.server, r.self)
	senders.Wait()
	elapsed := time.Since(start)
	r.st.measuring.Store(false)
	<-progressDone
	if r.ctl != nil && r.ctl.measured != nil {
		r.ctl.measured()
	}

	// The bytes and the processes' figures are the measured phase's.
	rates := make([]float64, 0, len(r.tutors))
	for _, w := range r.tutors {
		if w.conn != nil {
			rates = append(rates, float64(w.bytes.Load()-w.bytes0)/elapsed.Seconds())
		}
	}
	var server, self *ProcStats
	if r.server != nil {
		server = r.server.final()
	}
	if r.self != nil {
		self = r.self.final()
		self.Note = ""
	}
	if ctx.Err() == nil {
		r.settle(ctx)
		for _, s := range r.students {
			s.expire(time.Now().Add(time.Hour)) // still unanswered: timed out
		}
	} // interrupted: calls still on their way are left out, not failed

	rep := r.snapshot(elapsed)
	rep.TutorBytes = TutorBytes{Tutors: int64(len(rates))}
	for _, v := range rates {
		rep.TutorBytes.Sum += v
		rep.TutorBytes.Max = max(rep.TutorBytes.Max, v)
		if v == 0 {
			rep.TutorBytes.Zero++
		}
	}
	rep.Server, rep.LoadGen = server, self
	if server == nil && r.serverNote != "" {
		rep.Server = &ProcStats{Note: r.serverNote}
	}
	rep.finish()
	return rep
}

// pollRSS follows the processes' memory every second until ctx ends.
func pollRSS(ctx context.Context, ss ...*sampler) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, s := range ss {
				s.pollRSS()
			}
		}
	}
}

// settle waits, a little, for answers still on their way and for the
// tutors to show the last heartbeats.
func (r *runner) settle(ctx context.Context) {
	deadline := time.Now().Add(endGrace)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pending := 0
		for _, s := range r.students {
			if s.conn != nil {
				pending += s.inFlight()
			}
		}
		if pending == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lag := time.Now().Add(propagationLag)
	for time.Now().Before(lag) && ctx.Err() == nil {
		p := &r.st.prop
		if p.seen.Load() >= p.expected.Load() && r.st.msgProp.seen.Load() >= r.st.msgProp.expected.Load() &&
			r.st.scoreProp.seen.Load() >= r.st.scoreProp.expected.Load() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// progress reports every cfg.Progress until ctx ends.
func (r *runner) progress(ctx context.Context, start time.Time, done chan struct{}) {
	defer close(done)
	if r.cfg.Progress <= 0 {
		return
	}
	t := time.NewTicker(r.cfg.Progress)
	defer t.Stop()
	prev := &Report{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := r.snapshot(time.Since(start))
		cur.finish()
		if r.ctl != nil && r.ctl.progress != nil {
			r.ctl.progress(cur)
			continue
		}
		var server *ProcStats
		if r.server != nil {
			p := r.server.sample()
			server = &p
		}
		fmt.Fprintln(r.log, progressLine(cur, prev, server))
		prev = cur
	}
}

// snapshot is the figures so far; finish computes the derived ones.
func (r *runner) snapshot(elapsed time.Duration) *Report {
	c := r.cfg
	rep := &Report{
		RunID: c.RunID, ElapsedS: elapsed.Seconds(), Cores: runtime.NumCPU(),
		Settings: Settings{URL: c.URL, Students: c.Students, Exams: c.Exams, TutorsPerExam: c.TutorsPerExam,
			Interval: c.Interval.String(), Duration: c.Duration.String(), Violations: c.Violations,
			ChatRate: c.ChatRate, ScoresRate: c.ScoresRate, Procs: c.Procs, SourceAddrs: len(c.SourceAddrs)},
		Connections: map[string]*Conns{
			"students": {Wanted: int64(len(r.students)), Ready: r.st.studentsJoined.Load(), Open: r.st.studentsOpen.Load()},
			"tutors":   {Wanted: int64(len(r.tutors)), Ready: r.st.tutorsReady.Load(), Open: r.st.tutorsOpen.Load()},
		},
		Fns: map[string]*Fn{},
	}
	if len(r.projectors) > 0 {
		rep.Connections["projectors"] = &Conns{Wanted: int64(len(r.projectors)), Ready: r.st.projectorsReady.Load(), Open: r.st.projectorsOpen.Load()}
	}
	for name, f := range r.st.fns {
		fr := &Fn{Calls: f.calls.Load(), Measured: f.measured.Load(), Ack: Latency{Hist: f.ack.Snapshot()}}
		f.errs.Range(func(k, v any) bool {
			if fr.Errors == nil {
				fr.Errors = map[string]int64{}
			}
			fr.Errors[k.(string)] = v.(*atomic.Int64).Load()
			return true
		})
		rep.Fns[name] = fr
	}
	if secs := elapsed.Seconds(); secs > 0 {
		var measured int64
		for _, f := range rep.Fns {
			measured += f.Measured
		}
		rep.CallsPerS = float64(measured) / secs
	}
	r.st.anomalies.Range(func(k, v any) bool {
		if rep.Anomalies == nil {
			rep.Anomalies = map[string]int64{}
		}
		rep.Anomalies[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	rep.Propagation = propagation(&r.st.prop, r.tutors,
		func(w *watcher) bool { return w.ready.Load() }, func(w *watcher) bool { return w.sightings.Load() > 0 })
	if len(r.rooms) > 0 {
		p := propagation(&r.st.msgProp, r.tutors,
			func(w *watcher) bool { return w.rooms.Load() > 0 }, func(w *watcher) bool { return w.msgSightings.Load() > 0 })
		rep.MessagePropagation = &p
	}
	if len(r.projectors) > 0 {
		p := propagation(&r.st.scoreProp, r.projectors,
			func(w *watcher) bool { return w.ready.Load() }, func(w *watcher) bool { return w.sightings.Load() > 0 })
		rep.ScorePropagation = &p
	}
	return rep
}

func propagation(p *propStat, watchers []*watcher, watching, measured func(*watcher) bool) Propagation {
	out := Propagation{Latency: Latency{Hist: p.hist.Snapshot()}, Expected: p.expected.Load(), Seen: p.seen.Load()}
	for _, w := range watchers {
		if watching(w) {
			out.Watchers++
			if measured(w) {
				out.WatchersMeasured++
			}
		}
	}
	return out
}

// pace calls f about rate times a second until ctx ends, without bursts
// after a stall longer than a second.
func pace(ctx context.Context, rate float64, f func(n int64)) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var (
		owed float64
		n    int64
		last = time.Now()
	)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			owed = min(owed+rate*now.Sub(last).Seconds(), max(rate, 1))
			last = now
			for ; owed >= 1 && ctx.Err() == nil; owed-- {
				f(n)
				n++
			}
		}
	}
}

// chat sends this process's share of --chat-rate, room after room, each
// message from the room's student; its client_msg_id carries its send time.
func (r *runner) chat(ctx context.Context) {
	var rooms []*room
	for _, rm := range r.rooms {
		if rm.sessionID != "" {
			rooms = append(rooms, rm)
		}
	}
	if len(rooms) == 0 {
		return
	}
	sid := make([][]byte, len(rooms))
	for i, rm := range rooms {
		sid[i], _ = json.Marshal(rm.sessionID)
	}
	rate := r.cfg.ChatRate * float64(len(r.exams)) / float64(r.cfg.Exams)
	pace(ctx, rate, func(n int64) {
		k := int(n) % len(rooms)
		rm := rooms[k]
		b := []byte(`{"session_id":`)
		b = append(b, sid[k]...)
		b = append(b, `,"body":"invigil load message `...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, `","client_msg_id":"`...)
		b = append(b, r.msgPrefix...)
		b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, n, 10)
		b = append(b, `"}`...)
		rm.owner.call(b, callOpts{fn: fnSend, prop: &r.st.msgProp, watchers: &rm.watchers})
	})
}

// scores posts this process's share of --scores-rate to /hooks/scores,
// quiz after quiz; each score beats the last so that it shows at the top of
// its leaderboard, and its nickname carries its send time.
func (r *runner) scores(ctx context.Context) {
	rate := r.cfg.ScoresRate * float64(len(r.exams)) / float64(r.cfg.Exams)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	defer wg.Wait()
	pace(ctx, rate, func(n int64) {
		select {
		case sem <- struct{}{}:
		default:
			r.st.anomaly("scores_behind") // 32 hooks already in flight
			return
		}
		e := r.exams[int(n)%len(r.exams)]
		now := time.Now()
		body, _ := json.Marshal(map[string]any{
			"submission_id": fmt.Sprintf("lg-%s-%d-%d", r.cfg.RunID, r.cfg.Shard, n),
			"exam_id":       e.id, "quiz_code": e.quiz,
			"nickname": r.scorePrefix + strconv.FormatInt(now.UnixNano(), 10),
			"score":    n%1_000_000 + 1, "max_score": 1_000_000,
			"submitted_at": now.UTC().Format(time.RFC3339Nano),
		})
		r.st.attempt(fnHookScores)
		wg.Go(func() {
			defer func() { <-sem }()
			code, _ := postHook(context.WithoutCancel(ctx), r.http, r.base, r.cfg.WebhookSecret, "/hooks/scores",
				fmt.Sprintf("load-%s-score-%d-%d", r.cfg.RunID, r.cfg.Shard, n), body)
			r.st.done(fnHookScores, code, time.Since(now))
			if code == "" && e.projector != nil && e.projector.ready.Load() {
				r.st.scoreProp.expected.Add(1)
			}
		})
	})
}
