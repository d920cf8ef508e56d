package plugin_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// reportLatencies adds p50 and p99 of the samples to the benchmark output.
func reportLatencies(b *testing.B, samples []time.Duration, unit string, scale time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	pct := func(p float64) float64 {
		return float64(samples[int(p*float64(len(samples)-1))]) / float64(scale)
	}
	b.ReportMetric(pct(0.50), "p50-"+unit)
	b.ReportMetric(pct(0.99), "p99-"+unit)
}

// BenchmarkAllocate is one Allocate of one device through the plugin's real
// unix socket, as the kubelet makes it.
func BenchmarkAllocate(b *testing.B) {
	r := startRig(b, []func(*fakenode.Node) error{fakenode.IGPU})
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ctx := context.Background()
	req := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:00:02.0"}}}}
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := c.Allocate(ctx, req); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	reportLatencies(b, samples, "µs", time.Microsecond)
}

// BenchmarkHotplugToListAndWatch is the time from a GPU being complete on
// the node (sysfs entries written, then its /dev/dri nodes, as udev does)
// to the kubelet's stream carrying it. Building the fake GPU (milliseconds
// of file creation here) and the removal that resets each round are not
// timed.
func BenchmarkHotplugToListAndWatch(b *testing.B) {
	r := startRig(b, []func(*fakenode.Node) error{fakenode.IGPU})
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "the iGPU", func(l []*pluginapi.Device) bool { return len(l) == 1 })
	const pci = "0000:0a:00.0"
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r.node.MustAddGPU(b, fakenode.GPU{Card: 1, PCI: pci, Device: "0x56a0"})
		start := time.Now()
		b.StartTimer()
		r.nextList(ch, "the added GPU", func(l []*pluginapi.Device) bool { return len(l) == 2 })
		samples = append(samples, time.Since(start))

		b.StopTimer()
		require.NoError(b, r.node.RemoveGPU(pci))
		r.nextList(ch, "the GPU gone", func(l []*pluginapi.Device) bool { return len(l) == 1 })
		b.StartTimer()
	}
	b.StopTimer()
	reportLatencies(b, samples, "ms", time.Millisecond)
}

// BenchmarkStartToRegistered64 is the time from starting the plugin on a
// node with 64 GPUs to its i915 resource registered and listing them all:
// scan, spec written, server up, kubelet told.
func BenchmarkStartToRegistered64(b *testing.B) {
	node := fakenode.NewT(b)
	require.NoError(b, fakenode.Many(node, 64))
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		r := startRigOn(b, node)
		_, c := r.registered(deviceplugin.ResourceI915, 1)
		r.nextList(r.watch(c), "64 GPUs", func(l []*pluginapi.Device) bool { return len(l) == 64 })
		samples = append(samples, time.Since(start))
		b.StopTimer()
		r.stop()
		b.StartTimer()
	}
	b.StopTimer()
	reportLatencies(b, samples, "ms", time.Millisecond)
}

// BenchmarkKubeletRestartToReregistered is the time from a kubelet restart
// (sockets wiped, kubelet.sock created again) to the plugin registered anew.
func BenchmarkKubeletRestartToReregistered(b *testing.B) {
	r := startRig(b, []func(*fakenode.Node) error{fakenode.IGPU})
	r.registered(deviceplugin.ResourceI915, 1)
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := r.kubelet.Restart(); err != nil {
			b.Fatal(err)
		}
		if _, err := r.kubelet.WaitRegistration(r.ctx(), deviceplugin.ResourceI915, i+2); err != nil {
			b.Fatal(fmt.Errorf("restart %d: %w", i+1, err))
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	reportLatencies(b, samples, "ms", time.Millisecond)
}
