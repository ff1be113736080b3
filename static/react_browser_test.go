package static_test

// The React kit in a real React build: examples/react bundled by Vite
// (react_test.go), served by its own file server on another origin than
// invigil (as the platform's app is), run in Chromium against the real
// wiring. The pages sign in the way the platform does: a Supabase session
// in localStorage, read by the real @supabase/supabase-js client and handed
// to InvigilProvider.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/identity"
)

// reactSite is invigil and the example app built against it, with a
// stand-in for Supabase Auth (the example's VITE_SUPABASE_URL).
type reactSite struct {
	*apptest.Harness
	app  string // the example's origin (its own file server)
	auth *fakeAuth
}

// fakeAuth answers what supabase-js asks of Supabase Auth here: a refresh
// (a new access token from the harness's issuer, for the user the refresh
// token names, with the role it has now) and a sign-out.
type fakeAuth struct {
	h         *apptest.Harness
	url       string
	mu        sync.Mutex
	users     map[string]identity.User // by refresh token
	refreshes int
}

func (f *fakeAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Headers", "*")
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	switch {
	case r.Method == http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/auth/v1/token" && r.URL.Query().Get("grant_type") == "refresh_token":
		var body struct {
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		u, ok := f.users[body.RefreshToken]
		f.refreshes++
		f.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"Invalid Refresh Token"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(f.session(u)))
	case r.URL.Path == "/auth/v1/logout":
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// session is a Supabase session for u, as the Auth API returns it and as
// supabase-js stores it: its access token is one invigil verifies.
func (f *fakeAuth) session(u identity.User) string {
	refresh := fmt.Sprintf("refresh-%s-%d", u.ID, time.Now().UnixNano())
	f.mu.Lock()
	f.users[refresh] = u
	f.mu.Unlock()
	b, _ := json.Marshal(map[string]any{
		"access_token": f.h.Token(u), "refresh_token": refresh, "token_type": "bearer",
		"expires_in": 3600, "expires_at": time.Now().Add(time.Hour).Unix(),
		"user": map[string]any{
			"id": u.ID, "aud": "authenticated", "role": "authenticated", "email": u.ID + "@example.com",
			"app_metadata": map[string]any{"role": string(u.Role)}, "user_metadata": map[string]any{"full_name": u.Name},
			"created_at": "2026-01-01T00:00:00Z",
		},
	})
	return string(b)
}

// setRole makes the next refresh of u's sessions carry role (Supabase puts
// app_metadata changes into the next token).
func (f *fakeAuth) setRole(id string, role identity.Role) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, u := range f.users {
		if u.ID == id {
			u.Role = role
			f.users[k] = u
		}
	}
}

// storageKey is where supabase-js keeps the session: sb-<first label of
// the project URL's host>-auth-token.
func (f *fakeAuth) storageKey() string {
	host := strings.TrimPrefix(strings.TrimPrefix(f.url, "http://"), "https://")
	return "sb-" + strings.Split(strings.Split(host, ":")[0], ".")[0] + "-auth-token"
}

// bootReact starts invigil (real clock, exam "demo" taught by tutor-1),
// builds the example with env against it and serves the build.
func bootReact(t *testing.T, env map[string]string, development bool, opts ...apptest.Option) *reactSite {
	t.Helper()
	requireChromium(t)
	requireExample(t)
	var dist atomic.Pointer[string]
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.FileServer(http.Dir(*dist.Load())).ServeHTTP(w, r)
	}))
	t.Cleanup(files.Close)
	opts = append([]apptest.Option{apptest.WithRealClock(), apptest.WithConfig(func(c *app.Config) {
		c.AllowedOrigins = []string{files.URL} // the app is on another origin, as in production
	})}, opts...)
	h := apptest.Boot(t, opts...)
	h.Exam(exam.Registration{ExamID: examID, Title: "React exam", TutorIDs: []string{tutor.ID}, QuizCode: "REACT1", Status: exam.Open})
	auth := &fakeAuth{h: h, users: map[string]identity.User{}}
	authSrv := httptest.NewServer(auth)
	t.Cleanup(authSrv.Close)
	auth.url = authSrv.URL
	vars := map[string]string{
		"VITE_INVIGIL_URL":  "ws" + strings.TrimPrefix(h.URL, "http") + "/ws",
		"VITE_SUPABASE_URL": auth.url,
	}
	for k, v := range env {
		vars[k] = v
	}
	d := buildExample(t, vars, development)
	dist.Store(&d)
	return &reactSite{Harness: h, app: files.URL, auth: auth}
}

