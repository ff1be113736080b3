package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < histBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d is [%d, %d] after one ending at %d", i, lo, hi, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= 128 && float64(hi-lo+1)/float64(lo) > 1.0/64+1e-9 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/64 of its values", i, lo, hi)
		}
		prevHi = hi
	}
	if bucketOf(math.MaxInt64) != histBuckets-1 || bucketOf(-5) != 0 {
		t.Error("out-of-range values are not clamped")
	}
}

func TestQuantilesMatchSortedSamples(t *testing.T) {
	var h Histogram
	var exact []time.Duration
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range 8 { // recorded from several goroutines at once, as sockets do
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			var mine []time.Duration
			for range 20_000 {
				d := time.Duration(math.Exp(r.NormFloat64()*1.5+8)) * time.Microsecond // ~3 ms, long tail
				h.Record(d)
				mine = append(mine, d.Truncate(time.Microsecond))
			}
			mu.Lock()
			exact = append(exact, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(exact)
	s := h.Snapshot()
	if s.N() != int64(len(exact)) {
		t.Fatalf("n = %d, want %d", s.N(), len(exact))
	}
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99, 0.999} {
		want := exact[int(math.Ceil(q*float64(len(exact))))-1]
		got := s.Quantile(q)
		if diff := math.Abs(float64(got-want)) / float64(want); diff > 1.0/64 {
			t.Errorf("p%g = %s, want %s (off by %.2f%%)", q*100, got, want, diff*100)
		}
	}
	if got := s.Quantile(1); got != exact[len(exact)-1] {
		t.Errorf("max = %s, want exactly %s", got, exact[len(exact)-1])
	}
}

func TestMergedSnapshotsEqualOneHistogram(t *testing.T) {
	var a, b, all Histogram
	for i := range 5000 {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	m := a.Snapshot().Merge(b.Snapshot())
	want := all.Snapshot()
	if !slices.Equal(m.Buckets, want.Buckets) || m.MaxUs != want.MaxUs {
		t.Fatal("merged snapshot differs from the histogram of all samples")
	}
	for _, q := range []float64{.5, .95, .99, 1} {
		if m.Quantile(q) != want.Quantile(q) {
			t.Errorf("p%g: merged %s, whole %s", q*100, m.Quantile(q), want.Quantile(q))
		}
	}
	if (HistSnap{}).Quantile(.99) != 0 {
		t.Error("an empty histogram has no percentiles")
	}
}
