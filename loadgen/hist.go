package loadgen

import (
	"math"
	"math/bits"
	"sort"
	"sync/atomic"
	"time"
)

// Histogram counts durations in log-linear buckets of microseconds, the way
// HdrHistogram does: 64 buckets per power of two above 128 µs, so a
// percentile is off by at most 1/64 (1.6 %) and below 128 µs it is exact.
// Record is a few atomic adds and never takes a lock, so that 10,000
// heartbeats a second on many goroutines do not queue behind one another
// and the measuring does not distort what it measures.
type Histogram struct {
	counts [histBuckets]atomic.Int64
	n      atomic.Int64
	max    atomic.Int64 // µs, exact
}

const (
	histSub     = 64 // buckets per power of two above 2*histSub
	histMaxExp  = 36 // 2^(36+7) µs ≈ 100 days: anything longer is clamped
	histBuckets = histSub*histMaxExp + 2*histSub
)

// bucketOf maps a value in µs to its bucket: below 128 one bucket per µs;
// above, the top 7 significant bits pick one of 64 buckets per octave.
func bucketOf(us int64) int {
	if us < 0 {
		us = 0
	}
	e := max(0, bits.Len64(uint64(us))-7)
	if e > histMaxExp {
		return histBuckets - 1
	}
	return histSub*e + int(us>>e)
}

// bucketRange is the [lo, hi] µs values a bucket holds.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*histSub {
		return int64(i), int64(i)
	}
	e := (i - histSub) / histSub
	m := int64(i - histSub*e)
	return m << e, (m+1)<<e - 1
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	h.counts[bucketOf(us)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// Snapshot copies the counts so far.
func (h *Histogram) Snapshot() HistSnap {
	s := HistSnap{MaxUs: h.max.Load()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			s.Buckets = append(s.Buckets, [2]int64{int64(i), c})
		}
	}
	return s
}

// HistSnap is a histogram's nonzero buckets, [index, count] in index order:
// small to send between processes and exact to merge.
type HistSnap struct {
	Buckets [][2]int64 `json:"buckets,omitempty"`
	MaxUs   int64      `json:"max_us"`
}

// N is the number of samples.
func (s HistSnap) N() int64 {
	var n int64
	for _, b := range s.Buckets {
		n += b[1]
	}
	return n
}

// Merge returns the histogram of both samples.
func (s HistSnap) Merge(o HistSnap) HistSnap {
	m := map[int64]int64{}
	for _, b := range s.Buckets {
		m[b[0]] += b[1]
	}
	for _, b := range o.Buckets {
		m[b[0]] += b[1]
	}
	out := HistSnap{MaxUs: max(s.MaxUs, o.MaxUs)}
	for i, c := range m {
		out.Buckets = append(out.Buckets, [2]int64{i, c})
	}
	sort.Slice(out.Buckets, func(a, b int) bool { return out.Buckets[a][0] < out.Buckets[b][0] })
	return out
}

// Quantile returns the q-quantile (0 < q ≤ 1): the middle of the bucket
// holding the sample of rank ⌈q·n⌉, never above the exact maximum.
func (s HistSnap) Quantile(q float64) time.Duration {
	n := s.N()
	if n == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(s.MaxUs) * time.Microsecond
	}
	rank := max(1, int64(math.Ceil(q*float64(n))))
	var seen int64
	for _, b := range s.Buckets {
		seen += b[1]
		if seen >= rank {
			lo, hi := bucketRange(int(b[0]))
			us := min((lo+hi)/2, s.MaxUs)
			return time.Duration(us) * time.Microsecond
		}
	}
	return time.Duration(s.MaxUs) * time.Microsecond
}
