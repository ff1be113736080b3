package static_test

// Browser tests: the real pages and invigil.js in Debian's Chromium, driven
// by chromedp, against the real wiring (apptest, real clock). Skipped when
// /usr/bin/chromium is absent; CI installs it.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/identity"
)

const chromiumPath = "/usr/bin/chromium"

const examID = "demo"

var tutor = identity.User{ID: "tutor-1", Role: identity.Tutor, Name: "Tess Tutor"}

// site is invigil booted for a browser test, served through a gate that can
// refuse new WebSockets (a server that is down for the browser).
type site struct {
	*apptest.Harness
	url    string
	wsDown atomic.Bool
}

// boot starts invigil with exam "demo" (tutor-1, open) behind the gate.
func boot(t *testing.T) *site {
	t.Helper()
	requireChromium(t)
	h := apptest.Boot(t, apptest.WithRealClock())
	h.Exam(exam.Registration{ExamID: examID, Title: "Browser test exam", TutorIDs: []string{tutor.ID}, Status: exam.Open})
	s := &site{Harness: h}
	inner := h.App.Server.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" && s.wsDown.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// outage drops every socket and refuses new ones until the returned func runs.
func (s *site) outage() (restore func()) {
	s.wsDown.Store(true)
	s.App.Server.KillConnections()
	return func() { s.wsDown.Store(false) }
}

// browser starts a headless Chromium for one test, bounded by limit. Pages'
// console errors and exceptions are logged if the test fails.
type browser struct {
	t    *testing.T
	ctx  context.Context // the browser's first tab; parent of the others
	mu   sync.Mutex
	logs []string
}

// requireChromium skips the test when Debian's chromium is not installed.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser tests need %s: %v", chromiumPath, err)
	}
}

func newBrowser(t *testing.T, limit time.Duration) *browser {
	t.Helper()
	requireChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900),
	)
	// The deadline bounds the whole browser: when it passes, Chromium stops
	// and every pending action fails.
	deadline, cancelDeadline := context.WithTimeout(context.Background(), limit)
	b := &browser{t: t}
	t.Cleanup(func() {
		cancelDeadline()
		if t.Failed() {
			b.mu.Lock()
			for _, l := range b.logs {
				t.Log("browser:", l)
			}
			b.mu.Unlock()
		}
	})
	// The first start on a busy machine can be slow: give each try its own
	// bound, and try again.
	const tries = 3
	for i := 1; ; i++ {
		alloc, cancelAlloc := chromedp.NewExecAllocator(deadline, opts...)
		ctx, cancelCtx := chromedp.NewContext(alloc)
		// The context of the first action owns the browser's process, so
		// bound the start with a timer, not with a derived context.
		started := make(chan error, 1)
		go func() { started <- chromedp.Do(ctx) }()
		var err error
		select {
		case err = <-started:
		case <-time.After(20 * time.Second):
			cancelCtx()
			err = fmt.Errorf("no answer within 20 s: %w", <-started)
		}
		if err == nil {
			b.ctx = ctx
			t.Cleanup(func() {
				cancelCtx()
				cancelAlloc()
			})
			return b
		}
		cancelCtx()
		cancelAlloc()
		if i == tries || deadline.Err() != nil {
			t.Fatalf("start chromium (try %d): %v", i, err)
		}
		t.Logf("start chromium (try %d): %v; trying again", i, err)
	}
}

func (b *browser) listener(name string) func(ev any) {
	return func(ev any) {
		var line string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeWarning {
				return
			}
			parts := make([]string, 0, len(ev.Args))
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			line = fmt.Sprintf("%s console.%s: %s", name, ev.Type, strings.Join(parts, " "))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			line = fmt.Sprintf("%s exception: %s", name, d.Text)
			if d.Exception != nil {
				line += " " + d.Exception.Description
			}
		default:
			return
		}
		b.mu.Lock()
		b.logs = append(b.logs, time.Now().Format("15:04:05.000")+" "+line)
		b.mu.Unlock()
	}
}

// tab is one page in its own browser context (own localStorage, own window).
type tab struct {
	b      *browser
	name   string
	ctx    context.Context
	cancel context.CancelFunc
}

// newTab opens a tab on the server at base in a fresh browser context; with
// token set, it stores the token in localStorage["invigil.token"] (as the
// sign-in page would) before opening path.
func (b *browser) newTab(name string, base, token, path string) *tab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext(), chromedp.WithListener(b.listener(name)))
	tb := &tab{b: b, name: name, ctx: ctx, cancel: cancel}
	b.t.Cleanup(cancel)
	tb.do(chromedp.Navigate(base + "/healthz"))
	if token != "" {
		tb.eval(fmt.Sprintf(`localStorage.setItem("invigil.token", %s)`, js(token)))
	}
	if path != "" {
		tb.do(chromedp.Navigate(base + path))
	}
	return tb
}

