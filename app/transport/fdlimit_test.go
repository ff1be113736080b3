package transport

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// refusingListener fails every Accept as a process out of descriptors does.
type refusingListener struct{ net.Listener }

func (refusingListener) Accept() (net.Conn, error) {
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: fmt.Errorf("accept4: %w", syscall.EMFILE)}
}

func TestDescriptorLimitIsLogged(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := &fdLimitListener{Listener: refusingListener{}, log: slog.New(slog.NewTextHandler(&buf, nil)),
		now: func() time.Time { return now }}
	for range 100 { // net/http retries at once, over and over
		if _, err := l.Accept(); err == nil {
			t.Fatal("want the accept error passed on")
		}
	}
	if n := strings.Count(buf.String(), "file descriptor limit reached"); n != 1 {
		t.Fatalf("want one warning for a burst of refusals, got %d:\n%s", n, buf.String())
	}
	now = now.Add(fdWarnEvery)
	l.Accept()
	if n := strings.Count(buf.String(), "file descriptor limit reached"); n != 2 {
		t.Fatalf("want a second warning %v later, got %d", fdWarnEvery, n)
	}
	if !strings.Contains(buf.String(), "refused_since_start=101") {
		t.Fatalf("want the count of refusals in the warning:\n%s", buf.String())
	}
}
