package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/webhook"
)

// The demo quiz: rounds of RoundPlayers kids, Kahoot-style points (10
// questions, 500 to 1000 points each for a right answer, more for a quick
// one). After a round the board starts over, so the projector keeps having
// newcomers and top-3 entries however long the demo runs.
const (
	RoundPlayers  = 150
	QuizQuestions = 10
	QuizMaxScore  = QuizQuestions * 1000
	// RoundPause is how long a finished board stays up before the next round.
	RoundPause = 20 * time.Second
)

// ResetQuiz empties a quiz's board (leaderboard.Service.Reset).
type ResetQuiz func(ctx context.Context, quizCode string) error

// PushScores plays the demo quiz QuizCode until ctx ends, posting every
// score to baseURL's POST /hooks/scores exactly as Supabase's grade-exam
// does (invigil.ts's pushScore): signed with secret, webhook id
// score_<submission_id>, over HTTP. The first players of a round come
// quickly so the board fills; then one every 1.5 to 4 s.
func PushScores(ctx context.Context, baseURL, secret string, clock clockwork.Clock, log *slog.Logger, reset ResetQuiz) {
	p := &scorer{
		url: strings.TrimRight(baseURL, "/") + "/hooks/scores", secret: firstSecret(secret),
		clock: clock, log: log, client: &http.Client{Timeout: 5 * time.Second},
		rng: mrand.New(mrand.NewPCG(uint64(clock.Now().UnixNano()), 7)),
		run: runID(),
	}
	for round := 1; ctx.Err() == nil; round++ {
		if err := reset(ctx, QuizCode); err != nil {
			log.Warn("demo quiz reset failed", "err", err)
		}
		names := p.nicknames()
		p.best = [3]int{}
		for n := range RoundPlayers {
			pace := time.Duration(1500+p.rng.IntN(2500)) * time.Millisecond
			if n < 8 {
				pace = time.Duration(400+p.rng.IntN(800)) * time.Millisecond
			}
			if !sleep(ctx, clock, pace) {
				return
			}
			p.push(ctx, fmt.Sprintf("demo-%s-%d-%d", p.run, round, n+1), names[n%len(names)], p.score(n))
		}
		if !sleep(ctx, clock, RoundPause) {
			return
		}
	}
}

type scorer struct {
	url, secret string
	clock       clockwork.Clock
	log         *slog.Logger
	client      *http.Client
	rng         *mrand.Rand
	run         string // this process's: webhook ids of an earlier run are remembered for an hour
	best        [3]int // the round's three best scores
}

// score plays one kid's quiz: a skill, then each question right or wrong,
// quicker answers worth more. One kid in ten is a star. Once the board has
// filled a little, one kid in eight just beats the third best so far, so
// the top 3 keeps changing late in a round too.
func (p *scorer) score(players int) int {
	if third := p.best[2]; players >= 10 && p.rng.IntN(8) == 0 && third+400 <= QuizMaxScore {
		return p.keep(third + 10*(1+p.rng.IntN(40)))
	}
	skill := 0.35 + p.rng.Float64()*0.55
	if p.rng.IntN(10) == 0 {
		skill = 0.95
	}
	total := 0
	for range QuizQuestions {
		if p.rng.Float64() < skill {
			total += 500 + int(500*skill*p.rng.Float64())/10*10
		}
	}
	return p.keep(min(total, QuizMaxScore))
}

// keep notes a score among the round's three best.
func (p *scorer) keep(score int) int {
	for i, b := range p.best {
		if score > b {
			copy(p.best[i+1:], p.best[i:2])
			p.best[i] = score
			break
		}
	}
	return score
}

func (p *scorer) push(ctx context.Context, submissionID, nickname string, score int) {
	body, err := json.Marshal(map[string]any{
		"submission_id": submissionID, "exam_id": ExamID, "quiz_code": QuizCode, "nickname": nickname,
		"score": score, "max_score": QuizMaxScore,
		"submitted_at": p.clock.Now().UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		p.log.Error("demo score", "err", err)
		return
	}
	hdr, err := webhook.Sign(p.secret, "score_"+submissionID, p.clock.Now(), body)
	if err != nil {
		p.log.Error("demo score: sign", "err", err)
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		p.log.Error("demo score", "err", err)
		return
	}
	req.Header = hdr
	req.Header.Set("Content-Type", "application/json")
	res, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("demo score not delivered", "err", err)
		}
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 300))
		p.log.Warn("demo score refused", "status", res.StatusCode, "body", string(msg))
	}
}

var (
	nickFirst = []string{"Zippy", "Brave", "Sunny", "Cosmic", "Turbo", "Happy", "Mighty", "Sneaky", "Jolly", "Clever",
		"Bouncy", "Fuzzy", "Lucky", "Rapid", "Giddy", "Witty", "Sparky", "Chill", "Dizzy", "Noble"}
	nickSecond = []string{"Otter", "Panda", "Falcon", "Llama", "Tiger", "Koala", "Dragon", "Penguin", "Fox", "Gecko",
		"Narwhal", "Badger", "Dolphin", "Hamster", "Lynx", "Moose", "Owl", "Rhino", "Sloth", "Yak"}
)

// nicknames are a round's kids, all different.
func (p *scorer) nicknames() []string {
	names := make([]string, 0, len(nickFirst)*len(nickSecond))
	for _, a := range nickFirst {
		for _, b := range nickSecond {
			names = append(names, a+" "+b)
		}
	}
	p.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	return names
}

// firstSecret picks the secret to sign with from INVIGIL_WEBHOOK_SECRET,
// which may be a comma list while rotating (any of them verifies).
func firstSecret(secrets string) string {
	for _, s := range strings.Split(secrets, ",") {
		if s = strings.TrimSpace(s); strings.HasPrefix(s, "whsec_") {
			return s
		}
	}
	return secrets
}

func runID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sleep waits d or until ctx ends; it reports whether to go on.
func sleep(ctx context.Context, clock clockwork.Clock, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-clock.After(d):
		return true
	}
}
