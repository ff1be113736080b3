package static_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/webhook"
)

const quizCode = "SPACE1"

// kidScore is a score as grade-exam pushes it.
type kidScore struct {
	SubmissionID string  `json:"submission_id"`
	ExamID       string  `json:"exam_id"`
	QuizCode     string  `json:"quiz_code"`
	Nickname     string  `json:"nickname"`
	Score        float64 `json:"score"`
	MaxScore     float64 `json:"max_score"`
	SubmittedAt  string  `json:"submitted_at"`
}

// postScore sends a signed score to /hooks/scores; safe from any goroutine.
func postScore(s *site, sc kidScore) error {
	body, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	hdr, err := webhook.Sign(apptest.HookSecret, "score_"+sc.SubmissionID, time.Now(), body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, s.url+"/hooks/scores", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = hdr
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("score %s: status %d", sc.SubmissionID, res.StatusCode)
	}
	return nil
}

// score makes kid n's score, submitted minutesAgo minutes ago.
func score(n int, nick string, points float64, minutesAgo int) kidScore {
	return kidScore{SubmissionID: fmt.Sprintf("sub-%03d", n), ExamID: "space", QuizCode: quizCode, Nickname: nick,
		Score: points, MaxScore: 1000, SubmittedAt: time.Now().Add(-time.Duration(minutesAgo) * time.Minute).UTC().Format(time.RFC3339Nano)}
}

// boardOrder is the board as the server ranks it: "_id rank nickname".
func boardOrder(t *testing.T, s *site, limit int) []string {
	t.Helper()
	code, body := s.Post("/api/query/leaderboard.getLeaderboard", nil, []byte(fmt.Sprintf(`{"quiz_code":%q,"limit":%d}`, quizCode, limit)))
	if code != http.StatusOK {
		t.Fatalf("getLeaderboard: %d %s", code, body)
	}
	var rows []struct {
		ID       string `json:"_id"`
		Rank     int    `json:"rank"`
		Nickname string `json:"nickname"`
	}
	if err := json.Unmarshal([]byte(body), &rows); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = fmt.Sprintf("%s %d %s", r.ID, r.Rank, r.Nickname)
	}
	return out
}

// domOrder is the same, read from the projector's rows in DOM order.
const domOrder = `[...document.querySelectorAll('#board .row')].map((r) =>
	r.dataset.id + ' ' + r.querySelector('.rank').textContent + ' ' + r.querySelector('.nick').textContent)`

