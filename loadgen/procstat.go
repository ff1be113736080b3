package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The server's CPU and memory, read from /proc when it runs on this machine.
// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ, fixed at 100
// on every architecture Go supports).
const userHZ = 100

// findListener returns the process listening on TCP port: the socket's
// inode from /proc/net/tcp{,6}, then the process holding that inode among
// the /proc/*/fd links this user may read.
func findListener(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); ok && err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no process listens on port %d here", port)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue // another user's process
		}
		for _, fd := range fds {
			if link, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil && inodes[link] {
				return strconv.Atoi(filepath.Base(dir))
			}
		}
	}
	return 0, fmt.Errorf("the listener on port %d belongs to a process this user cannot see (--server-pid)", port)
}

// cpuTicks is the process's user + system time in ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'. Then state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unreadable stat")
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 13 {
		return 0, errors.New("unreadable stat")
	}
	u, err1 := strconv.ParseInt(fs[11], 10, 64)
	s, err2 := strconv.ParseInt(fs[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable stat")
	}
	return u + s, nil
}

// memKB returns VmRSS and VmHWM (the lifetime peak) in KiB.
func memKB(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fs[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm, sc.Err()
}

func countFDs(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

// sampler follows one process from the start of the measured phase: mean
// CPU between start and end, the largest RSS seen by sample.
type sampler struct {
	pid int

	mu              sync.Mutex
	t0, last        time.Time
	cpu0, lastCPU   int64
	maxRSS, lastRSS int64
	gone            bool
}

func newSampler(pid int) (*sampler, error) {
	cpu, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	rss, _, _ := memKB(pid)
	now := time.Now()
	return &sampler{pid: pid, t0: now, last: now, cpu0: cpu, lastCPU: cpu, maxRSS: rss, lastRSS: rss}, nil
}

// restart makes now the start of the measured phase.
func (s *sampler) restart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cpu, err := cpuTicks(s.pid); err == nil {
		s.cpu0, s.lastCPU = cpu, cpu
	}
	s.t0, s.last = time.Now(), time.Now()
	s.maxRSS = 0
	s.sampleLocked()
}

func (s *sampler) sampleLocked() (cpuPct float64) {
	now := time.Now()
	cpu, err := cpuTicks(s.pid)
	if err != nil {
		s.gone = true
		return 0
	}
	if rss, _, err := memKB(s.pid); err == nil {
		s.lastRSS = rss
		s.maxRSS = max(s.maxRSS, rss)
	}
	if dt := now.Sub(s.last).Seconds(); dt > 0 {
		cpuPct = 100 * float64(cpu-s.lastCPU) / userHZ / dt
	}
	s.last, s.lastCPU = now, cpu
	return cpuPct
}

// pollRSS notes the process's RSS, for the maximum over the run.
func (s *sampler) pollRSS() {
	if s == nil {
		return
	}
	rss, _, err := memKB(s.pid)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastRSS = rss
	s.maxRSS = max(s.maxRSS, rss)
}

// sample reads the process now; the CPU is the mean since the last sample.
func (s *sampler) sample() ProcStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	pct := s.sampleLocked()
	return ProcStats{PID: s.pid, CPUPct: pct, RSSMaxMB: float64(s.lastRSS) / 1024}
}

// final is the whole measured phase.
func (s *sampler) final() *ProcStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sampleLocked()
	p := &ProcStats{PID: s.pid, RSSMaxMB: float64(s.maxRSS) / 1024}
	if dt := s.last.Sub(s.t0).Seconds(); dt > 0 {
		p.CPUPct = 100 * float64(s.lastCPU-s.cpu0) / userHZ / dt
	}
	if _, hwm, err := memKB(s.pid); err == nil {
		p.RSSPeakMB = float64(hwm) / 1024
	}
	p.FDs = countFDs(s.pid)
	if s.gone {
		p.Note = "the process ended during the run"
	}
	if s.pid == os.Getpid() {
		p.Note = "the server runs inside the load generator's process: its figures include the load"
	}
	return p
}
