package presence_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/presence"
	"invigil/store/storetest"
)

// Expiry pages past the rows live sockets carry, however many: behind 600
// carried rows as old as theirs, the three uncarried ones still go.
func TestExpiryPagesPastCarriedRows(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{Clock: clock})
	t.Cleanup(e.Close)
	p := presence.New(db, exam.NewRegistry(db), presence.Config{TTL: time.Minute})
	p.Register(e)
	ctx := context.Background()
	touch := func(id string, conn uint64) {
		t.Helper()
		c := engine.Caller{User: identity.User{ID: id, Role: identity.Student, Name: id}, Conn: conn}
		if _, err := e.Call(ctx, c, "presence.touchPresence", json.RawMessage(`{"scope":"global"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 600 {
		touch(fmt.Sprintf("a-%03d", i), uint64(i+1)) // carried by a socket
	}
	for i := range 3 {
		touch(fmt.Sprintf("z-%d", i), 0) // over HTTP: carried by nothing
	}
	clock.Advance(time.Minute + time.Second)
	n, err := p.ExpireStale(ctx)
	if err != nil || n != 3 {
		t.Fatalf("expired %d (%v), want the 3 uncarried", n, err)
	}
	rows, err := db.PresenceList(ctx, "global", 1000)
	if err != nil || len(rows) != 600 {
		t.Fatalf("%d rows left (%v), want the 600 carried", len(rows), err)
	}
	// Their sockets close: offline at once, and gone after the TTL.
	for i := range 600 {
		e.ConnClosed(uint64(i + 1))
	}
	clock.Advance(time.Minute + time.Second)
	if n, err := p.ExpireStale(ctx); err != nil || n != 600 {
		t.Fatalf("expired %d (%v), want 600", n, err)
	}
}
