package dra_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/bench"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// BenchmarkPrepare is one NodePrepareResources of a new claim for one GPU,
// as the kubelet makes it over the DRA socket: the helper reads the claim
// from the (fake) API server, the driver checks the GPU and other claims,
// writes the checkpoint (temporary file, fsync, rename, fsync of the
// directory) and answers. The Unprepare that frees the GPU for the next
// round is not timed.
func BenchmarkPrepare(b *testing.B) {
	r := startRig(b, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	k := r.register()
	claims := make([]*resourceapi.ResourceClaim, b.N)
	for i := range claims {
		claims[i] = dratest.Claim("ns", fmt.Sprintf("c%d", i), fmt.Sprintf("uid-%d", i), dratest.Exclusive("gpu", discrete))
	}
	r.create(claims...)
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for _, c := range claims {
		start := time.Now()
		got := prepare(b, k, c)[string(c.UID)]
		samples = append(samples, time.Since(start))
		b.StopTimer()
		require.Empty(b, got.Error)
		require.Empty(b, unprepare(b, k, c)[string(c.UID)].Error)
		b.StartTimer()
	}
	b.StopTimer()
	bench.ReportLatencies(b, samples, "µs", time.Microsecond)
}

// BenchmarkHotplugToResourceSlice is the time from a GPU being complete on
// the node (sysfs entries, then its /dev/dri nodes, as udev makes them) to
// the API server holding a ResourceSlice with it: the /dev/dri event, the
// rescan and spec write, the driver's Update and the helper's controller
// writing the slice. Building the fake GPU and the removal that resets
// each round are not timed.
func BenchmarkHotplugToResourceSlice(b *testing.B) {
	r := startRig(b, []func(*fakenode.Node) error{fakenode.IGPU})
	r.devices("the iGPU", func(d []resourceapi.Device) bool { return len(d) == 1 })
	const pci = "0000:0a:00.0"
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r.node.MustAddGPU(b, fakenode.GPU{Card: 1, PCI: pci, Device: "0x56a0"})
		start := time.Now()
		b.StartTimer()
		r.devices("the added GPU", func(d []resourceapi.Device) bool { return len(d) == 2 })
		samples = append(samples, time.Since(start))

		b.StopTimer()
		require.NoError(b, r.node.RemoveGPU(pci))
		r.devices("the GPU gone", func(d []resourceapi.Device) bool { return len(d) == 1 })
		b.StartTimer()
	}
	b.StopTimer()
	bench.ReportLatencies(b, samples, "ms", time.Millisecond)
}
