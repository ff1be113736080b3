package static_test

// What the tutor's tab costs with 1,000 students changing at the normal
// pace, by Chromium's own accounting (Performance.getMetrics), against the
// scripted server.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
)

// metrics reads Chromium's Performance.getMetrics for a tab.
func metrics(t *testing.T, tb *tab) map[string]float64 {
	t.Helper()
	res, err := chromedp.Call(tb.ctx, performance.GetMetrics, cdp.Empty{})
	if err != nil {
		t.Fatalf("Performance.getMetrics: %v", err)
	}
	out := map[string]float64{}
	for _, m := range res.Metrics {
		out[m.Name] = m.Value
	}
	return out
}

// The tutor's tab with 1,000 students changing at the normal pace (10 s
// heartbeats: 100 row updates a second; a violation a second and a status
// change every few seconds among them) costs under 10 % of a core, by
// Chromium's own accounting of the tab's main thread (Performance.getMetrics):
// first with every update its own delta (a server that sends each write at
// once), then with the same updates coalesced into 10 deltas a second.
func TestBrowserProctorTabCost(t *testing.T) {
	requireChromium(t)
	if testing.Short() {
		t.Skip("measures for 25 to 65 s")
	}
	if raceEnabled {
		t.Skip("a figure against a pace; the race detector slows the server below it (go test without -race measures it)")
	}
	b := newBrowser(t, 180*time.Second)
	e := newExam(1000, 2)
	srv := newScripted(t, e.tables())
	proctor := b.newTab("tutor", srv.url, fakeJWT("tutor-1", "tutor", "Tess Tutor", "delta"), "/proctor/"+scriptedExam)
	proctor.wait("1,000 students", `document.querySelector('#grid')?.dataset.total === '1000'
		&& document.querySelector('#grid').dataset.mode === 'compact'`, 15*time.Second)
	if _, err := chromedp.Call(proctor.ctx, performance.Enable, performance.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	// The bound is on the CPU time of the tab's main thread (ThreadTime): a
	// core's share, whatever else the machine runs. TaskDuration, the wall
	// time of the tab's tasks, also counts the time the thread waited for a
	// core: on this shared 2-core machine it reads 20-50 % above the CPU
	// time when other work runs. It must stay under 10 % too where the
	// server coalesces, and under 15 % at a delta per update, where the tab
	// is near the floor of receiving 100 WebSocket messages a second.
	for _, pace := range []struct {
		name         string
		every        time.Duration
		rowsPerFrame int
		maxTask      float64
	}{
		{"one delta per update", 10 * time.Millisecond, 1, 0.15},
		{"coalesced, 10 deltas/s", 100 * time.Millisecond, 10, 0.10},
	} {
		t.Run(pace.name, func(t *testing.T) {
			stopLoad := runLoad(srv, e, pace.every, pace.rowsPerFrame)
			defer stopLoad()
			time.Sleep(2 * time.Second) // warm up

			// Windows of ~10 s; when one is over a bound, another is taken,
			// up to three, and the lowest counts (noise only ever adds).
			var best tabCost
			for try := 1; try <= 3; try++ {
				c := measureTab(t, proctor, srv, 10*time.Second)
				t.Logf("window %d (load average %s): %s", try, loadAverage(), c)
				if try == 1 || c.thread+c.task < best.thread+best.task {
					best = c
				}
				if best.thread < 0.10 && best.task < pace.maxTask {
					break
				}
			}
			updates := stopLoad()
			t.Logf("tutor tab, 1,000 students, %d updates in all: %s", updates, best)
			if got, want := best.deltas*float64(pace.rowsPerFrame), 80.0; got < want {
				t.Fatalf("only %.0f row updates/s reached the page; the load did not run at pace", got)
			}
			if best.thread >= 0.10 {
				t.Fatalf("the tab's main thread used %.1f %% of a core; want < 10 %%", 100*best.thread)
			}
			if best.task >= pace.maxTask {
				t.Fatalf("the tab's tasks took %.1f %% of the wall time; want < %.0f %%", 100*best.task, 100*pace.maxTask)
			}
			if best.nodes > 5000 {
				t.Fatalf("%.0f DOM nodes; want a window's worth", best.nodes)
			}
		})
	}
}

// runLoad changes rows students every interval, in one delta: mostly
// heartbeats; every 100th update a violation, every 400th a disconnect or
// a return. stop ends it and says how many updates were made.
func runLoad(srv *scripted, e *scriptExam, every time.Duration, rows int) (stop func() int) {
	quit := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-quit:
				done <- n
				return
			case now := <-tick.C:
				srv.update(func() {
					for k := 0; k < rows; k++ {
						r := e.pick()
						switch {
						case n%400 == 399:
							if r.Status == "disconnected" {
								e.heartbeat(r, now)
							} else {
								e.setStatus(r, "disconnected", now)
							}
						case n%100 == 99:
							e.violation(r, now)
						default:
							e.heartbeat(r, now)
						}
						n++
					}
				})
			}
		}
	}()
	var once sync.Once
	var total int
	return func() int {
		once.Do(func() {
			close(quit)
			total = <-done
		})
		return total
	}
}

// tabCost is what a tab spent over a window, per second of wall time.
type tabCost struct {
	task, thread, script, layout, style float64 // fractions of a core
	layouts, styles, deltas, kb         float64 // per second
	nodes, heapMB                       float64
	span                                float64
}