// spy records, in the page, every WebSocket frame (window.__ws.sent and
// .got, parsed) and can hold outgoing frames: while window.__ws.hold(frame)
// returns true the frame waits in window.__ws.held until __ws.release().
const spy = `(() => {
	const W = window.WebSocket;
	const ws = window.__ws = { sockets: 0, sent: [], got: [], held: [], hold: () => false };
	ws.release = () => { const h = ws.held.splice(0); for (const [s, d] of h) s(d); };
	window.WebSocket = class extends W {
		constructor(...args) {
			super(...args);
			ws.sockets++;
			this.addEventListener('message', (e) => { try { ws.got.push(JSON.parse(e.data)); } catch {} });
			const send = (d) => super.send(d);
			this.send = (d) => {
				let f = null;
				try { f = JSON.parse(d); } catch {}
				ws.sent.push(f);
				if (f && ws.hold(f)) ws.held.push([send, d]);
				else send(d);
			};
		}
	};
})()`

// openExample opens route (#/…) of the example in a fresh browser context,
// signed in as u (the zero User: signed out), with the frame spy installed.
func (s *reactSite) openExample(b *browser, name string, u identity.User, route string) *tab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext(), chromedp.WithListener(b.listener(name)))
	tb := &tab{b: b, name: name, ctx: ctx, cancel: cancel}
	b.t.Cleanup(cancel)
	tb.do(chromedp.Navigate(s.app + "/robots.txt")) // the origin, for localStorage
	if u.ID != "" {
		tb.eval(fmt.Sprintf(`localStorage.setItem(%s, %s)`, js(s.auth.storageKey()), js(s.auth.session(u))))
	}
	if _, err := chromedp.Call(tb.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: spy}); err != nil {
		b.t.Fatalf("%s: install the frame spy: %v", name, err)
	}
	tb.do(chromedp.Navigate(s.app + "/" + route))
	return tb
}

// calls reads invigil_calls_total{fn, code="ok"} from /metrics.
func (s *reactSite) calls(t *testing.T, fn string) int {
	t.Helper()
	res, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	want := `invigil_calls_total{code="ok",fn="` + fn + `"} `
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), want); ok {
			n, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", sc.Text(), err)
			}
			return int(n)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return 0
}

// sessionRow reads one student's row of the grid over HTTP, as the tutor.
func (s *reactSite) sessionRow(t *testing.T, studentID string) map[string]any {
	t.Helper()
	code, body := s.Query(tutor, "proctoring.getExamSessions", map[string]any{"exam_id": examID})
	if code != http.StatusOK {
		t.Fatalf("getExamSessions: %d %s", code, body)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(body), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r["student_id"] == studentID {
			return r
		}
	}
	return nil
}

