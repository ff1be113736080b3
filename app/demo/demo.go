// Package demo makes `go run . --demo` alive without accounts: a dev
// sign-in that signs tokens with an in-process key, a seeded open exam and
// simulated students who answer, heartbeat, sometimes break the rules,
// drop off and come back. Nothing here exists outside --demo.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/labstack/echo/v4"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/auth"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
)

// ExamID and QuizCode are the seeded exam's.
const (
	ExamID   = "demo"
	QuizCode = "DEMO42"
	TokenTTL = time.Hour
)

// WebhookSecret signs hooks in --demo when INVIGIL_WEBHOOK_SECRET is not
// set: the demo posts its own scores through the real hook path, and the
// load generator registers its exams with it. --demo binds 127.0.0.1 only.
const WebhookSecret = "whsec_ZGVtby1vbmx5LXdlYmhvb2stc2VjcmV0LWRvLW5vdC11c2U="

// Issuer signs dev tokens and serves the sign-in endpoint.
type Issuer struct {
	dev *auth.DevIssuer
}

// NewIssuer makes a fresh signing key for issuer.
func NewIssuer(issuer string, clock clockwork.Clock) (*Issuer, error) {
	dev, err := auth.NewDevIssuer(issuer, clock)
	if err != nil {
		return nil, err
	}
	return &Issuer{dev: dev}, nil
}

// AuthConfig is the verifier configuration that trusts this issuer only.
func (i *Issuer) AuthConfig(issuer string) auth.Config {
	return auth.Config{Issuer: issuer, KeySet: i.dev.KeySet()}
}

// Token signs a token for u.
func (i *Issuer) Token(u identity.User) (string, error) {
	return i.dev.Sign(u, u.ID+"@demo.invigil.local", TokenTTL)
}

type tokenRequest struct {
	UserID string `json:"user_id"`
	Role   string `json:"role"`
	Name   string `json:"name"`
}

// Routes adds POST /demo/token {user_id, role, name} → {token}.
func (i *Issuer) Routes(e *echo.Echo) {
	e.POST("/demo/token", func(c echo.Context) error {
		var r tokenRequest
		if err := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, 4096)).Decode(&r); err != nil {
			return apperr.New(apperr.InvalidArgument, "body is {user_id, role, name}")
		}
		if err := args.ID("user_id", r.UserID); err != nil {
			return err
		}
		if err := args.Text("name", r.Name, 100); err != nil {
			return err
		}
		if r.Name == "" {
			r.Name = r.UserID
		}
		tok, err := i.Token(identity.User{ID: r.UserID, Role: identity.ParseRole(r.Role), Name: r.Name})
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]string{"token": tok})
	})
}

// Seed registers the demo exam, open, with tutor-1 as its tutor.
func Seed(ctx context.Context, exams *exam.Registry) error {
	return exams.Register(ctx, exam.Registration{
		ExamID: ExamID, Title: "Demo exam: general knowledge", TutorIDs: []string{"tutor-1"},
		QuizCode: QuizCode, Status: exam.Open,
	})
}

// Questions is the demo exam's length (the student page has as many).
const Questions = 5

var firstNames = []string{"Ada", "Ben", "Chloé", "Dmitri", "Esi", "Farah", "Gabriel", "Hana", "Ivan", "Jonas",
	"Kwame", "Lena", "Mateo", "Nia", "Oskar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor",
	"Wen", "Xavier", "Yara", "Zoe"}

// Reset clears one student's session so that they can sit the exam again.
type Reset func(ctx context.Context, examID, studentID string) error

// Simulate runs n simulated students until ctx ends. Each acts through the
// engine exactly as a socket would, with its own connection id.
func Simulate(ctx context.Context, e *engine.Engine, n int, clock clockwork.Clock, log *slog.Logger, reset Reset) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &student{
				e: e, clock: clock, log: log, reset: reset,
				rng: rand.New(rand.NewPCG(uint64(i), 42)),
				user: identity.User{ID: fmt.Sprintf("sim-%02d", i+1), Role: identity.Student,
					Name: fmt.Sprintf("%s %c.", firstNames[i%len(firstNames)], 'A'+rune(i/len(firstNames)%26))},
				conn: 1<<62 + uint64(i)*1000,
			}
			st.run(ctx)
		}()
	}
	wg.Wait()
}