func (c tabCost) String() string {
	return fmt.Sprintf("%.0f delta frames/s (%.1f KB/s): main thread CPU time %.1f %% of a core; TaskDuration %.1f %% (script %.1f %%, layout %.1f %%, style %.1f %%); %.1f layouts/s, %.1f style recalcs/s, %.0f DOM nodes, JS heap %.1f MB, over %.1f s",
		c.deltas, c.kb, 100*c.thread, 100*c.task, 100*c.script, 100*c.layout, 100*c.style, c.layouts, c.styles, c.nodes, c.heapMB, c.span)
}

// measureTab reads the tab's Performance.getMetrics before and after d.
func measureTab(t *testing.T, tb *tab, srv *scripted, d time.Duration) tabCost {
	t.Helper()
	f0, b0 := srv.frameCounts()
	m0 := metrics(t, tb)
	wall0 := time.Now()
	time.Sleep(d)
	m1 := metrics(t, tb)
	f1, b1 := srv.frameCounts()
	span := m1["Timestamp"] - m0["Timestamp"]
	if span <= 0 {
		span = time.Since(wall0).Seconds()
	}
	per := func(name string) float64 { return (m1[name] - m0[name]) / span }
	return tabCost{
		task: per("TaskDuration"), thread: per("ThreadTime"), script: per("ScriptDuration"),
		layout: per("LayoutDuration"), style: per("RecalcStyleDuration"),
		layouts: per("LayoutCount"), styles: per("RecalcStyleCount"),
		deltas: float64(f1["delta"]-f0["delta"]) / span, kb: float64(b1-b0) / span / 1024,
		nodes: m1["Nodes"], heapMB: m1["JSHeapUsedSize"] / 1e6, span: span,
	}
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// The same, against the real server (production settings: a live query runs
// at most every 5 ms under load): 1,000 students heartbeating every 10 s
// (100 a second) and a violation a second; the tutor's tab stays under
// 10 % of a core by its main thread's CPU time, and the bytes it receives
// per second stay under 50 KB.
func TestBrowserProctorTabCostRealServer(t *testing.T) {
	requireChromium(t)
	if testing.Short() {
		t.Skip("measures for 15 to 40 s")
	}
	if raceEnabled {
		t.Skip("a figure against a pace; the race detector slows the server below it (go test without -race measures it)")
	}
	h := apptest.Boot(t, apptest.WithRealClock(), apptest.WithConfig(func(c *app.Config) {
		c.PushInterval = 0 // the production default
		c.HeartbeatMin = time.Millisecond
	}))
	h.Exam(exam.Registration{ExamID: "big", Title: "A thousand students", TutorIDs: []string{tutor.ID}, Status: exam.Open})
	ctx := context.Background()
	students := make([]engine.Caller, 1000)
	for i := range students {
		students[i] = engine.Caller{User: identity.User{ID: fmt.Sprintf("s%04d", i), Role: identity.Student, Name: fmt.Sprintf("Student %04d", i)}}
		if _, err := h.App.Engine.Call(ctx, students[i], "proctoring.startSession", json.RawMessage(`{"exam_id":"big"}`)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var load sync.WaitGroup
	load.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			s := students[i%len(students)]
			args := fmt.Sprintf(`{"exam_id":"big","current_question":%d,"answered_count":%d}`, 1+i/len(students)%20, i/len(students))
			h.App.Engine.Call(ctx, s, "proctoring.heartbeat", json.RawMessage(args))
			if i%100 == 0 {
				h.App.Engine.Call(ctx, s, "proctoring.logViolation", json.RawMessage(`{"exam_id":"big","type":"tab_hidden"}`))
			}
		}
	})
	defer func() { close(stop); load.Wait() }()

	b := newBrowser(t, 120*time.Second)
	proctor := b.newTab("tutor", h.URL, h.Token(tutor), "/proctor/big")
	proctor.wait("1,000 students", `document.querySelector('#grid')?.dataset.total === '1000'`, 20*time.Second)
	if _, err := chromedp.Call(proctor.ctx, performance.Enable, performance.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // warm up
	var best tabCost
	for try := 1; try <= 3; try++ {
		m0, in0 := metrics(t, proctor), bytesIn(t, h)
		time.Sleep(10 * time.Second)
		m1, in1 := metrics(t, proctor), bytesIn(t, h)
		span := m1["Timestamp"] - m0["Timestamp"]
		c := tabCost{thread: (m1["ThreadTime"] - m0["ThreadTime"]) / span, task: (m1["TaskDuration"] - m0["TaskDuration"]) / span,
			layouts: (m1["LayoutCount"] - m0["LayoutCount"]) / span, nodes: m1["Nodes"], kb: (in1 - in0) / span / 1024, span: span}
		t.Logf("window %d (load average %s): main thread CPU %.1f %% of a core, TaskDuration %.1f %%, %.1f layouts/s, %.0f DOM nodes, %.1f KB/s to the tab",
			try, loadAverage(), 100*c.thread, 100*c.task, c.layouts, c.nodes, c.kb)
		if try == 1 || c.thread < best.thread {
			best = c
		}
		if best.thread < 0.10 && best.kb < 50 {
			break
		}
	}
	if best.thread >= 0.10 {
		t.Errorf("the tutor's tab spends %.1f %% of a core on 1,000 students", 100*best.thread)
	}
	if best.kb >= 50 {
		t.Errorf("the tutor's tab receives %.1f KB/s", best.kb)
	}
}

// bytesIn is the bytes the server has pushed to sockets so far (the tutor's
// is the only one subscribed), from its send-path counter.
func bytesIn(t *testing.T, h *apptest.Harness) float64 {
	t.Helper()
	return float64(h.App.Server.BytesSent())
}
