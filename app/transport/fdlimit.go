package transport

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// fdLimitListener says in the log when accepting fails because the process
// ran out of file descriptors: net/http retries such an Accept quietly, and
// new sockets just wait, which from outside looks like a hung server.
type fdLimitListener struct {
	net.Listener
	log    *slog.Logger
	now    func() time.Time
	last   atomic.Int64 // unix nanoseconds of the last warning
	Misses atomic.Int64 // accepts refused for want of descriptors
}

// fdWarnEvery spaces the warnings while the limit is reached.
const fdWarnEvery = 10 * time.Second

func (l *fdLimitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && (errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)) {
		l.Misses.Add(1)
		now := l.now().UnixNano()
		last := l.last.Load()
		if now-last >= int64(fdWarnEvery) && l.last.CompareAndSwap(last, now) {
			l.log.Error("file descriptor limit reached: new connections wait until sockets close (raise `ulimit -n`, or spread sockets over more machines)",
				"err", err.Error(), "refused_since_start", l.Misses.Load())
		}
	}
	return c, err
}