func wantSameOrder(t *testing.T, s *site, page *tab, limit int) {
	t.Helper()
	want := boardOrder(t, s, limit)
	got := get[[]string](page, domOrder)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the projector's order differs from the query's:\nprojector:\n  %s\nquery:\n  %s",
			strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// The projector, signed out: it shows the quiz's board as the server ranks
// it; a score that enters the top 3 reaches it within 2 s, the rows below
// glide down and confetti falls; one further down celebrates nothing; with
// 500 players it shows the top 10 and says how many more. Nicknames are
// text, never HTML.
func TestBrowserKidsProjector(t *testing.T) {
	s := boot(t)
	s.Exam(exam.Registration{ExamID: "space", Title: "Space Quiz", TutorIDs: []string{tutor.ID}, QuizCode: quizCode, Status: exam.Open})
	seed := []kidScore{
		score(1, "Zippy Otter", 920, 30), score(2, "Brave Panda", 870, 29), score(3, "Cosmic Llama", 800, 28),
		score(4, "Turbo Gecko", 640, 27), score(5, `<img src=x onerror=window.__xss=1>`, 500, 26),
	}
	for _, sc := range seed {
		if err := postScore(s, sc); err != nil {
			t.Fatal(err)
		}
	}

	b := newBrowser(t, 90*time.Second)
	page := b.newTab("projector", s.url, "", "/kids/"+quizCode)
	page.wait("the board", `document.body.dataset.state === 'ready' && document.querySelectorAll('#board .row').length === 5`, 5*time.Second)
	page.wait("online without a token", `document.querySelector('#conn').dataset.state === 'online' && localStorage.getItem('invigil.token') === null`, 3*time.Second)
	wantSameOrder(t, s, page, 10)
	if got := get[string](page, `document.querySelector('#title').textContent + ' / ' + document.querySelector('#players').textContent`); got != "Space Quiz / 5" {
		t.Fatalf("header shows %q", got)
	}
	if n := get[int](page, `document.querySelectorAll('#board img').length`); n != 0 || get[string](page, `typeof window.__xss`) != "undefined" {
		t.Fatalf("a nickname ran as HTML (%d <img>)", n)
	}
	if n := get[int](page, `__kids.celebrations`); n != 0 {
		t.Fatalf("the first board celebrated %d times", n)
	}

	// seen records when a nickname first shows at a rank.
	page.eval(`window.__seenAt = {};
		new MutationObserver(() => {
			for (const r of document.querySelectorAll('#board .row')) {
				const k = r.querySelector('.nick').textContent + '@' + r.querySelector('.rank').textContent;
				if (!__seenAt[k]) __seenAt[k] = Date.now();
			}
		}).observe(document.querySelector('#board'), {subtree: true, childList: true, characterData: true})`)

	// Into second place: shown within 2 s, in the query's order, celebrated.
	posted := time.Now()
	if err := postScore(s, score(6, "Rocket Rita", 900, 1)); err != nil {
		t.Fatal(err)
	}
	page.wait("Rocket Rita second", `__seenAt['Rocket Rita@2']`, 3*time.Second)
	latency := time.Duration(get[float64](page, `__seenAt['Rocket Rita@2']`)-float64(posted.UnixMilli())) * time.Millisecond
	t.Logf("score hook → projector DOM, into the top 3: %s", latency)
	if latency > 2*time.Second {
		t.Fatalf("the score took %s to reach the projector, want ≤ 2 s", latency)
	}
	wantSameOrder(t, s, page, 10)
	page.wait("the celebration", `__kids.celebrations === 1 && __kids.celebrated.join() === 'Rocket Rita'
		&& !document.querySelector('#cheer').hidden && document.querySelector('#cheer-text').textContent.includes('Rocket Rita')
		&& document.querySelectorAll('#confetti i').length > 0`, time.Second)
	if moved := get[int](page, `__kids.moved`); moved < 3 {
		t.Fatalf("%d rows glided to their new places, want the 3 below Rocket Rita at least", moved)
	}
	time.Sleep(400 * time.Millisecond) // mid-confetti, for the picture
	screenshot(t, page, "kids-projector.png")

	// Seventh place: in order, nothing to celebrate.
	posted = time.Now()
	if err := postScore(s, score(7, "Sleepy Sloth", 300, 0)); err != nil {
		t.Fatal(err)
	}
	page.wait("Sleepy Sloth seventh", `__seenAt['Sleepy Sloth@7']`, 3*time.Second)
	t.Logf("score hook → projector DOM, seventh place: %s",
		time.Duration(get[float64](page, `__seenAt['Sleepy Sloth@7']`)-float64(posted.UnixMilli()))*time.Millisecond)
	wantSameOrder(t, s, page, 10)
	if n := get[int](page, `__kids.celebrations`); n != 1 {
		t.Fatalf("%d celebrations, want still 1", n)
	}

	// 500 players: the top 10 and "+ 490 more players".
	var wg sync.WaitGroup
	errs := make(chan error, 493)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for n := range work {
				if err := postScore(s, score(n, fmt.Sprintf("Kid %03d", n), float64(n%700), 20)); err != nil {
					errs <- err
				}
			}
		})
	}
	for n := 8; n <= 500; n++ {
		work <- n
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	page.wait("500 players", `document.querySelector('#players').textContent === '500'
		&& document.querySelector('#more').textContent === '+ 490 more players' && !document.querySelector('#more').hidden`, 5*time.Second)
	page.wait("the top 10", `document.querySelectorAll('#board .row').length === 10`, 2*time.Second)
	time.Sleep(glideSettle)
	wantSameOrder(t, s, page, 10)
	if h := get[bool](page, `document.documentElement.scrollHeight <= innerHeight + 1`); !h {
		t.Fatal("the projector scrolls with 10 rows")
	}
	screenshot(t, page, "kids-projector-500.png")
}

// glideSettle lets the rows finish gliding before a picture is taken.
const glideSettle = 1200 * time.Millisecond

// An unknown quiz code says so, and the board appears once Supabase
// registers the exam.
func TestBrowserKidsUnknownQuiz(t *testing.T) {
	s := boot(t)
	b := newBrowser(t, 60*time.Second)
	page := b.newTab("projector", s.url, "", "/kids/LATER1")
	page.wait("not found", `document.body.dataset.state === 'missing' && document.querySelector('#message').textContent.includes('LATER1')`, 5*time.Second)
	s.Exam(exam.Registration{ExamID: "later", Title: "Late Quiz", TutorIDs: []string{tutor.ID}, QuizCode: "LATER1", Status: exam.Open})
	page.wait("the empty board", `document.body.dataset.state === 'empty' && document.querySelector('#title').textContent === 'Late Quiz'`, 10*time.Second)
}
