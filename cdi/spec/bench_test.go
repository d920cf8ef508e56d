package spec_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

var benchSizes = []int{1, 64, 512}

// cpuTime is the CPU time this process has used, user and system. The
// machine the figures come from is shared: wall time per op there
// measures the neighbours too, CPU time per op much less so.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs op b.N times and reports, besides the wall time, the CPU
// time per op of the whole process (the scan's goroutines included).
func loop(b *testing.B, op func()) {
	b.ReportAllocs()
	start := cpuTime(b)
	for b.Loop() {
		op()
	}
	b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// BenchmarkDiscoverAndGenerate measures what `generate` and the plugin do
// per refresh on a node of N GPUs (fakenode.Many), minus the file write:
// Scan, Build and Marshal, in JSON (what the plugin writes on every
// change) and in YAML (generate's default). The tree is built once,
// outside the timer. Writing is BenchmarkWrite, apart, because its fsyncs
// measure the disk, not us.
func BenchmarkDiscoverAndGenerate(b *testing.B) {
	for _, count := range benchSizes {
		n := fakenode.NewT(b)
		if err := fakenode.Many(n, count); err != nil {
			b.Fatal(err)
		}
		sc := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev))
		builder, err := spec.NewBuilder()
		if err != nil {
			b.Fatal(err)
		}
		if res, err := sc.Scan(); err != nil || len(res.Usable()) != count {
			b.Fatalf("scan of %d GPUs: %d usable, error %v", count, len(res.Usable()), err)
		}
		for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
			b.Run(fmt.Sprintf("gpus=%d/format=%s", count, f), func(b *testing.B) {
				loop(b, func() {
					res, err := sc.Scan()
					if err != nil {
						b.Fatal(err)
					}
					s, err := builder.Build(res.Devices)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := spec.Marshal(s, f); err != nil {
						b.Fatal(err)
					}
				})
			})
		}
	}
}

// BenchmarkScan measures discovery alone.
func BenchmarkScan(b *testing.B) {
	for _, count := range benchSizes {
		n := fakenode.NewT(b)
		if err := fakenode.Many(n, count); err != nil {
			b.Fatal(err)
		}
		sc := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev))
		b.Run(fmt.Sprintf("gpus=%d", count), func(b *testing.B) {
			loop(b, func() {
				if _, err := sc.Scan(); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkWrite measures spec.Write alone: Check, encode, the ownership
// check of the file in place, temp file, fsync, rename.
func BenchmarkWrite(b *testing.B) {
	for _, count := range benchSizes {
		b.Run(fmt.Sprintf("gpus=%d", count), func(b *testing.B) {
			n := fakenode.NewT(b)
			if err := fakenode.Many(n, count); err != nil {
				b.Fatal(err)
			}
			res, err := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev)).Scan()
			if err != nil {
				b.Fatal(err)
			}
			builder, err := spec.NewBuilder()
			if err != nil {
				b.Fatal(err)
			}
			s, err := builder.Build(res.Devices)
			if err != nil {
				b.Fatal(err)
			}
			p := filepath.Join(b.TempDir(), "intel.com-gpu.yaml")
			for b.Loop() {
				if err := spec.Write(p, s, spec.FormatYAML); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