// The tutor's dashboard (useQuery on proctoring.getExamSessions) re-renders
// when a student's heartbeat is written: the change arrives as a delta of
// one row, and of the memoized rows only that student's renders again.
func TestReactQueryRerendersOnWrite(t *testing.T) {
	s := bootReact(t, nil, true)
	b := newBrowser(t, 60*time.Second)
	ann := identity.User{ID: "stu-ann", Role: identity.Student, Name: "Ann Able"}
	bob := identity.User{ID: "stu-bob", Role: identity.Student, Name: "Bob Baker"}
	for _, u := range []identity.User{ann, bob} {
		if code, body := s.Call(u, "proctoring.startSession", map[string]any{"exam_id": examID}); code != http.StatusOK {
			t.Fatalf("startSession %s: %d %s", u.ID, code, body)
		}
	}

	tb := s.openExample(b, "tutor", tutor, "#/tutor/"+examID)
	row := func(id string) string {
		return fmt.Sprintf(`document.querySelector('tr.session[data-student-id=%s]')`, js(id))
	}
	tb.wait("both students on the grid", row(ann.ID)+` && `+row(bob.ID), 10*time.Second)
	tb.wait("online", `document.querySelector('#conn')?.dataset.state === 'online'`, 5*time.Second)
	// usePresence put the tutor in the exam's scope.
	tb.wait("the tutor's presence chip", fmt.Sprintf(`document.querySelector('#watching li[data-user-id=%s]')`, js(tutor.ID)), 3*time.Second)
	if got := get[string](tb, row(ann.ID)+`.querySelector('.answered').textContent`); got != "0" {
		t.Fatalf("Ann's answered count %q, want 0", got)
	}
	renders := func(name string) int { return get[int](tb, fmt.Sprintf(`window.__example.renders[%s] ?? 0`, js(name))) }
	annBefore, bobBefore, dashBefore := renders("row:"+ann.ID), renders("row:"+bob.ID), renders("dashboard")
	frames := `window.__ws.got.filter((f) => f.type === %s && f.id === window.__ws.sent.find((x) => x && x.type === 'sub' && x.query === 'proctoring.getExamSessions')?.id).length`
	dataBefore := get[int](tb, fmt.Sprintf(frames, js("data")))

	// Ann answers three questions; her page's heartbeat is written.
	if code, body := s.Call(ann, "proctoring.heartbeat", map[string]any{"exam_id": examID, "current_question": 4, "answered_count": 3}); code != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", code, body)
	}
	took := tb.wait("Ann's new count on the grid", row(ann.ID)+`.querySelector('.answered').textContent === '3'`, 2*time.Second)
	t.Logf("heartbeat written → the tutor's React grid shows it: %s", took.Round(time.Millisecond))

	if got := renders("dashboard"); got <= dashBefore {
		t.Fatalf("the dashboard did not re-render (%d renders before and after)", got)
	}
	if got := renders("row:" + ann.ID); got <= annBefore {
		t.Fatalf("Ann's row did not re-render")
	}
	if got := renders("row:" + bob.ID); got != bobBefore {
		t.Fatalf("Bob's row re-rendered (%d → %d renders): unchanged rows must keep their identity", bobBefore, got)
	}
	deltas := get[int](tb, fmt.Sprintf(frames, js("delta")))
	if deltas < 1 {
		t.Fatalf("no delta frame for the grid's subscription; frames: %s", get[string](tb, `JSON.stringify(window.__ws.got.map((f) => f.type))`))
	}
	if got := get[int](tb, fmt.Sprintf(frames, js("data"))); got != dataBefore {
		t.Fatalf("the write came as a whole data frame (%d → %d), not a delta", dataBefore, got)
	}
	t.Logf("grid subscription: %d data frame(s), %d delta(s); renders: dashboard %d, Ann's row %d → %d, Bob's row %d → %d",
		dataBefore, deltas, renders("dashboard"), annBefore, renders("row:"+ann.ID), bobBefore, renders("row:"+bob.ID))
}

