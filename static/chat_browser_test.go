package static_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"invigil/app/identity"
	"invigil/store"
)

// screenshot saves the tab as testdata/artifacts/<name>.png.
func screenshot(t *testing.T, tb *tab, name string) {
	t.Helper()
	shot, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), name+".png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// msgWith finds a message item by its text.
func msgWith(body string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('.chat-log .msg')].find((m) => m.querySelector('.msg-body')?.textContent === %s)`, js(body))
}

// A student (support widget on the start page) and an agent (/support) in
// two browser contexts chat both ways: the agent sees the chat in the
// queue, claims it, sees "typing…" and then the message; the student sees
// the read tick; a message sent while the server is unreachable shows
// pending and is stored once after the reconnect.
func TestBrowserSupportChat(t *testing.T) {
	s := boot(t)
	b := newBrowser(t, 90*time.Second)
	stu := identity.User{ID: "stu-chat", Role: identity.Student, Name: "Sam Student"}
	agent := identity.User{ID: "agent-1", Role: identity.Agent, Name: "Ada Agent"}

	student := b.newTab("student", s.url, s.Token(stu), "/")
	console := b.newTab("agent", s.url, s.Token(agent), "/support")
	console.wait("console online", `document.querySelector('#conn').dataset.state === 'online'`, 5*time.Second)

	// 1. The student asks: the first message starts the chat.
	student.wait("the help launcher", `document.querySelector('#chat-launcher')`, 5*time.Second)
	student.do(chromedp.Click(chromedp.ID("chat-launcher")), chromedp.WaitVisible(chromedp.CSS(`.chat-first textarea`)))
	student.do(typeInto(`.chat-first textarea`, "Hello, my exam link is broken"+kb.Enter))
	student.wait("the question shown", msgWith("Hello, my exam link is broken"), 2*time.Second)
	student.wait("waiting for an agent", `document.querySelector('#chat-panel').dataset.state === 'waiting'`, 3*time.Second)
	student.wait("sent (✓)", msgWith("Hello, my exam link is broken")+`?.querySelector('.tick')?.dataset.state === 'sent'`, 3*time.Second)

	// 2. The agent sees it in the queue, waiting, and claims it.
	item := `document.querySelector('#queue li .name')?.textContent === 'Sam Student'`
	console.wait("the chat in the queue", item, 3*time.Second)
	if got := get[string](console, `document.querySelector('#queue li .wait').textContent`); got == "" {
		t.Fatal("no waiting time in the queue")
	}
	console.do(chromedp.Click(chromedp.CSS(`#queue li .chat-item`)))
	console.wait("the question, read only", msgWith("Hello, my exam link is broken")+` && document.querySelector('.chat-composer').hidden`, 3*time.Second)
	console.do(chromedp.Click(chromedp.ID("claim")))
	console.wait("claimed: mine, the composer open", `document.querySelector('#mine li .name')?.textContent === 'Sam Student'
		&& !document.querySelector('#conversation .chat-composer').hidden && document.querySelector('#queue li') === null`, 3*time.Second)

	// 3. The agent's view read the question: the student sees the read tick.
	student.wait("read (✓✓)", msgWith("Hello, my exam link is broken")+`?.querySelector('.tick')?.dataset.state === 'read'`, 3*time.Second)
	student.wait("an agent is answering", `document.querySelector('#chat-panel').dataset.state === 'active'`, 2*time.Second)

	// 4. The student types: the agent sees "typing…", then the message.
	console.eval(`window.__seen = []; new MutationObserver(() => {
		const typing = document.querySelector('#conversation .chat-typing').textContent;
		const msg = [...document.querySelectorAll('#conversation .msg-body')].some((b) => b.textContent === 'Which browser should I use?');
		const last = window.__seen[window.__seen.length - 1];
		const now = (typing ? 'typing' : '') + (msg ? 'message' : '');
		if (now !== last) window.__seen.push(now);
	}).observe(document.querySelector('#conversation'), {subtree: true, childList: true, characterData: true})`)
	student.do(typeInto(`#chat-panel .chat-composer textarea`, "Which browser should I use?"))
	console.wait(`"Sam Student is typing…"`, `document.querySelector('#conversation .chat-typing').textContent === 'Sam Student is typing…'`, 3*time.Second)
	student.do(typeInto(`#chat-panel .chat-composer textarea`, kb.Enter))
	console.wait("the message, and no more typing", msgWith("Which browser should I use?")+` && document.querySelector('#conversation .chat-typing').textContent === ''`, 3*time.Second)
	if seen := get[[]string](console, `window.__seen`); len(seen) < 2 || seen[0] != "typing" || seen[len(seen)-1] != "message" {
		t.Fatalf("the agent saw %q; want typing, then the message", seen)
	}

	// 5. The agent answers; the student sees it; the agent sees it read.
	console.do(typeInto(`#conversation .chat-composer textarea`, "Chrome or Firefox, both work."+kb.Enter))
	student.wait("the answer", msgWith("Chrome or Firefox, both work.")+`?.classList.contains('theirs')`, 3*time.Second)
	console.wait("the answer read", msgWith("Chrome or Firefox, both work.")+`?.querySelector('.tick')?.dataset.state === 'read'`, 3*time.Second)
	screenshot(t, console, "support-console")
	screenshot(t, student, "support-widget")

	// 6. The server goes away; the student writes anyway.
	restore := s.outage()
	student.wait("offline", `document.querySelector('#conn').dataset.state !== 'online'`, 3*time.Second)
	student.do(typeInto(`#chat-panel .chat-composer textarea`, "Sent while offline"+kb.Enter))
	student.wait("shown pending", msgWith("Sent while offline")+`?.classList.contains('pending') && `+msgWith("Sent while offline")+`.querySelector('.tick').dataset.state === 'pending'`, 2*time.Second)
	time.Sleep(500 * time.Millisecond)
	if n := countBody(t, s, "Sent while offline"); n != 0 {
		t.Fatalf("stored %d times while the server was unreachable", n)
	}
	if !get[bool](student, msgWith("Sent while offline")+`.classList.contains('pending')`) {
		t.Fatal("the offline message stopped showing pending while offline")
	}
	restore()
	student.wait("confirmed after the reconnect", msgWith("Sent while offline")+`?.querySelector('.tick')?.dataset.state === 'sent' || `+msgWith("Sent while offline")+`?.querySelector('.tick')?.dataset.state === 'read'`, 20*time.Second)
	console.wait("the agent gets it", msgWith("Sent while offline"), 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := countBody(t, s, "Sent while offline"); n != 1 {
		t.Fatalf("the offline message was stored %d times, want exactly 1", n)
	}
	if n := get[int](console, `[...document.querySelectorAll('#conversation .msg-body')].filter((b) => b.textContent === 'Sent while offline').length`); n != 1 {
		t.Fatalf("the agent shows the offline message %d times", n)
	}
}

