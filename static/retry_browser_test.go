package static_test

// invigil.js waits when the server says so (issues 6 and 12), against the
// scripted server: a token from a signing key the server has not fetched yet
// is sent again once, after the key set may be refetched, before it counts
// as refused; a socket closed with retry_after_ms is not reopened sooner;
// a sub refused with rate_limited is sent again when the server said.

import (
	"strings"
	"testing"
	"time"
)

func TestBrowserClientRetriesAsTold(t *testing.T) {
	requireChromium(t)
	srv := newScripted(t, map[string]*table{})
	srv.objects["test.limited"] = func(map[string]any) any { return map[string]any{"ok": true} }

	// What the server saw, in order (all under srv.mu).
	type event struct {
		at   time.Time
		conn int
		what string
	}
	var events []event
	refuse := map[string]int{"tok-new-key": 1, "tok-unknown": 99} // auths answered "unknown signing key"
	limited := 1                                                  // subs of test.limited refused
	srv.intercept = func(c *fconn, f inFrame) bool {
		switch f.Type {
		case "auth":
			events = append(events, event{time.Now(), c.n, "auth " + f.Token})
			if refuse[f.Token] > 0 {
				refuse[f.Token]--
				c.send(srv, map[string]any{"type": "error", "code": "unauthenticated", "message": "unknown signing key"})
				return true
			}
		case "sub":
			if f.Query == "test.limited" && limited > 0 {
				limited--
				events = append(events, event{time.Now(), c.n, "sub refused"})
				c.send(srv, map[string]any{"type": "error", "id": f.ID, "code": "rate_limited", "message": "slow down", "retry_after_ms": 400})
				return true
			}
			events = append(events, event{time.Now(), c.n, "sub " + f.Query})
		}
		return false
	}
	find := func(what string, nth int) (event, bool) {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for _, e := range events {
			if e.what == what {
				if nth--; nth == 0 {
					return e, true
				}
			}
		}
		return event{}, false
	}

	b := newBrowser(t, 60*time.Second)
	page := b.newTab("client", srv.url, "", "")
	page.eval(`(async () => {
		const { connect } = await import('/static/invigil.js');
		const log = window.__log = {};
		const client = (name, token) => {
			const l = log[name] = { states: [], asked: [], errors: [] };
			return connect({
				keyRetryMs: 1000, maxDelayMs: 200,
				getToken: async (info) => { l.asked.push(info); return token(info); },
				onState: (s) => l.states.push(s),
				onError: (e) => l.errors.push(e.code + ': ' + e.message),
			});
		};
		// A key Supabase has just rotated in: refused once, then accepted.
		window.__fresh = client('fresh', () => 'tok-new-key');
		__fresh.subscribe('test.limited', {}, (v) => { log.fresh.limited = v; }, (e) => { log.fresh.limitedError = e.code; });
		// A key the server never learns: after the one retry, a new token.
		window.__stale = client('stale', (info) => info.forceRefresh ? 'tok-good' : 'tok-unknown');
	})()`)

	// The fresh key: the same token again on a new socket, not before the
	// key retry, without asking getToken again, and never shown offline.
	page.wait("fresh online", `__fresh.state === 'online'`, 5*time.Second)
	first, _ := find("auth tok-new-key", 1)
	second, ok := find("auth tok-new-key", 2)
	if !ok {
		t.Fatal("the token was not sent again")
	}
	if gap := second.at.Sub(first.at); gap < time.Second {
		t.Fatalf("sent again after %s; want at least keyRetryMs (1 s)", gap)
	}
	if second.conn == first.conn {
		t.Fatal("sent again on the socket that never authenticated (the server closes those after 10 s)")
	}
	if got := get[string](page, `JSON.stringify(__log.fresh.asked)`); got != `[{"reason":"connect","forceRefresh":false}]` {
		t.Fatalf("getToken calls: %s; want one, at connect", got)
	}
	if got := get[[]string](page, `__log.fresh.states`); strings.Contains(strings.Join(got, ","), "offline") {
		t.Fatalf("states %v: a key not yet known is not an outage", got)
	}

	// The unknown key: tried twice, a key retry apart, then refused for good:
	// getToken is asked for a fresh token.
	page.wait("stale online with a new token", `__stale.state === 'online'`, 5*time.Second)
	u1, _ := find("auth tok-unknown", 1)
	u2, _ := find("auth tok-unknown", 2)
	if _, again := find("auth tok-unknown", 3); again || u2.at.Sub(u1.at) < time.Second {
		t.Fatalf("the unknown key was sent at %v (want exactly twice, ≥ 1 s apart)", []time.Time{u1.at, u2.at})
	}
	if _, ok := find("auth tok-good", 1); !ok {
		t.Fatal("the fresh token was never sent")
	}
	if got := get[string](page, `JSON.stringify(__log.stale.asked.map((i) => i.forceRefresh))`); got != `[false,true]` {
		t.Fatalf("getToken forceRefresh: %s; want [false,true]", got)
	}

	// The rate-limited sub: sent again 400 ms later, and served.
	page.wait("the limited query served", `__log.fresh.limited?.ok === true`, 3*time.Second)
	refused, _ := find("sub refused", 1)
	resent, _ := find("sub test.limited", 1)
	if gap := resent.at.Sub(refused.at); gap < 400*time.Millisecond {
		t.Fatalf("sub sent again after %s; want ≥ retry_after_ms (400 ms)", gap)
	}
	if e := get[string](page, `String(__log.fresh.limitedError)`); e != "undefined" {
		t.Fatalf("the subscription ended with %s", e)
	}

	// A server that sheds load closes with retry_after_ms in the reason:
	// the client stays away at least that long, then comes back.
	srv.mu.Lock()
	var sock *fconn
	for c := range srv.conns {
		if c.token == "tok-new-key" {
			sock = c
		}
	}
	srv.mu.Unlock()
	if sock == nil {
		t.Fatal("no socket for the fresh client")
	}
	closedAt := time.Now()
	sock.closeWith(1013, "overloaded retry_after_ms=1500")
	page.wait("back online", `__fresh.state === 'online' && __log.fresh.states.filter((s) => s === 'online').length >= 2`, 6*time.Second)
	back, _ := find("auth tok-new-key", 3)
	if gap := back.at.Sub(closedAt); gap < 1500*time.Millisecond {
		t.Fatalf("reconnected %s after the close; want ≥ 1.5 s", gap)
	}
	t.Logf("key retry after %s; unknown key retried after %s; sub re-sent after %s; reconnect after %s",
		second.at.Sub(first.at).Round(time.Millisecond), u2.at.Sub(u1.at).Round(time.Millisecond),
		resent.at.Sub(refused.at).Round(time.Millisecond), back.at.Sub(closedAt).Round(time.Millisecond))
}