// useProctoring under React StrictMode (a development build, where React
// mounts the exam view, unmounts it and mounts it again): exactly one
// proctoring.startSession reaches the server, heartbeats carry progress,
// a copy is reported, and Submit ends the session.
func TestReactProctoringStartsOnceUnderStrictMode(t *testing.T) {
	s := bootReact(t, nil, true)
	b := newBrowser(t, 60*time.Second)
	sam := identity.User{ID: "stu-sam", Role: identity.Student, Name: "Sam Student"}

	tb := s.openExample(b, "student", sam, "#/exam/"+examID)
	tb.wait("session active", `document.querySelector('#status')?.dataset.phase === 'active'`, 10*time.Second)
	if n := get[int](tb, `window.__example.mounts.ExamView`); n != 2 {
		t.Fatalf("ExamView mounted %d times; StrictMode in a development build mounts it twice (is the build in development mode?)", n)
	}
	if n := s.calls(t, "proctoring.startSession"); n != 1 {
		t.Fatalf("server counted %d proctoring.startSession calls, want exactly 1", n)
	}
	if n := get[int](tb, `window.__ws.sent.filter((f) => f?.type === 'call' && f.fn === 'proctoring.startSession').length`); n != 1 {
		t.Fatalf("the page sent startSession %d times, want 1", n)
	}
	if n := get[int](tb, `window.__ws.sockets`); n != 1 {
		t.Fatalf("the page opened %d sockets, want 1 (StrictMode must not reconnect)", n)
	}

	// The first heartbeat goes at once; one with progress as soon as the
	// server takes the next (5 s apart).
	tb.do(chromedp.Click(chromedp.CSS(`#question input[value="1"]`)))
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := s.sessionRow(t, sam.ID)
		if r != nil && r["answered_count"] == float64(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the answer never reached the tutor's grid: %v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := s.calls(t, "proctoring.heartbeat"); n < 2 {
		t.Fatalf("%d heartbeats, want at least 2", n)
	}

	// A violation the hook's listeners see.
	tb.eval(`document.dispatchEvent(new Event('copy'))`)
	tb.wait("recorded on the page", `document.querySelector('#recorded')?.textContent === '1'`, 2*time.Second)
	deadline = time.Now().Add(3 * time.Second)
	for s.sessionRow(t, sam.ID)["violation_count"] != float64(1) {
		if time.Now().After(deadline) {
			t.Fatalf("the copy never reached the server: %v", s.sessionRow(t, sam.ID))
		}
		time.Sleep(50 * time.Millisecond)
	}

	tb.do(chromedp.Click(chromedp.CSS(`#submit`)))
	tb.wait("submitted", `document.querySelector('#status')?.dataset.phase === 'submitted'`, 5*time.Second)
	if st := s.sessionRow(t, sam.ID)["status"]; st != "submitted" {
		t.Fatalf("status %v after submit", st)
	}
	if n := s.calls(t, "proctoring.startSession"); n != 1 {
		t.Fatalf("server counted %d startSession calls at the end, want 1", n)
	}
}