type student struct {
	e     *engine.Engine
	clock clockwork.Clock
	log   *slog.Logger
	reset Reset
	rng   *rand.Rand
	user  identity.User
	conn  uint64

	question, answered int
}

var violationKinds = []string{"tab_hidden", "window_blur", "fullscreen_exit", "copy", "paste", "context_menu"}

func (s *student) call(ctx context.Context, fn string, args map[string]any) error {
	raw, _ := json.Marshal(args)
	_, err := s.e.Call(ctx, engine.Caller{User: s.user, Conn: s.conn}, fn, raw)
	if err != nil && apperr.CodeOf(err) != apperr.RateLimited {
		s.log.Debug("demo student call failed", "user_id", s.user.ID, "fn", fn, "err", err)
	}
	return err
}

// sleep waits d or until ctx ends; it reports whether to go on.
func (s *student) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-s.clock.After(d):
		return true
	}
}

// run is one student's life: arrive at a random moment, then every ~10 s
// heartbeat and now and then answer; sometimes a violation or a dropped
// connection; submit a little after the last answer. A minute later the
// demo clears the submitted session and the student sits again, so the
// grid never runs dry.
func (s *student) run(ctx context.Context) {
	if !s.sleep(ctx, time.Duration(s.rng.IntN(8000))*time.Millisecond) {
		return
	}
	for ctx.Err() == nil {
		s.conn++
		s.question, s.answered = 1, 0
		if s.call(ctx, "proctoring.startSession", map[string]any{"exam_id": ExamID}) != nil {
			if !s.sleep(ctx, 30*time.Second) {
				return
			}
			continue
		}
		linger := 2 + s.rng.IntN(4) // heartbeats between the last answer and submitting
		for linger > 0 && ctx.Err() == nil {
			if !s.sleep(ctx, 10*time.Second+time.Duration(s.rng.IntN(1000))*time.Millisecond) {
				return
			}
			s.step(ctx)
			if s.answered == Questions {
				linger--
			}
		}
		s.call(ctx, "proctoring.endSession", map[string]any{"exam_id": ExamID})
		s.e.ConnClosed(s.conn)
		if !s.sleep(ctx, 60*time.Second) {
			return
		}
		if err := s.reset(ctx, ExamID, s.user.ID); err != nil {
			s.log.Warn("demo reset failed", "user_id", s.user.ID, "err", err)
			return
		}
	}
}

func (s *student) step(ctx context.Context) {
	switch r := s.rng.IntN(100); {
	case r < 4: // the connection drops for 30–60 s
		s.e.ConnClosed(s.conn)
		if !s.sleep(ctx, time.Duration(30+s.rng.IntN(30))*time.Second) {
			return
		}
		s.conn++
		s.call(ctx, "proctoring.startSession", map[string]any{"exam_id": ExamID})
		return
	case r < 12:
		s.call(ctx, "proctoring.logViolation", map[string]any{
			"exam_id": ExamID, "type": violationKinds[s.rng.IntN(len(violationKinds))],
			"detail": "simulated", "client_ts": s.clock.Now().UTC().Format(time.RFC3339Nano),
		})
	}
	if s.answered < Questions && s.rng.IntN(4) == 0 {
		s.answered++
		s.question = min(s.answered+1, Questions) // 1-based, as the student page sends it
	}
	s.call(ctx, "proctoring.heartbeat", map[string]any{
		"exam_id": ExamID, "current_question": s.question, "answered_count": s.answered,
		"network": map[string]any{"rtt_ms": 40 + s.rng.IntN(200), "effective_type": "4g"},
	})
}
