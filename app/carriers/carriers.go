// Package carriers counts which live sockets carry which keys: a student's
// proctoring session, a user's presence in a scope. A key that no socket
// carries any more is what a closing socket leaves behind: its student is
// shown disconnected, its user offline. HTTP callers (conn 0) carry
// nothing; they are judged by what they send alone.
package carriers

import "sync"

// Set is the sockets carrying each key. It is safe for concurrent use.
type Set[K comparable] struct {
	mu     sync.Mutex
	byConn map[uint64]map[K]struct{} // keys each socket carries
	count  map[K]int                 // sockets carrying each key
}

// New returns an empty set.
func New[K comparable]() *Set[K] {
	return &Set[K]{byConn: map[uint64]map[K]struct{}{}, count: map[K]int{}}
}

// Attach records that conn carries k (once, however often it is said).
func (s *Set[K]) Attach(conn uint64, k K) {
	if conn == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.byConn[conn]
	if keys == nil {
		keys = map[K]struct{}{}
		s.byConn[conn] = keys
	}
	if _, ok := keys[k]; !ok {
		keys[k] = struct{}{}
		s.count[k]++
	}
}

// Detach records that conn no longer carries k, and reports whether k was
// carried by conn and now by no socket at all.
func (s *Set[K]) Detach(conn uint64, k K) (orphaned bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.byConn[conn]
	if _, ok := keys[k]; !ok {
		return false
	}
	delete(keys, k)
	return s.release(k)
}

// Carried reports whether a live socket carries k.
func (s *Set[K]) Carried(k K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[k] > 0
}

// Close forgets conn and returns the keys it carried that no other socket
// carries.
func (s *Set[K]) Close(conn uint64) (orphans []K) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.byConn[conn] {
		if s.release(k) {
			orphans = append(orphans, k)
		}
	}
	delete(s.byConn, conn)
	return orphans
}

// release drops one socket from k's count; true when none is left.
func (s *Set[K]) release(k K) bool {
	if s.count[k]--; s.count[k] > 0 {
		return false
	}
	delete(s.count, k)
	return true
}