// With VITE_USE_INVIGIL_PROCTORING=false and VITE_USE_INVIGIL_CHAT=false the
// exam and support routes render the platform's own views and never open a
// socket; the leaderboard's flag stays on: the projector, signed out, shows
// a score pushed by grade-exam live. (A production build.)
func TestReactFlagOffRendersFallback(t *testing.T) {
	s := bootReact(t, map[string]string{"VITE_USE_INVIGIL_PROCTORING": "false", "VITE_USE_INVIGIL_CHAT": "false"}, false)
	b := newBrowser(t, 60*time.Second)
	sam := identity.User{ID: "stu-sam", Role: identity.Student, Name: "Sam Student"}

	tb := s.openExample(b, "student", sam, "#/exam/"+examID)
	tb.wait("the fallback exam view", `document.querySelector('#exam')?.dataset.backend === 'supabase'`, 10*time.Second)
	tb.do(chromedp.Click(chromedp.CSS(`#question input[value="1"]`)))
	tb.eval(`document.dispatchEvent(new Event('copy'))`)
	time.Sleep(300 * time.Millisecond) // what a socket would have had time to do
	if n := get[int](tb, `window.__ws.sockets`); n != 0 {
		t.Fatalf("the fallback path opened %d sockets to invigil", n)
	}
	if get[bool](tb, `!!document.querySelector('#conn')`) {
		t.Fatal("the fallback path shows invigil's connection badge")
	}
	if n := s.calls(t, "proctoring.startSession"); n != 0 {
		t.Fatalf("server counted %d startSession calls with proctoring off", n)
	}
	support := s.openExample(b, "support", sam, "#/support")
	support.wait("the fallback chat", `document.querySelector('#chat')?.dataset.backend === 'supabase'`, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := get[int](support, `window.__ws.sockets`); n != 0 {
		t.Fatalf("the fallback chat opened %d sockets to invigil", n)
	}

	// Leaderboard still on: the projector, nobody signed in.
	kids := s.openExample(b, "projector", identity.User{}, "#/kids/REACT1")
	kids.wait("the board (invigil)", `document.querySelector('#board')?.dataset.backend === 'invigil'`, 10*time.Second)
	if code, body := s.Hook("/hooks/scores", "score_sub-1", map[string]any{
		"submission_id": "sub-1", "exam_id": examID, "quiz_code": "REACT1", "nickname": "Rocket",
		"score": 9, "max_score": 10, "submitted_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339),
	}); code != http.StatusOK {
		t.Fatalf("score: %d %s", code, body)
	}
	took := kids.wait("the score on the board", `document.querySelector('li.entry .nick')?.textContent === 'Rocket'`, 3*time.Second)
	t.Logf("score pushed → on the signed-out projector: %s", took.Round(time.Millisecond))
	if got := get[string](kids, `document.querySelector('#players').textContent`); got != "1" {
		t.Fatalf("players %q, want 1", got)
	}
	if n := get[int](kids, `window.__ws.sent.filter((f) => f?.type === 'auth').length`); n != 0 {
		t.Fatalf("the signed-out projector sent %d auth frames", n)
	}
}

// useChat: the student's message shows at once, marked pending, while the
// server has not seen it (the page holds the frame that carries it); once
// the server stores it, it shows once, no longer pending, and is stored
// once. The agent, in another browser, takes the chat; its typing and
// its reply reach the student.
func TestReactChatShowsOptimisticMessageOnce(t *testing.T) {
	s := bootReact(t, nil, true)
	b := newBrowser(t, 60*time.Second)
	sam := identity.User{ID: "stu-sam", Role: identity.Student, Name: "Sam Student"}
	alex := identity.User{ID: "agent-alex", Role: identity.Agent, Name: "Alex Agent"}

	student := s.openExample(b, "student", sam, "#/support")
	student.wait("the start button", `document.querySelector('#start')`, 10*time.Second)
	student.do(chromedp.Click(chromedp.CSS(`#start`)))
	student.wait("the chat", `document.querySelector('#chat[data-session-id]')?.dataset.sessionId`, 5*time.Second)
	chatID := get[string](student, `document.querySelector('#chat').dataset.sessionId`)

	stored := func(body string) int {
		t.Helper()
		code, out := s.Query(sam, "chat.getMessages", map[string]any{"session_id": chatID})
		if code != http.StatusOK {
			t.Fatalf("getMessages: %d %s", code, out)
		}
		var ms []struct {
			Body string `json:"body"`
		}
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range ms {
			if m.Body == body {
				n++
			}
		}
		return n
	}
	shown := func(body string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#messages li.message')].filter((li) => li.querySelector('.body').textContent === %s)`, js(body))
	}

	// Hold the frame that would carry the message to the server.
	const body = "Hello from React"
	student.eval(`window.__ws.hold = (f) => f.type === 'call' && f.fn === 'chat.sendMessage'`)
	student.do(typeInto(`#draft`, body), chromedp.Click(chromedp.CSS(`#send`)))
	student.wait("the optimistic message", shown(body)+`.length === 1 && `+shown(body)+`[0].dataset.pending === 'true'`, 2*time.Second)
	if n := get[int](student, `window.__ws.held.length`); n != 1 {
		t.Fatalf("%d frames held, want the one sendMessage", n)
	}
	if n := stored(body); n != 0 {
		t.Fatalf("the server has the message %d times before its frame left the page", n)
	}

	// From now on, count the copies the page shows after every DOM change:
	// a pending copy beside the server's, even for one render, is a 2.
	student.eval(fmt.Sprintf(`window.__counts = []; new MutationObserver(() => __counts.push(%s.length))
		.observe(document.querySelector('#messages'), {subtree: true, childList: true, characterData: true, attributes: true})`, shown(body)))

	// Let it go: the server's copy replaces the pending one.
	student.eval(`window.__ws.hold = () => false; window.__ws.release()`)
	took := student.wait("the confirmed message", shown(body)+`.length === 1 && `+shown(body)+`[0].dataset.pending === 'false'`, 3*time.Second)
	t.Logf("released → shown as the server's: %s", took.Round(time.Millisecond))
	if n := stored(body); n != 1 {
		t.Fatalf("the server stored the message %d times, want 1", n)
	}

	// The agent takes the chat and answers; the student sees the typing and the reply.
	agent := s.openExample(b, "agent", alex, "#/support/"+chatID)
	agent.wait("the claim button", `document.querySelector('#claim')`, 10*time.Second)
	agent.do(chromedp.Click(chromedp.CSS(`#claim`)))
	agent.wait("claimed", `document.querySelector('#chat-status')?.textContent === 'active'`, 3*time.Second)
	agent.wait("the student's message", shown(body)+`.length === 1`, 3*time.Second)
	agent.do(typeInto(`#draft`, "Hi Sam"))
	student.wait("the agent typing", `document.querySelector('#typing')?.textContent.includes('Alex Agent')`, 3*time.Second)
	agent.do(chromedp.Click(chromedp.CSS(`#send`)))
	student.wait("the reply", shown("Hi Sam")+`.length === 1`, 3*time.Second)
	student.wait("typing cleared", `document.querySelector('#typing')?.textContent === ''`, 3*time.Second)
	// The agent read the student's message (its receipt reaches the student).
	student.wait("read receipt", shown(body)+`[0].querySelector('.read')`, 3*time.Second)
	if counts := get[[]int](student, `window.__counts`); len(counts) == 0 || slices.ContainsFunc(counts, func(n int) bool { return n != 1 }) {
		t.Fatalf("the student's message was shown %v times across DOM changes, want always 1", counts)
	}
	// And in what useChat handed each render: no message twice, ever.
	if dup := get[string](student, `(() => {
		for (const ids of window.__example.lists.messages) {
			const seen = new Set();
			for (const id of ids) { if (seen.has(id)) return JSON.stringify(ids); seen.add(id); }
		}
		return '';
	})()`); dup != "" {
		t.Fatalf("useChat handed a render the same message twice: %s", dup)
	}
	if n := stored(body); n != 1 {
		t.Fatalf("stored %d times at the end, want 1", n)
	}
}

// InvigilProvider follows the Supabase session: a refresh (TOKEN_REFRESHED)
// is sent on the open socket, its subscriptions intact; a refreshed token
// with another role is judged again (the tutor's grid ends, forbidden); a
// sign-out drops the token (the socket is replaced by one without).
func TestReactProviderFollowsSupabaseSession(t *testing.T) {
	s := bootReact(t, nil, true)
	b := newBrowser(t, 60*time.Second)
	ann := identity.User{ID: "stu-ann", Role: identity.Student, Name: "Ann Able"}
	if code, body := s.Call(ann, "proctoring.startSession", map[string]any{"exam_id": examID}); code != http.StatusOK {
		t.Fatalf("startSession: %d %s", code, body)
	}
	tb := s.openExample(b, "tutor", tutor, "#/tutor/"+examID)
	answered := `document.querySelector('tr.session[data-student-id="stu-ann"] .answered')?.textContent`
	tb.wait("Ann on the grid", answered+` === '0'`, 10*time.Second)
	tb.wait("online", `document.querySelector('#conn')?.dataset.state === 'online'`, 5*time.Second)
	auths := `window.__ws.sent.filter((f) => f?.type === 'auth')`

	// A refresh: the new token goes out on the same socket.
	tb.eval(`window.__supabase.auth.refreshSession().then(() => undefined)`)
	tb.wait("a second auth frame", auths+`.length === 2`, 3*time.Second)
	if same := get[bool](tb, auths+`[0].token === `+auths+`[1].token`); same {
		t.Fatal("the refresh sent the old token again")
	}
	if n := get[int](tb, `window.__ws.sockets`); n != 1 {
		t.Fatalf("%d sockets after a refresh, want 1", n)
	}
	if code, body := s.Call(ann, "proctoring.heartbeat", map[string]any{"exam_id": examID, "current_question": 2, "answered_count": 1}); code != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", code, body)
	}
	tb.wait("a write after the refresh", answered+` === '1'`, 2*time.Second)

	// Supabase demotes the tutor: the next token says student.
	s.auth.setRole(tutor.ID, identity.Student)
	tb.eval(`window.__supabase.auth.refreshSession().then(() => undefined)`)
	tb.wait("the grid ends, forbidden", `document.querySelector('#error')?.dataset.code === 'forbidden'`, 3*time.Second)

	// Sign-out: no token any more.
	tb.eval(`window.__supabase.auth.signOut().then(() => undefined)`)
	tb.wait("a socket without a token", `window.__ws.sockets === 2`, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := get[int](tb, auths+`.length`); n != 3 {
		t.Fatalf("%d auth frames after the sign-out, want the 3 before it", n)
	}
	s.auth.mu.Lock()
	n := s.auth.refreshes
	s.auth.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d refreshes reached Supabase, want 2 (invigil must not refresh on its own here)", n)
	}
}
