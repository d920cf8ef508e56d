package plugin_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
)

// healthRig is the plugin on the demo node with a health monitor that
// hears the uevents the test sends.
func healthRig(t testing.TB, opts ...plugintest.Option) (*rig, *fakenode.UeventFeed) {
	t.Helper()
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.Demo)
	feed := fakenode.NewUeventFeed()
	m, err := health.New(health.WithSysfsRoot(n.Sys), health.WithUeventConn(func() (uevent.Conn, error) { return feed, nil }))
	require.NoError(t, err)
	return startRigOn(t, n, append([]plugintest.Option{plugintest.WithHealth(m), plugintest.WithResyncPeriod(0)}, opts...)...), feed
}

func send(t testing.TB, feed *fakenode.UeventFeed, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, feed.Send(ctx, msg))
}

// TestAWedgedGPUIsUnhealthyUntilTheKernelSaysItIsBack: the DRM wedged
// uevent takes the GPU out of the kubelet's allocatable list at once, with
// no resync, while its spec entry stays for the containers that have it;
// only the driver binding it again brings it back, not time.
func TestAWedgedGPUIsUnhealthyUntilTheKernelSaysItIsBack(t *testing.T) {
	r, feed := healthRig(t)
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "both healthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), healthOf(demoI915, "Healthy"))
	})

	const pci = "0000:03:00.0"
	send(t, feed, msg(t)(r.node.WedgedEvent(pci, "rebind,bus-reset")))
	r.nextList(ch, "the wedged GPU unhealthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", pci + "/Unhealthy"})
	})
	_, err := allocate(r.ctx(), c, []string{pci})
	require.Error(t, err, "an unhealthy GPU is not allocated")
	assert.Contains(t, err.Error(), "wedged")
	spec, err := cdiapi.ReadSpec(r.plugin.SpecPath(), 0)
	require.NoError(t, err)
	assert.NotNil(t, spec.GetDevice(pci), "a container given the GPU before can still be started")

	// Other events, about this GPU or another, do not bring it back.
	send(t, feed, msg(t)(r.node.HangEvent(pci)))
	send(t, feed, msg(t)(r.node.FunctionEvent("0000:00:02.0", "bind")))
	time.Sleep(10 * r.debounce())
	assert.False(t, r.plugin.Node.Snapshot().GPU(pci).Healthy, "still wedged")
	_, err = allocate(r.ctx(), c, []string{pci})
	require.Error(t, err, "still not allocated")

	require.NoError(t, r.node.RebindGPU(pci))
	send(t, feed, msg(t)(r.node.FunctionEvent(pci, "bind")))
	r.nextList(ch, "healthy once the driver is bound again", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), healthOf(demoI915, "Healthy"))
	})
}

// TestAGPUThatWedgesWhileTheKubeletRestartsIsUnhealthyWhenItReturns: the
// health monitor does not depend on the kubelet, so the list the plugin
// sends the restarted kubelet already has the GPU out.
func TestAGPUThatWedgesWhileTheKubeletRestartsIsUnhealthyWhenItReturns(t *testing.T) {
	r, feed := healthRig(t)
	r.registered(deviceplugin.ResourceI915, 1)
	r.kubelet.Stop()
	const pci = "0000:00:02.0"
	send(t, feed, msg(t)(r.node.WedgedEvent(pci, "vendor-specific")))
	require.NoError(t, r.kubelet.Restart())
	_, c := r.registered(deviceplugin.ResourceI915, 2)
	r.nextList(r.watch(c), "the wedged GPU unhealthy in the first list", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{pci + "/Unhealthy", "0000:03:00.0/Healthy"})
	})
}

// msg takes a uevent the fake node built, failing the test if it could not.
func msg(t testing.TB) func([]byte, error) []byte {
	return func(m []byte, err error) []byte {
		t.Helper()
		require.NoError(t, err)
		return m
	}
}