// countBody counts the stored messages with this body in every chat.
func countBody(t *testing.T, s *site, body string) int {
	t.Helper()
	chats, err := s.App.DB.ChatSessions(t.Context(), chatFilterAll, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range chats {
		msgs, err := s.App.DB.ChatMessages(t.Context(), c.ID, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Body == body {
				n++
			}
		}
	}
	return n
}

// A student asks from the exam page; the exam's tutor sees the badge on
// the proctoring dashboard, opens the question and answers; the student
// sees the answer.
func TestBrowserExamRoomChat(t *testing.T) {
	s := boot(t)
	b := newBrowser(t, 60*time.Second)
	stu := identity.User{ID: "stu-room", Role: identity.Student, Name: "Rita Room"}

	proctor := b.newTab("tutor", s.url, s.Token(tutor), "/proctor/"+examID)
	proctor.wait("the Questions button", `document.querySelector('#questions-button')`, 5*time.Second)
	student := b.newTab("student", s.url, s.Token(stu), "/exam/"+examID)
	student.wait("session started", `document.querySelector('#status')?.dataset.state === 'active'`, 5*time.Second)
	student.do(chromedp.Click(chromedp.ID("chat-launcher")), chromedp.WaitVisible(chromedp.CSS(`.chat-first textarea`)))
	student.do(typeInto(`.chat-first textarea`, "Is a calculator allowed?"+kb.Enter))

	proctor.wait("an unread question", `document.querySelector('#questions-unread')?.textContent === '1' && !document.querySelector('#questions-unread').hidden`, 3*time.Second)
	proctor.do(chromedp.Click(chromedp.ID("questions-button")))
	proctor.wait("the room listed", `document.querySelector('#rooms li .name')?.textContent === 'Rita Room'`, 2*time.Second)
	proctor.do(chromedp.Click(chromedp.CSS(`#rooms li .chat-item`)))
	proctor.wait("the question", msgWith("Is a calculator allowed?"), 2*time.Second)
	proctor.do(typeInto(`#questions .chat-composer textarea`, "Yes, a basic one."+kb.Enter))
	student.wait("the answer", msgWith("Yes, a basic one.")+`?.classList.contains('theirs')`, 3*time.Second)
	student.wait("the question read", msgWith("Is a calculator allowed?")+`?.querySelector('.tick')?.dataset.state === 'read'`, 3*time.Second)
	proctor.wait("the badge cleared", `document.querySelector('#questions-unread').hidden`, 3*time.Second)
	screenshot(t, proctor, "proctor-questions")
}

var chatFilterAll = store.ChatFilter{}
