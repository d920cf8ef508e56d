package uevent_test

import (
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

// BenchmarkParse parses the kernel's wedged event for an xe card: the
// parse throughput of the listener (events/s = 1e9 / ns/op).
func BenchmarkParse(b *testing.B) {
	b.SetBytes(int64(len(wedgedXe)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := uevent.Parse(wedgedXe); err != nil {
			b.Fatal(err)
		}
	}
}
