package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Setup: exams registered, then tutors' dashboards and projectors, then the
// students (64 at a time, or along --ramp), then the chat rooms. Failures
// are counted like any call's, by code; only a setup where no tutor or no
// student got through stops the run.
// setup registers the exams, opens the tutors' dashboards and projectors,
// then the students' sockets, then the chat rooms.
func (r *runner) setup(ctx context.Context) error {
	r.server, r.serverNote = findServer(r.cfg)
	if err := r.registerExams(ctx); err != nil {
		return err
	}
	for _, e := range r.exams {
		for _, id := range e.tutorIDs {
			w := &watcher{r: r, tutor: true, userID: id, exam: e, subs: map[string]*sub{}, gone: make(chan struct{})}
			e.tutors = append(e.tutors, w)
			r.tutors = append(r.tutors, w)
		}
		if r.cfg.ScoresRate > 0 {
			e.projector = &watcher{r: r, exam: e, subs: map[string]*sub{}, gone: make(chan struct{}), seenNick: map[string]bool{}}
			r.projectors = append(r.projectors, e.projector)
		}
	}
	parallel(ctx, len(r.tutors), setupWidth, func(i int) { r.openTutor(ctx, r.tutors[i]) })
	parallel(ctx, len(r.projectors), setupWidth, func(i int) { r.openProjector(ctx, r.projectors[i]) })
	if len(r.tutors) > 0 && r.st.tutorsReady.Load() == 0 {
		return fmt.Errorf("no tutor could subscribe to its exam's sessions (errors: %v)%s", r.errorsOf(fnToken, fnConnect, fnSessions), r.authHint())
	}
	r.logf("%d/%d tutors watching; %d students joining…", r.st.tutorsReady.Load(), len(r.tutors), len(r.students))

	done := make(chan struct{})
	go r.setupProgress(ctx, done)
	start := time.Now()
	parallel(ctx, len(r.students), setupWidth, func(i int) {
		if r.cfg.Ramp > 0 {
			at := start.Add(time.Duration(int64(r.cfg.Ramp) * int64(i) / int64(len(r.students))))
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
				return
			}
		}
		r.openStudent(ctx, r.students[i])
	})
	close(done)
	if r.st.studentsJoined.Load() == 0 {
		return fmt.Errorf("no student could join (errors: %v)%s", r.errorsOf(fnToken, fnConnect, fnStart), r.authHint())
	}
	r.openRooms(ctx)
	return ctx.Err()
}

// authHint says what to check when the server refuses our tokens.
func (r *runner) authHint() string {
	if _, ok := r.st.fns[fnConnect].errs.Load("unauthenticated"); !ok || r.cfg.Demo {
		return ""
	}
	return fmt.Sprintf(": tokens are signed with --jwt-secret and carry iss %q (--issuer): are they the server's SUPABASE_JWT_SECRET and SUPABASE_JWT_ISSUER?", r.cfg.Issuer)
}

// errorsOf lists the error codes of fns so far, for a setup failure.
func (r *runner) errorsOf(fns ...string) map[string]int64 {
	out := map[string]int64{}
	for _, fn := range fns {
		r.st.fns[fn].errs.Range(func(k, v any) bool {
			out[fn+" "+k.(string)] += v.(*atomic.Int64).Load()
			return true
		})
	}
	return out
}

func (r *runner) setupProgress(ctx context.Context, done chan struct{}) {
	if r.cfg.Progress <= 0 {
		return
	}
	t := time.NewTicker(r.cfg.Progress)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			if r.ctl != nil && r.ctl.progress != nil {
				r.ctl.progress(r.snapshot(0))
				continue
			}
			r.logf("setup: %d/%d students joined, %d errors", r.st.studentsJoined.Load(), len(r.students), r.errorCount())
		}
	}
}

func (r *runner) errorCount() int64 {
	var n int64
	for _, f := range r.st.fns {
		f.errs.Range(func(_, v any) bool {
			n += v.(*atomic.Int64).Load()
			return true
		})
	}
	return n
}

