package plugin_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/bench"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
)

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
	bench.ReportLatencies(b, samples, "µs", time.Microsecond)
}

// rescans counts the node's rescans; it is the only observer of the
// hotplug benchmark.
type rescans struct {
	nopObserver
	n atomic.Int64
}

func (r *rescans) Rescan(time.Duration, error) { r.n.Add(1) }

type nopObserver struct{}

func (nopObserver) SpecWrite(error)             {}
func (nopObserver) Rescan(time.Duration, error) {}
func (nopObserver) Devices(string, int, int)    {}
func (nopObserver) Allocation(string, error)    {}
func (nopObserver) Registration(string, error)  {}
func (nopObserver) KubeletRestart()             {}

// BenchmarkHotplugToListAndWatch is the time from a GPU's first /dev/dri
// event to the kubelet's stream carrying it, and from its removal to the
// stream dropping it, with the burst of events a hotplug makes: devtmpfs
// creates the card and render nodes, and udev adds the by-path links a
// moment later (udevGap). The sysfs entries are written before the timer
// starts (the kernel makes them before the nodes; they make no event). It
// also reports how many rescans each hotplug cost: the node collects a
// burst for Debounce after its last event, so one burst is one rescan, and
// links that come after the rescan are another.
func BenchmarkHotplugToListAndWatch(b *testing.B) {
	for _, udevGap := range []time.Duration{0, 3 * time.Millisecond} {
		b.Run(fmt.Sprintf("udev-gap=%s", udevGap), func(b *testing.B) {
			obs := &rescans{}
			r := startRig(b, []func(*fakenode.Node) error{fakenode.IGPU}, plugintest.WithObserver(obs))
			_, c := r.registered(deviceplugin.ResourceI915, 1)
			ch := r.watch(c)
			r.nextList(ch, "the iGPU", func(l []*pluginapi.Device) bool { return len(l) == 1 })
			const pci = "0000:0a:00.0"
			var adds, removes []time.Duration
			var addRescans, removeRescans int64
			// settle lets the last rescans of a step land before they are
			// counted (untimed).
			settle := func(from int64) int64 {
				b.StopTimer()
				time.Sleep(4 * node.DefaultDebounce)
				n := obs.n.Load() - from
				b.StartTimer()
				return n
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				r.node.MustAddGPU(b, fakenode.GPU{Card: 1, PCI: pci, Device: "0x56a0", NoDevNodes: true})
				before := obs.n.Load()
				b.StartTimer()

				start := time.Now()
				require.NoError(b, r.node.AddDevNodes(pci, fakenode.WithByPathAfter(udevGap)))
				r.nextList(ch, "the added GPU", func(l []*pluginapi.Device) bool {
					return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", pci + "/Healthy"})
				})
				adds = append(adds, time.Since(start))
				addRescans += settle(before)

				before = obs.n.Load()
				start = time.Now()
				require.NoError(b, r.node.RemoveGPU(pci))
				r.nextList(ch, "the GPU gone", func(l []*pluginapi.Device) bool { return len(l) == 1 })
				removes = append(removes, time.Since(start))
				removeRescans += settle(before)
			}
			b.StopTimer()
			bench.ReportLatencies(b, adds, "add-ms", time.Millisecond)
			bench.ReportLatencies(b, removes, "remove-ms", time.Millisecond)
			b.ReportMetric(float64(addRescans)/float64(b.N), "rescans/add")
			b.ReportMetric(float64(removeRescans)/float64(b.N), "rescans/remove")
		})
	}
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
	bench.ReportLatencies(b, samples, "ms", time.Millisecond)
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
	bench.ReportLatencies(b, samples, "ms", time.Millisecond)
}

// BenchmarkWedgeUeventToListAndWatch is the time from the kernel's DRM
// wedged uevent reaching the plugin's socket to the kubelet's stream
// listing the GPU Unhealthy, and from the driver's bind uevent to it
// Healthy again.
func BenchmarkWedgeUeventToListAndWatch(b *testing.B) {
	r, feed := healthRig(b)
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	const pci = "0000:03:00.0"
	healthy := func(l []*pluginapi.Device) bool { return slices.Equal(ids(l), healthOf(demoI915, "Healthy")) }
	wedged := func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", pci + "/Unhealthy"})
	}
	r.nextList(ch, "both healthy", healthy)
	var outs, backs []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		wedge := msg(b)(r.node.WedgedEvent(pci, "rebind"))
		b.StartTimer()
		start := time.Now()
		send(b, feed, wedge)
		r.nextList(ch, "wedged", wedged)
		outs = append(outs, time.Since(start))

		b.StopTimer()
		require.NoError(b, r.node.RebindGPU(pci))
		bind := msg(b)(r.node.FunctionEvent(pci, "bind"))
		b.StartTimer()
		start = time.Now()
		send(b, feed, bind)
		r.nextList(ch, "back", healthy)
		backs = append(backs, time.Since(start))
	}
	b.StopTimer()
	bench.ReportLatencies(b, outs, "unhealthy-ms", time.Millisecond)
	bench.ReportLatencies(b, backs, "healthy-ms", time.Millisecond)
}
