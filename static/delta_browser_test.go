package static_test

// Browser tests of deltas (CONTRACT §3) against the scripted server: the
// client applies them exactly, and the proctor grid of a 1,000-student exam
// keeps a window's worth of rows in the DOM and shows what the data says.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"invigil/app/proctoring"
)

// ----------------------------------------------------------------- invigil.js

// testRow is a row of the client test's list query: sorted by name.
type testRow struct {
	ID     string         `json:"_id"`
	Name   string         `json:"name"`
	N      int            `json:"n"`
	Nested map[string]any `json:"nested"`
}

// A burst of random deltas (updates, inserts with order, removals, moves, a
// whole data now and then) to one subscription, and the same states as whole
// data to another on the same page: after every step the first's value equals
// the second's, its `change` names exactly what changed, unchanged rows keep
// their identity, and every onData gets a fresh array.
func TestBrowserClientAppliesDeltas(t *testing.T) {
	requireChromium(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("DELTA_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("seed %d (DELTA_SEED=%d to repeat)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	rows := newTable(false, 0)
	model := map[string]testRow{}
	next := 0
	put := func(r testRow) {
		model[r.ID] = r
		rows.put(r.ID, r.Name, r)
	}
	randName := func() string { return fmt.Sprintf("n%04d", rng.IntN(10000)) }
	for ; next < 600; next++ {
		put(testRow{ID: fmt.Sprintf("r%d", next), Name: randName(), N: 0, Nested: map[string]any{"a": next}})
	}
	srv := newScripted(t, map[string]*table{"test.rows": rows})
	srv.objects["test.object"] = func(map[string]any) any { return map[string]any{"hello": "world"} }
	srv.wantsDeltas = func(_ string, args map[string]any) bool { return args["mode"] == "delta" }

	b := newBrowser(t, 90*time.Second)
	page := b.newTab("client", srv.url, "", "")
	page.eval(`(async () => {
		const { connect } = await import('/static/invigil.js');
		const st = window.__st = { a: null, aChange: null, aCalls: 0, b: null, bCalls: 0, first: null, errors: [], object: null };
		const fail = (msg) => { if (st.errors.length < 20) st.errors.push(msg); };
		const byId = (list) => new Map((list || []).map((r) => [r._id, r]));
		const client = window.__client = connect({ getToken: async () => 'any' });
		client.subscribe('test.rows', { mode: 'delta' }, (v, change) => {
			st.aCalls++;
			if (!Array.isArray(v)) return fail('a: not a list');
			if (v === st.a) fail('a: the same array twice');
			if (!change || typeof change.full !== 'boolean') return fail('a: no change');
			const prev = byId(st.a);
			if (!change.full) {
				const up = new Set(change.upserted);
				for (const r of v) if (!up.has(r._id) && prev.get(r._id) !== r) fail('a: row ' + r._id + ' lost its identity in a delta');
			} else if (st.a) {
				for (const r of v) {
					const p = prev.get(r._id);
					if (p && p !== r && JSON.stringify(p) === JSON.stringify(r)) fail('a: unchanged row ' + r._id + ' lost its identity in a data');
				}
			}
			if (!st.first) st.first = v;
			st.a = v;
			st.aChange = change;
		});
		client.subscribe('test.rows', { mode: 'full' }, (v, change) => {
			st.bCalls++;
			if (!change?.full) fail('b: a data must say full');
			const prevB = st.b;
			st.b = v;
			if (st.aCalls !== st.bCalls) return fail('step ' + st.bCalls + ': ' + st.aCalls + ' calls to a');
			if (JSON.stringify(st.a) !== JSON.stringify(v)) return fail('step ' + st.bCalls + ': a differs from b');
			const ch = st.aChange;
			if (!prevB || ch.full) return;
			// What the delta should have said, from the two whole values.
			const before = byId(prevB);
			const upserted = v.filter((r) => JSON.stringify(before.get(r._id)) !== JSON.stringify(r)).map((r) => r._id);
			const now = new Set(v.map((r) => r._id));
			const removed = prevB.filter((r) => !now.has(r._id)).map((r) => r._id);
			const kept = prevB.map((r) => r._id).filter((id) => now.has(id));
			const reordered = kept.length !== v.length || kept.some((id, i) => id !== v[i]._id);
			const same = (x, y) => JSON.stringify([...x].sort()) === JSON.stringify([...y].sort());
			if (!same(ch.upserted, upserted)) fail('step ' + st.bCalls + ': upserted ' + ch.upserted + ', want ' + upserted);
			if (!same(ch.removed, removed)) fail('step ' + st.bCalls + ': removed ' + ch.removed + ', want ' + removed);
			if (ch.reordered !== reordered) fail('step ' + st.bCalls + ': reordered ' + ch.reordered + ', want ' + reordered);
		});
		client.subscribe('test.object', {}, (v, change) => { st.object = { v, change }; });
	})()`)
	page.wait("three subscriptions", `window.__st.bCalls === 1 && window.__st.object`, 10*time.Second)
	if got := get[string](page, `JSON.stringify(__st.object)`); got != `{"v":{"hello":"world"},"change":{"full":true}}` {
		t.Fatalf("object query: %s", got)
	}

	touched := map[string]bool{}
	steps, wholes := 400, 0
	ids := func() []string {
		out := make([]string, 0, len(model))
		for id := range model {
			out = append(out, id)
		}
		sort.Strings(out)
		return out
	}
	for step := 0; step < steps; step++ {
		change := func() {
			all := ids()
			for k := 1 + rng.IntN(4); k > 0 && len(all) > 0; k-- { // updates
				r := model[all[rng.IntN(len(all))]]
				r.N++
				if rng.IntN(3) == 0 {
					r.Nested = map[string]any{"a": rng.IntN(100), "b": []any{step, "x"}}
				}
				touched[r.ID] = true
				put(r)
			}
			if rng.IntN(5) == 0 { // insert
				r := testRow{ID: fmt.Sprintf("r%d", next), Name: randName(), Nested: map[string]any{}}
				next++
				touched[r.ID] = true
				put(r)
			}
			if rng.IntN(6) == 0 && len(all) > 1 { // remove
				id := all[rng.IntN(len(all))]
				delete(model, id)
				rows.del(id)
				touched[id] = true
			}
			if rng.IntN(6) == 0 && len(model) > 0 { // move
				all := ids()
				r := model[all[rng.IntN(len(all))]]
				r.Name = randName()
				touched[r.ID] = true
				put(r)
			}
		}
		if rng.IntN(40) == 0 {
			wholes++
			srv.updateWhole(change)
		} else {
			srv.update(change)
		}
	}
	page.wait("every step", fmt.Sprintf(`window.__st.bCalls === %d`, steps+1), 20*time.Second)
	if errs := get[[]string](page, `__st.errors`); len(errs) > 0 {
		t.Fatalf("%d errors, first ones:\n%s", len(errs), strings.Join(errs, "\n"))
	}

	// The end state is the server's, and rows no step touched are still the
	// very objects of the first data.
	want := string(rows.value())
	if got := get[string](page, `JSON.stringify(__st.a)`); got != want {
		t.Fatalf("final value differs from the server's:\n got %.300s\nwant %.300s", got, want)
	}
	untouched := []string{}
	for id := range model {
		if !touched[id] {
			untouched = append(untouched, id)
		}
	}
	kept := get[int](page, fmt.Sprintf(`(() => {
		const first = new Map(__st.first.map((r) => [r._id, r]));
		const now = new Map(__st.a.map((r) => [r._id, r]));
		return %s.filter((id) => first.get(id) && first.get(id) === now.get(id)).length;
	})()`, js(untouched)))
	if kept != len(untouched) {
		t.Fatalf("%d of %d untouched rows kept their identity", kept, len(untouched))
	}
	counts, _ := srv.frameCounts()
	t.Logf("%d steps (%d whole data), %d rows at the end, %d untouched; frames sent: %v", steps, wholes, len(model), len(untouched), counts)
	if counts["delta"] < steps-wholes {
		t.Fatalf("only %d delta frames for %d steps", counts["delta"], steps-wholes)
	}
}

// ----------------------------------------------------------------- the grid

// scriptExam is a scripted exam: sessions and violations as getExamSessions and
// getViolations return them.
type scriptExam struct {
	sessions   *table
	violations *table
	rows       map[string]*sessionRow // by student id
	nextV      int
	rng        *rand.Rand
}

// The scripted server sends the rows the real one does: its wire types.
type (
	sessionRow   = proctoring.SessionView
	violationRow = proctoring.ViolationView
)

const scriptedExam = "big"

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

var (
	firstNames = []string{"Ada", "Ben", "Cleo", "Dev", "Ewa", "Finn", "Gia", "Hugo", "Ines", "Jon", "Kai", "Lena", "Milo", "Nia", "Omar", "Pia"}
	lastNames  = []string{"Abbott", "Baker", "Chen", "Diaz", "Evans", "Fox", "Garcia", "Hall", "Ito", "Jones", "Khan", "Lopez", "Moreau", "Novak", "Okafor", "Patel"}
)

// newExam makes n active students who all sent a heartbeat just now.
func newExam(n int, seed uint64) *scriptExam {
	e := &scriptExam{sessions: newTable(false, 0), violations: newTable(true, 50), rows: map[string]*sessionRow{}, rng: rand.New(rand.NewPCG(seed, 11))}
	now := time.Now()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s %s %04d", firstNames[i%len(firstNames)], lastNames[(i/len(firstNames))%len(lastNames)], i)
		e.join(fmt.Sprintf("stu-%04d", i), name, now)
	}
	return e
}

func (e *scriptExam) save(r *sessionRow) { e.sessions.put(r.ID, r.StudentName, *r) }

func (e *scriptExam) join(sid, name string, now time.Time) *sessionRow {
	r := &sessionRow{ID: "sess-" + sid, ExamID: scriptedExam, StudentID: sid, StudentName: name, Status: "active",
		CurrentQuestion: 1, LastHeartbeat: stamp(now), StartedAt: stamp(now)}
	e.rows[sid] = r
	e.save(r)
	return r
}

func (e *scriptExam) heartbeat(r *sessionRow, now time.Time) {
	if r.Status == "submitted" {
		return
	}
	r.Status = "active"
	r.LastHeartbeat = stamp(now)
	r.CurrentQuestion = 1 + e.rng.IntN(40)
	r.AnsweredCount = min(40, r.AnsweredCount+e.rng.IntN(2))
	e.save(r)
}

func (e *scriptExam) violation(r *sessionRow, now time.Time) {
	types := []string{"tab_hidden", "window_blur", "copy", "paste", "fullscreen_exit"}
	v := violationRow{ID: fmt.Sprintf("v%06d", e.nextV), ExamID: scriptedExam, StudentID: r.StudentID, StudentName: r.StudentName,
		Type: types[e.rng.IntN(len(types))], ClientTS: new(stamp(now)), CreatedAt: stamp(now)}
	e.nextV++
	e.violations.put(v.ID, v.CreatedAt+v.ID, v)
	r.ViolationCount++
	r.LastViolation = &proctoring.LastViolation{Type: v.Type, CreatedAt: v.CreatedAt}
	e.save(r)
}

func (e *scriptExam) setStatus(r *sessionRow, status string, now time.Time) {
	r.Status = status
	if status == "submitted" {
		s := stamp(now)
		r.EndedAt = &s
	}
	e.save(r)
}

func (e *scriptExam) leave(r *sessionRow) {
	delete(e.rows, r.StudentID)
	e.sessions.del(r.ID)
}

func (e *scriptExam) pick() *sessionRow {
	ids := make([]string, 0, len(e.rows))
	for id := range e.rows {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return e.rows[ids[e.rng.IntN(len(ids))]]
}

// attentionOrder is the grid's documented default order for a tutor who has
// seen no violation yet: disconnected, then with violations, then silent
// (the weights add up), everyone else by name, submitted last.
func (e *scriptExam) attentionOrder(now time.Time) []*sessionRow {
	weight := func(r *sessionRow) int {
		if r.Status == "submitted" {
			return -1
		}
		w := 0
		if r.Status == "disconnected" {
			w += 4
		}
		if r.ViolationCount > 0 {
			w += 2
		}
		hb, err := time.Parse(time.RFC3339, r.LastHeartbeat)
		if r.Status == "active" && (err != nil || now.Sub(hb) > 20*time.Second) {
			w++
		}
		return w
	}
	out := make([]*sessionRow, 0, len(e.rows))
	for _, r := range e.rows {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		wi, wj := weight(out[i]), weight(out[j])
		if wi != wj {
			return wi > wj
		}
		return out[i].StudentName < out[j].StudentName
	})
	return out
}

func (e *scriptExam) tables() map[string]*table {
	return map[string]*table{"proctoring.getExamSessions": e.sessions, "proctoring.getViolations": e.violations}
}

// collectGrid scrolls #grid from top to bottom and reads every card on
// screen, by its place in the order. It also reports the most cards that
// were in the DOM at once.
const collectGrid = `(async () => {
	const g = document.querySelector('#grid');
	const total = +g.dataset.total;
	const out = new Array(total).fill(null);
	let maxCards = 0;
	const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
	for (let top = 0; ; top += Math.max(50, g.clientHeight - 40)) {
		g.scrollTop = top;
		await frames();
		const cards = g.querySelectorAll('.card[data-student-id]');
		maxCards = Math.max(maxCards, cards.length);
		const view = g.getBoundingClientRect();
		for (const c of cards) {
			const box = c.getBoundingClientRect();
			if (box.bottom <= view.top || box.top >= view.bottom) continue; // in the margin, not on screen
			out[+c.dataset.index] = [c.dataset.studentId, c.querySelector('.name').textContent,
				c.querySelector('.status').textContent, c.querySelector('.violations').textContent];
		}
		if (top + g.clientHeight >= g.scrollHeight) break;
	}
	g.scrollTop = 0;
	await frames();
	return JSON.stringify({ total, out, maxCards });
})()`

type gridView struct {
	Total    int        `json:"total"`
	Out      [][]string `json:"out"`
	MaxCards int        `json:"maxCards"`
}

// checkGrid compares the whole grid, scrolled through, with the exam's
// attention order; it returns a description of the first difference.
func checkGrid(tb *tab, e *scriptExam) (gridView, string) {
	var v gridView
	if err := json.Unmarshal([]byte(get[string](tb, collectGrid)), &v); err != nil {
		tb.b.t.Fatal(err)
	}
	want := e.attentionOrder(time.Now())
	if v.Total != len(want) || len(v.Out) != len(want) {
		return v, fmt.Sprintf("grid holds %d students, want %d", v.Total, len(want))
	}
	for i, r := range want {
		got := v.Out[i]
		exp := []string{r.StudentID, r.StudentName, r.Status, fmt.Sprint(r.ViolationCount)}
		if !slices.Equal(got, exp) {
			return v, fmt.Sprintf("place %d: got %v, want %v", i, got, exp)
		}
	}
	return v, ""
}

// A 1,000-student exam on the tutor's grid: compact by itself, a DOM of a
// few dozen cards, a disconnected student at the top, and after a burst of
// deltas the grid, scrolled through, is exactly what the data says.
func TestBrowserProctorGridThousand(t *testing.T) {
	requireChromium(t)
	b := newBrowser(t, 120*time.Second)
	e := newExam(1000, 1)
	srv := newScripted(t, e.tables())
	srv.objects["proctoring.getSession"] = func(args map[string]any) any {
		r := e.rows[fmt.Sprint(args["student_id"])]
		if r == nil {
			return nil
		}
		return map[string]any{"_id": r.ID, "student_id": r.StudentID, "student_name": r.StudentName, "status": r.Status,
			"violation_count": r.ViolationCount, "last_heartbeat": r.LastHeartbeat, "violations": []any{}}
	}
	proctor := b.newTab("tutor", srv.url, fakeJWT("tutor-1", "tutor", "Tess Tutor", "delta"), "/proctor/"+scriptedExam)
	proctor.wait("1,000 students, compact", `document.querySelector('#grid')?.dataset.total === '1000'
		&& document.querySelector('#grid').dataset.mode === 'compact'
		&& document.querySelector('#count-active').textContent === '1000'`, 15*time.Second)
	if n := get[int](proctor, `document.querySelectorAll('.card[data-student-id]').length`); n < 10 || n > 100 {
		t.Fatalf("%d cards in the DOM for 1,000 students; want a window's worth (10..100)", n)
	}

	// The last student by name disconnects: first place.
	last := e.rows["stu-0999"]
	srv.update(func() { e.setStatus(last, "disconnected", time.Now()) })
	proctor.wait("the disconnected student on top", fmt.Sprintf(`(() => {
		const top = document.querySelector('.card[data-index="0"]');
		return top && top.dataset.studentId === %s && top.dataset.attention.includes('disconnected')
			&& top.querySelector('.status').textContent === 'disconnected'
			&& document.querySelector('#count-disconnected').textContent === '1';
	})()`, js(last.StudentID)), 3*time.Second)
	proctor.wait("the alert", `!document.querySelector('#alert').hidden && document.querySelector('#alert-text').textContent.includes('disconnected')`, time.Second)

	// A burst: heartbeats, violations, disconnects, submits, arrivals and
	// departures, one delta each.
	now := time.Now()
	for i := 0; i < 600; i++ {
		srv.update(func() {
			switch k := e.rng.IntN(100); {
			case k < 60:
				e.heartbeat(e.pick(), now)
			case k < 75:
				e.violation(e.pick(), now)
			case k < 85:
				e.setStatus(e.pick(), "disconnected", now)
			case k < 92:
				e.setStatus(e.pick(), "submitted", now)
			case k < 96:
				e.join(fmt.Sprintf("new-%03d", i), fmt.Sprintf("Quinn Newcomer %03d", i), now)
			default:
				e.leave(e.pick())
			}
		})
	}
	counts := map[string]int{}
	vsum := 0
	for _, r := range e.rows {
		counts[r.Status]++
		vsum += r.ViolationCount
	}
	proctor.wait("the counters after the burst", fmt.Sprintf(`document.querySelector('#count-active').textContent === '%d'
		&& document.querySelector('#count-disconnected').textContent === '%d'
		&& document.querySelector('#count-submitted').textContent === '%d'
		&& document.querySelector('#count-violations').textContent === '%d'
		&& document.querySelector('#grid').dataset.total === '%d'`,
		counts["active"], counts["disconnected"], counts["submitted"], vsum, len(e.rows)), 10*time.Second)

	var view gridView
	var diff string
	for try := 0; try < 3; try++ {
		if view, diff = checkGrid(proctor, e); diff == "" {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if diff != "" {
		t.Fatalf("grid after the burst: %s", diff)
	}
	if view.MaxCards > 100 {
		t.Fatalf("up to %d cards in the DOM while scrolling; want a window's worth", view.MaxCards)
	}
	nodes := get[int](proctor, `document.getElementsByTagName('*').length`)
	t.Logf("%d students: grid scrolled through matches the data; at most %d cards in the DOM at once, %d elements on the page",
		len(e.rows), view.MaxCards, nodes)

	// The stream shows the newest violations, newest first.
	want := e.violations.visible()
	got := get[[]string](proctor, `[...document.querySelectorAll('#stream li')].map((li) => li.dataset.id)`)
	if !slices.Equal(got, want) {
		t.Fatalf("stream: %d items %v…, want %d %v…", len(got), got[:min(3, len(got))], len(want), want[:min(3, len(want))])
	}

	// Opening a student marks their violations seen: they leave the
	// attention group (unless disconnected), and the filter counts follow.
	withV, place := "", 0
	for _, r := range e.attentionOrder(time.Now()) {
		if r.Status == "active" && r.ViolationCount > 0 {
			withV = r.StudentID
			break
		}
		place++ // everyone before them needs attention too
	}
	if withV != "" {
		proctor.eval(`document.querySelector('#filter-attention').click()`)
		proctor.eval(fmt.Sprintf(`(() => { const g = document.querySelector('#grid'); g.scrollTop = %d * g.scrollHeight / +g.dataset.total; })()`, place))
		proctor.wait("the student in the attention filter", card(withV), 2*time.Second)
		proctor.eval(card(withV) + `.click()`)
		proctor.wait("the detail panel", fmt.Sprintf(`document.querySelector('#detail').dataset.studentId === %s`, js(withV)), 2*time.Second)
		proctor.eval(`document.querySelector('#detail-close').click()`)
		proctor.wait("seen: out of the attention filter", fmt.Sprintf(`!%s`, card(withV)), 2*time.Second)
		proctor.eval(`document.querySelector('#filter-all').click()`)
	}

	// The layout toggle: cards on request, still a window's worth.
	proctor.eval(`document.querySelector('#mode-cards').click()`)
	proctor.wait("cards", `document.querySelector('#grid').dataset.mode === 'cards' && document.querySelector('.card.tile[data-student-id]')`, 2*time.Second)
	if n := get[int](proctor, `document.querySelectorAll('.card[data-student-id]').length`); n > 100 {
		t.Fatalf("%d cards in the DOM in the cards layout", n)
	}
	shot, err := chromedp.Run(proctor.ctx, chromedp.CaptureScreenshot())
	if err == nil {
		proctor.eval(`document.querySelector('#mode-compact').click()`)
		proctor.wait("compact", `document.querySelector('#grid').dataset.mode === 'compact'`, 2*time.Second)
		if shot2, err := chromedp.Run(proctor.ctx, chromedp.CaptureScreenshot()); err == nil {
			dir := artifactDir(t)
			os.WriteFile(dir+"/proctor-1000-cards.png", shot, 0o644)
			os.WriteFile(dir+"/proctor-1000-compact.png", shot2, 0o644)
			t.Logf("screenshots in %s: proctor-1000-{cards,compact}.png", dir)
		}
	}
}