// parallel runs f(0..n-1) on at most width goroutines, until ctx ends.
func parallel(ctx context.Context, n, width int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, width) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// registerExams sends each exam of this share to /hooks/exams, open, with
// its tutors; any student may join. A refusal stops the run: without its
// exams every join would fail.
func (r *runner) registerExams(ctx context.Context) error {
	var (
		mu    sync.Mutex
		first error
	)
	parallel(ctx, len(r.exams), 8, func(i int) {
		e := r.exams[i]
		body, _ := json.Marshal(map[string]any{
			"exam_id": e.id, "title": "invigil load " + e.id, "tutor_ids": append([]string{}, e.tutorIDs...),
			"status": "open", "quiz_code": e.quiz,
		})
		r.st.attempt(fnHookExams)
		start := time.Now()
		code, detail := postHook(ctx, r.http, r.base, r.cfg.WebhookSecret, "/hooks/exams",
			fmt.Sprintf("load-%s-exam-%s", r.cfg.RunID, e.id), body)
		r.st.done(fnHookExams, code, time.Since(start))
		if code != "" {
			mu.Lock()
			if first == nil {
				first = fmt.Errorf("register exam %s through /hooks/exams: %s %s (is --webhook-secret the server's INVIGIL_WEBHOOK_SECRET?)", e.id, code, detail)
			}
			mu.Unlock()
		}
	})
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// dial opens /ws from the next source address, and authenticates when
// token is not empty. It returns the error code for the stats, or "".
func (r *runner) dial(ctx context.Context, dialers []*websocket.Dialer, i int, token string) (*websocket.Conn, string) {
	r.st.attempt(fnConnect)
	start := time.Now()
	conn, res, err := dialers[i%len(dialers)].DialContext(ctx, r.ws, nil)
	if err != nil {
		code := dialCode(err, res)
		r.st.done(fnConnect, code, 0)
		return nil, code
	}
	if token != "" {
		if code := authenticate(conn, token); code != "" {
			conn.Close()
			r.st.done(fnConnect, code, 0)
			return nil, code
		}
	}
	r.st.done(fnConnect, "", time.Since(start))
	return conn, ""
}

// dialCode names why a socket did not open: the limits a large run meets
// first are descriptors and ports, on either side.
func dialCode(err error, res *http.Response) string {
	var ne net.Error
	switch {
	case res != nil:
		return fmt.Sprintf("http_%d", res.StatusCode)
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "dial_too_many_open_files"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "dial_no_free_port"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "dial_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "dial_reset"
	case errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	}
	return errDial
}

// authenticate sends auth and reads the answer: "" when authed, else the
// server's error code.
func authenticate(conn *websocket.Conn, token string) string {
	b, _ := json.Marshal(map[string]string{"type": "auth", "token": token})
	conn.SetWriteDeadline(time.Now().Add(callTimeout))
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return errIO
	}
	conn.SetReadDeadline(time.Now().Add(callTimeout))
	defer conn.SetReadDeadline(time.Time{})
	_, msg, err := conn.ReadMessage()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errTimeout
		}
		return errIO
	}
	f, err := parseFrame(msg)
	switch {
	case err != nil:
		return "unreadable_frame"
	case f.Type == "authed":
		return ""
	case f.Code != "":
		return f.Code
	}
	return "unexpected_" + f.Type
}

func (r *runner) token(ctx context.Context, userID, role, name string) (string, bool) {
	if !r.cfg.Demo {
		tok, err := r.tokens.Token(ctx, userID, role, name)
		return tok, err == nil
	}
	r.st.attempt(fnToken)
	start := time.Now()
	tok, err := r.tokens.Token(ctx, userID, role, name)
	if err != nil {
		code := errIO
		if m := strings.Fields(err.Error()); len(m) > 2 && m[0] == "POST" {
			code = "http_" + strings.TrimSuffix(m[2], ":")
		}
		r.st.done(fnToken, code, 0)
		return "", false
	}
	r.st.done(fnToken, "", time.Since(start))
	return tok, true
}