func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.b.t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		tb.b.t.Fatalf("%s: %v", tb.name, err)
	}
}

// eval runs expr and ignores its value.
func (tb *tab) eval(expr string) {
	tb.b.t.Helper()
	if _, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise)); err != nil {
		tb.b.t.Fatalf("%s: eval %s: %v", tb.name, expr, err)
	}
}

// get evaluates expr (awaiting a promise) into T.
func get[T any](tb *tab, expr string) T {
	tb.b.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.b.t.Fatalf("%s: eval %s: %v", tb.name, expr, err)
	}
	return v
}

// wait polls the boolean expression every 20 ms until it is true and
// returns how long that took; it fails the test after limit.
func (tb *tab) wait(what, expr string, limit time.Duration) time.Duration {
	tb.b.t.Helper()
	start := time.Now()
	for {
		ok, err := chromedp.Run(tb.ctx, chromedp.Evaluate[bool](fmt.Sprintf("!!(%s)", expr)))
		if err != nil {
			tb.b.t.Fatalf("%s: waiting for %s: %v", tb.name, what, err)
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			tb.b.t.Fatalf("%s: %s not seen within %s (%s)", tb.name, what, limit, expr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// js quotes v as a JavaScript literal.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func card(studentID string) string {
	return fmt.Sprintf(`document.querySelector('.card[data-student-id=%s]')`, js(studentID))
}

func cardStatus(studentID, status string) string {
	return fmt.Sprintf(`%s?.querySelector('.status')?.textContent === %s`, card(studentID), js(status))
}

// artifactDir is testdata/artifacts at the module root (gitignored).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	out := filepath.Join(dir, "testdata", "artifacts")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// ----------------------------------------------------------------- tests

// A student and a tutor in two browser contexts: the tutor's grid shows the
// student arrive, a tab_hidden violation within 2 s, disconnected when the
// student's tab closes and submitted after another student submits.
func TestBrowserProctorSeesStudentLive(t *testing.T) {
	s := boot(t)
	b := newBrowser(t, 40*time.Second)
	sam := identity.User{ID: "stu-1", Role: identity.Student, Name: "Sam Student"}
	sue := identity.User{ID: "stu-2", Role: identity.Student, Name: "Sue Submitter"}

	proctor := b.newTab("tutor", s.url, s.Token(tutor), "/proctor/"+examID)
	proctor.wait("tutor online", `document.querySelector('#conn')?.dataset.state === 'online'`, 5*time.Second)

	student := b.newTab("student", s.url, s.Token(sam), "/exam/"+examID)
	student.wait("session started", `document.querySelector('#status')?.dataset.state === 'active'`, 5*time.Second)
	proctor.wait("student's card", cardStatus(sam.ID, "active"), 2*time.Second)
	if got := get[string](proctor, card(sam.ID)+`.querySelector('.name').textContent`); got != sam.Name {
		t.Fatalf("card name %q, want %q", got, sam.Name)
	}

	// Timestamps on both sides (one machine, one wall clock): when the
	// student's page saw itself hidden, and when the tutor's DOM showed it.
	student.eval(`document.addEventListener('visibilitychange', () => {
		if (document.visibilityState === 'hidden' && !window.__hiddenAt) window.__hiddenAt = Date.now();
	})`)
	proctor.eval(fmt.Sprintf(`(() => {
		window.__seen = {};
		const check = () => {
			const now = Date.now();
			const c = %s;
			if (!__seen.card && c && c.querySelector('.violations')?.textContent === '1'
				&& c.querySelector('.last-violation')?.textContent.includes('tab_hidden')) __seen.card = now;
			if (!__seen.stream && document.querySelector('#stream li[data-type="tab_hidden"][data-student-id=%s]')) __seen.stream = now;
		};
		new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
	})()`, card(sam.ID), js(sam.ID)))

	// Hide the exam tab the way a student does: open another tab in the
	// same window and make it the active one.
	start := time.Now()
	other, cancelOther := chromedp.NewContext(student.ctx, chromedp.WithNewWindow(false))
	defer cancelOther()
	if err := chromedp.Do(other, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	otherID := chromedp.FromContext(other).Target.TargetID
	if _, err := chromedp.CallBrowser(other, target.ActivateTarget, target.ActivateTargetParams{TargetID: otherID}); err != nil {
		t.Fatal(err)
	}
	student.wait("exam tab hidden", `document.visibilityState === 'hidden' && window.__hiddenAt`, 2*time.Second)
	proctor.wait("violation on the card and in the stream", `window.__seen.card && window.__seen.stream`, 3*time.Second)
	goSide := time.Since(start)
	hiddenAt := get[float64](student, `window.__hiddenAt`)
	seenCard := get[float64](proctor, `window.__seen.card`)
	seenStream := get[float64](proctor, `window.__seen.stream`)
	cardLatency := time.Duration(seenCard-hiddenAt) * time.Millisecond
	streamLatency := time.Duration(seenStream-hiddenAt) * time.Millisecond
	t.Logf("tab_hidden latency, student hidden → tutor DOM: card %s, stream %s (tab switch → seen, measured from Go: %s)",
		cardLatency, streamLatency, goSide.Round(time.Millisecond))
	if cardLatency > 2*time.Second || streamLatency > 2*time.Second {
		t.Fatalf("tab_hidden took card %s, stream %s to reach the tutor; want ≤ 2 s", cardLatency, streamLatency)
	}
	// A hidden tab is a violation, not a disconnect.
	if got := get[string](proctor, card(sam.ID)+`.querySelector('.status').textContent`); got != "active" {
		t.Fatalf("hidden student shows %q, want active", got)
	}

	// The student closes the exam tab (and the other one): disconnected at once.
	closedAt := time.Now()
	cancelOther()
	student.cancel()
	proctor.wait("disconnected", cardStatus(sam.ID, "disconnected"), 3*time.Second)
	t.Logf("tab closed → tutor shows disconnected: %s", time.Since(closedAt).Round(time.Millisecond))

	// A second student submits.
	student2 := b.newTab("student2", s.url, s.Token(sue), "/exam/"+examID)
	student2.wait("second session started", `document.querySelector('#status')?.dataset.state === 'active'`, 5*time.Second)
	proctor.wait("second student's card", cardStatus(sue.ID, "active"), 2*time.Second)
	student2.do(chromedp.Click(chromedp.CSS(`.options input[value="1"]`)), chromedp.WaitEnabled(chromedp.ID("submit")), chromedp.Click(chromedp.ID("submit")))
	student2.wait("submitted page", `document.querySelector('#status')?.dataset.state === 'submitted'`, 3*time.Second)
	proctor.wait("submitted", cardStatus(sue.ID, "submitted"), 2*time.Second)
	if got := get[string](proctor, `document.querySelector('#count-submitted').textContent + '/' + document.querySelector('#count-disconnected').textContent`); got != "1/1" {
		t.Fatalf("counters submitted/disconnected = %s, want 1/1", got)
	}
	// The same student on another device (nothing stored locally): the
	// server refuses a new session and the page says it was submitted.
	again := b.newTab("student2-again", s.url, s.Token(sue), "/exam/"+examID)
	again.wait("already submitted", `document.querySelector('#status')?.dataset.state === 'submitted' && !document.querySelector('#done').hidden`, 3*time.Second)
	if got := get[string](again, `document.querySelector('#done-text').textContent`); !strings.Contains(got, "already submitted") {
		t.Fatalf("second device shows %q", got)
	}
	again.cancel()
	proctor.wait("still submitted", cardStatus(sue.ID, "submitted"), time.Second)

	shot, err := chromedp.Run(proctor.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), "proctor-grid.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("tutor grid screenshot: %s", path)
}

// invigil.js on its own, in a page: after the server drops its sockets the
// client reconnects and re-subscribes (a later write reaches the page), and a
// call made while it cannot connect is delivered exactly once afterwards.
func TestBrowserClientReconnects(t *testing.T) {
	s := boot(t)
	b := newBrowser(t, 40*time.Second)
	stu := identity.User{ID: "stu-js", Role: identity.Student, Name: "Jo Script"}
	other := identity.User{ID: "stu-other", Role: identity.Student, Name: "Olly Other"}
	if code, body := s.Call(other, "proctoring.startSession", map[string]any{"exam_id": examID}); code != http.StatusOK {
		t.Fatalf("startSession: %d %s", code, body)
	}

	page := b.newTab("client", s.url, "", "")
	page.eval(fmt.Sprintf(`(async () => {
		const { connect } = await import('/static/invigil.js');
		const tokens = { tutor: %s, student: %s };
		window.__log = { tutor: [], student: [] };
		window.__data = [];
		for (const who of ['tutor', 'student']) {
			window['__' + who] = connect({
				getToken: async () => tokens[who],
				onState: (st) => __log[who].push(st),
				maxDelayMs: 1000,
			});
		}
		__tutor.subscribe('proctoring.getExamSessions', { exam_id: %s }, (v) => __data.push(v));
		await __student.call('proctoring.startSession', { exam_id: %s });
	})()`, js(s.Token(tutor)), js(s.Token(stu)), js(examID), js(examID)))

	// violations(id) is the violation_count of a student in the last data.
	page.eval(`window.violations = (id) => {
		const last = __data[__data.length - 1] || [];
		const row = last.find((r) => r.student_id === id);
		return row ? row.violation_count : -1;
	}`)
	page.wait("first data with both students", `violations('stu-js') === 0 && violations('stu-other') === 0`, 3*time.Second)

	// 1. The server drops every socket; the clients come back by themselves.
	s.App.Server.KillConnections()
	page.wait("both clients back online", `__log.tutor.filter((x) => x === 'online').length >= 2
		&& __log.student.filter((x) => x === 'online').length >= 2
		&& __tutor.state === 'online' && __student.state === 'online'`, 5*time.Second)
	t.Logf("state changes after the kill: tutor %v", get[[]string](page, `__log.tutor`))
	// A write after the reconnect reaches the re-sent subscription.
	if code, body := s.Call(other, "proctoring.logViolation", map[string]any{"exam_id": examID, "type": "copy"}); code != http.StatusOK {
		t.Fatalf("logViolation: %d %s", code, body)
	}
	page.wait("a write after the reconnect", `violations('stu-other') === 1`, 2*time.Second)

	// 2. Down: sockets dropped and refused. A call made now waits...
	restore := s.outage()
	page.wait("clients offline", `__student.state !== 'online' && __tutor.state !== 'online'`, 3*time.Second)
	page.eval(`window.__res = null;
		__student.call('proctoring.logViolation', { exam_id: 'demo', type: 'tab_hidden', detail: 'sent while offline', client_ts: new Date().toISOString() })
			.then((v) => { __res = { ok: v }; }, (e) => { __res = { err: e.code || String(e) }; });
		undefined; // do not wait for it`)
	time.Sleep(700 * time.Millisecond)
	countOffline := func() int {
		t.Helper()
		code, body := s.Query(tutor, "proctoring.getViolations", map[string]any{"exam_id": examID})
		if code != http.StatusOK {
			t.Fatalf("getViolations: %d %s", code, body)
		}
		var vs []struct {
			StudentID string `json:"student_id"`
			Detail    string `json:"detail"`
		}
		if err := json.Unmarshal([]byte(body), &vs); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range vs {
			if v.StudentID == stu.ID && v.Detail == "sent while offline" {
				n++
			}
		}
		return n
	}
	if n := countOffline(); n != 0 || get[bool](page, `__res !== null`) || get[string](page, `__student.state`) == "online" {
		t.Fatalf("while down: stored %d, result %s, state %s", n, get[string](page, `JSON.stringify(__res)`), get[string](page, `__student.state`))
	}

	// ...and is delivered once the server takes sockets again.
	restore()
	page.wait("the queued call answered", `__res !== null`, 5*time.Second)
	if res := get[string](page, `JSON.stringify(__res)`); !strings.HasPrefix(res, `{"ok":`) {
		t.Fatalf("queued call: %s", res)
	}
	page.wait("the subscription sees it", `violations('stu-js') === 1`, 2*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := countOffline(); n != 1 {
		t.Fatalf("the call made while offline was stored %d times, want exactly 1", n)
	}
	if n := get[int](page, `violations('stu-js')`); n != 1 {
		t.Fatalf("violation_count %d, want 1", n)
	}
}

// A student name that is HTML shows as text on the tutor's grid, stream and
// detail panel, and never runs.
func TestBrowserStudentNameIsText(t *testing.T) {
	s := boot(t)
	b := newBrowser(t, 30*time.Second)
	const payload = `<img src=x onerror=window.__xss=1>`
	evil := identity.User{ID: "stu-evil", Role: identity.Student, Name: "Eve " + payload}
	if code, body := s.Call(evil, "proctoring.startSession", map[string]any{"exam_id": examID}); code != http.StatusOK {
		t.Fatalf("startSession: %d %s", code, body)
	}
	if code, body := s.Call(evil, "proctoring.logViolation", map[string]any{
		"exam_id": examID, "type": "paste", "detail": `<img src=x onerror=window.__xss=2>`,
	}); code != http.StatusOK {
		t.Fatalf("logViolation: %d %s", code, body)
	}

	proctor := b.newTab("tutor", s.url, s.Token(tutor), "/proctor/"+examID)
	proctor.wait("the card", card(evil.ID), 5*time.Second)
	proctor.wait("the stream", `document.querySelector('#stream li[data-type="paste"]')`, 2*time.Second)
	proctor.do(chromedp.Click(chromedp.CSS(`.card[data-student-id="stu-evil"]`)))
	proctor.wait("the detail panel", `document.querySelector('#detail-violations li')`, 2*time.Second)
	time.Sleep(300 * time.Millisecond) // an <img src=x> would have failed to load by now

	if got := get[string](proctor, card(evil.ID)+`.querySelector('.name').textContent`); got != evil.Name {
		t.Fatalf("card name %q, want the literal %q", got, evil.Name)
	}
	if got := get[string](proctor, `document.querySelector('#stream li .who').textContent`); got != evil.Name {
		t.Fatalf("stream name %q, want the literal %q", got, evil.Name)
	}
	if got := get[string](proctor, `document.querySelector('#detail-name').textContent`); got != evil.Name {
		t.Fatalf("detail name %q, want the literal %q", got, evil.Name)
	}
	if !get[bool](proctor, `document.querySelector('#grid').textContent.includes(`+js(payload)+`)`) {
		t.Fatal("the grid does not show the name's markup as text")
	}
	if n := get[int](proctor, `document.querySelectorAll('#grid img, #stream img, #detail img, #alert img').length`); n != 0 {
		t.Fatalf("%d <img> elements on the page", n)
	}
	if xss := get[string](proctor, `typeof window.__xss`); xss != "undefined" {
		t.Fatalf("window.__xss is %s: the name ran as HTML", xss)
	}
}

// Both pages say so when they lose the connection, and recover by themselves.
func TestBrowserPagesShowConnectionLoss(t *testing.T) {
	s := boot(t)
	b := newBrowser(t, 40*time.Second)
	stu := identity.User{ID: "stu-conn", Role: identity.Student, Name: "Con Nection"}

	proctor := b.newTab("tutor", s.url, s.Token(tutor), "/proctor/"+examID)
	student := b.newTab("student", s.url, s.Token(stu), "/exam/"+examID)
	for _, p := range []*tab{proctor, student} {
		p.wait("Live", `document.querySelector('#conn').dataset.state === 'online' && document.querySelector('#conn').textContent === 'Live'`, 5*time.Second)
	}
	student.wait("session started", `document.querySelector('#status').dataset.state === 'active'`, 3*time.Second)
	proctor.wait("student's card", cardStatus(stu.ID, "active"), 2*time.Second)

	restore := s.outage()
	lost := `document.querySelector('#conn').dataset.state !== 'online'
		&& ['Reconnecting…', 'Offline'].includes(document.querySelector('#conn').textContent)
		&& !document.querySelector('#banner').hidden && document.body.classList.contains('stale')`
	for _, p := range []*tab{proctor, student} {
		p.wait("connection lost on screen", lost, 3*time.Second)
	}
	// Still down a second later: the pages keep saying so while they retry.
	time.Sleep(time.Second)
	for _, p := range []*tab{proctor, student} {
		if !get[bool](p, "!!("+lost+")") {
			t.Fatalf("%s: stopped showing the lost connection while the server was down: %s", p.name,
				get[string](p, `document.querySelector('#conn').textContent`))
		}
	}

	restore()
	back := `document.querySelector('#conn').dataset.state === 'online' && document.querySelector('#conn').textContent === 'Live'
		&& document.querySelector('#banner').hidden && !document.body.classList.contains('stale')`
	for _, p := range []*tab{proctor, student} {
		d := p.wait("recovered", back, 15*time.Second)
		t.Logf("%s recovered %s after the server came back", p.name, d.Round(time.Millisecond))
	}
	// The recovered tutor page is live again: a new violation shows.
	student.do(chromedp.Evaluate[chromedp.Void](`document.dispatchEvent(new Event('copy'))`))
	proctor.wait("a violation after recovery", `document.querySelector('#stream li[data-type="copy"]')`, 3*time.Second)
	proctor.wait("the student active again", cardStatus(stu.ID, "active"), 8*time.Second)
}

// typeInto focuses the element sel selects (a CSS selector) and types keys
// as key events (kb.Enter and the like included). chromedp's SendKeys reads
// a node's attributes outside its lock while chromedp's DOM event handler
// writes them, a race the race detector reports, so it is not used here.
func typeInto(sel, keys string) chromedp.Action[chromedp.Void] {
	focus := chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`void document.querySelector(%s).focus()`, js(sel)))
	return chromedp.Steps(focus, chromedp.KeyEvent(keys))
}
