package carriers

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSet(t *testing.T) {
	s := New[string]()
	s.Attach(1, "a")
	s.Attach(1, "a") // said twice, counted once
	s.Attach(2, "a")
	s.Attach(1, "b")
	s.Attach(0, "c") // HTTP carries nothing
	for k, want := range map[string]bool{"a": true, "b": true, "c": false} {
		if got := s.Carried(k); got != want {
			t.Errorf("Carried(%q) = %v, want %v", k, got, want)
		}
	}
	if s.Detach(3, "a") {
		t.Error("a socket that never carried a key orphaned it")
	}
	orphans := s.Close(1)
	slices.Sort(orphans)
	if diff := cmp.Diff([]string{"b"}, orphans); diff != "" {
		t.Errorf("closing socket 1 (a is still carried by 2) (-want +got):\n%s", diff)
	}
	if !s.Carried("a") || s.Carried("b") {
		t.Errorf("after closing 1: a %v, b %v", s.Carried("a"), s.Carried("b"))
	}
	if !s.Detach(2, "a") || s.Carried("a") {
		t.Error("detaching the last socket of a did not orphan it")
	}
	if s.Detach(2, "a") {
		t.Error("detached twice, orphaned twice")
	}
	if got := s.Close(2); len(got) != 0 {
		t.Errorf("closing 2, which carries nothing now: %v", got)
	}
	if len(s.byConn) != 0 || len(s.count) != 0 {
		t.Errorf("left behind: %v %v", s.byConn, s.count)
	}
}
