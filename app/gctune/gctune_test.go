package gctune

import (
	"testing"
	"testing/fstest"
)

func TestMemoryAvailable(t *testing.T) {
	meminfo := &fstest.MapFile{Data: []byte("MemTotal:       24684312 kB\nMemFree:        22788096 kB\n")}
	const machine = 24684312 << 10
	cases := []struct {
		name  string
		files fstest.MapFS
		want  int64
	}{
		{"machine only", fstest.MapFS{"proc/meminfo": meminfo}, machine},
		{"cgroup v2 limit", fstest.MapFS{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory.max": {Data: []byte("1073741824\n")}}, 1 << 30},
		{"cgroup v2 without limit", fstest.MapFS{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory.max": {Data: []byte("max\n")}}, machine},
		{"cgroup v1 limit", fstest.MapFS{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("536870912\n")}}, 512 << 20},
		{"cgroup v1 'no limit' is a huge number", fstest.MapFS{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")}}, machine},
		{"nothing readable", fstest.MapFS{}, 0},
		{"garbled meminfo", fstest.MapFS{"proc/meminfo": {Data: []byte("MemTotal: lots\n")}}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := MemoryAvailable(c.files); got != c.want {
				t.Fatalf("MemoryAvailable = %d, want %d", got, c.want)
			}
		})
	}
}