func (r *runner) openTutor(ctx context.Context, w *watcher) {
	tok, ok := r.token(ctx, w.userID, "tutor", "Load Tutor "+strings.TrimPrefix(w.userID, "load-"))
	if !ok {
		return
	}
	conn, code := r.dial(ctx, r.dialers.watcher, int(r.nextSrc.Add(1)), tok)
	if code != "" {
		return
	}
	w.conn = conn
	r.st.tutorsOpen.Add(1)
	go w.read()
	s, err := w.subscribe("s", fnSessions, map[string]string{"exam_id": w.exam.id}, NewRows(), sessionsChanged)
	if err != nil || w.await(s, callTimeout) != "" {
		return
	}
	w.ready.Store(true)
	r.st.tutorsReady.Add(1)
	w.exam.watching.Add(1)
}

func (r *runner) openProjector(ctx context.Context, w *watcher) {
	conn, code := r.dial(ctx, r.dialers.watcher, int(r.nextSrc.Add(1)), "")
	if code != "" {
		return
	}
	w.conn = conn
	r.st.projectorsOpen.Add(1)
	go w.read()
	s, err := w.subscribe("lb", fnLeaderboard, map[string]any{"quiz_code": w.exam.quiz, "limit": 10},
		NewRowsBy("_id", "nickname"), leaderboardChanged)
	if err != nil || w.await(s, callTimeout) != "" {
		return
	}
	w.ready.Store(true)
	r.st.projectorsReady.Add(1)
}

func (r *runner) openStudent(ctx context.Context, s *student) {
	tok, ok := r.token(ctx, s.id, "student", s.name)
	if !ok {
		return
	}
	conn, code := r.dial(ctx, r.dialers.student, s.idx, tok)
	if code != "" {
		return
	}
	s.conn = conn
	r.st.studentsOpen.Add(1)
	go s.read()
	if code, _ := s.callWait(ctx, fnStart, []byte(`{"exam_id":"`+s.exam.id+`"}`)); code == "" {
		r.st.studentsJoined.Add(1)
	}
}

// openRooms has each room's owner start an exam chat and the exam's tutors
// subscribe to its messages.
func (r *runner) openRooms(ctx context.Context) {
	for _, e := range r.exams {
		r.rooms = append(r.rooms, e.rooms...)
	}
	parallel(ctx, len(r.rooms), setupWidth, func(i int) {
		rm := r.rooms[i]
		if rm.owner.conn == nil {
			return
		}
		code, v := rm.owner.callWait(ctx, fnStartChat, []byte(`{"scope":"exam","exam_id":"`+rm.exam.id+`"}`))
		if code != "" {
			return
		}
		rm.sessionID = str(field(v, "_id"))
	})
	var wg sync.WaitGroup
	for _, e := range r.exams {
		for _, w := range e.tutors {
			if w.conn == nil {
				continue
			}
			wg.Go(func() {
				for k, rm := range e.rooms {
					if rm.sessionID == "" {
						continue
					}
					s, err := w.subscribe("m"+strconv.Itoa(k), fnMessages, map[string]string{"session_id": rm.sessionID}, NewRows(), messagesChanged)
					if err == nil && w.await(s, callTimeout) == "" {
						w.mu.Lock()
						w.watched = append(w.watched, rm)
						w.mu.Unlock()
						rm.watchers.Add(1)
						w.rooms.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
}

// readFrames hands each frame of conn to handle, with its size and the
// moment it was read, until the socket closes; a frame that cannot be read
// is counted as an anomaly and skipped.
func readFrames(conn *websocket.Conn, st *stats, handle func(f frame, size int, now time.Time)) {
	var buf bytes.Buffer
	for {
		_, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(rd); err != nil {
			return
		}
		now := time.Now()
		f, err := parseFrame(buf.Bytes())
		if err != nil {
			st.anomaly("unreadable_frame")
			continue
		}
		handle(f, buf.Len(), now)
	}
}
