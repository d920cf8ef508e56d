package dra_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// health is one device's health as a report gives it.
type health struct {
	status  drahealth.HealthStatus
	message string
}

func healthOf(r *drahealth.NodeWatchResourcesResponse) map[string]health {
	out := map[string]health{}
	for _, d := range r.Devices {
		out[d.Device.DeviceName] = health{d.Health, d.Message}
	}
	return out
}

// watchHealth opens the health stream as the kubelet does.
func watchHealth(t *testing.T, k *drakubelet.Plugin) <-chan *drahealth.NodeWatchResourcesResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, errc, err := k.WatchHealth(ctx)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
		assert.NoError(t, <-errc, "health stream")
	})
	return ch
}

// nextHealth waits for a report that satisfies ok.
func nextHealth(t *testing.T, ch <-chan *drahealth.NodeWatchResourcesResponse, what string, ok func(map[string]health) bool) map[string]health {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case r, open := <-ch:
			require.True(t, open, "health stream closed while waiting for %s", what)
			if h := healthOf(r); ok(h) {
				return h
			}
		case <-deadline:
			t.Fatalf("no health report where %s", what)
		}
	}
}

func TestAnUnhealthyGPUIsReportedAndTaintedUntilItRecovers(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	k := r.register()
	ch := watchHealth(t, k)
	nextHealth(t, ch, "both GPUs are healthy", func(h map[string]health) bool {
		return len(h) == 2 && h[igpu].status == drahealth.HealthStatus_HEALTHY && h[discrete].status == drahealth.HealthStatus_HEALTHY
	})

	// Its nodes vanish, as when its driver is unloaded.
	require.NoError(t, r.node.RemoveDevNodes("0000:03:00.0"))
	h := nextHealth(t, ch, "the discrete GPU is unhealthy", func(h map[string]health) bool {
		return h[discrete].status == drahealth.HealthStatus_UNHEALTHY
	})
	assert.Contains(t, h[discrete].message, "/dev/dri", "the message says why")
	assert.Equal(t, drahealth.HealthStatus_HEALTHY, h[igpu].status)
	devs := r.devices("the discrete GPU is tainted", func(d []resourceapi.Device) bool { return len(byName(d)[discrete].Taints) == 1 })
	taint := byName(devs)[discrete].Taints[0]
	assert.Equal(t, "gpu.intel.com/unhealthy", taint.Key)
	assert.Equal(t, resourceapi.DeviceTaintEffectNoSchedule, taint.Effect)
	// The value is the reason made a label value; the health message has it
	// whole.
	assert.Empty(t, validation.IsValidLabelValue(taint.Value))
	assert.NotEmpty(t, taint.Value)
	assert.True(t, strings.HasPrefix(strings.ReplaceAll(h[discrete].message, " ", "-"), taint.Value[:10]), "taint %q, message %q", taint.Value, h[discrete].message)
	assert.Empty(t, byName(devs)[igpu].Taints)

	require.NoError(t, r.node.AddDevNodes("0000:03:00.0"))
	nextHealth(t, ch, "the discrete GPU recovered", func(h map[string]health) bool {
		return h[discrete].status == drahealth.HealthStatus_HEALTHY && h[discrete].message == ""
	})
	r.devices("the taint is removed", func(d []resourceapi.Device) bool {
		dev, ok := byName(d)[discrete]
		return ok && len(dev.Taints) == 0
	})
}

func TestHealthIsSentAgainWhenNothingChanges(t *testing.T) {
	// The kubelet takes health that is not refreshed within 30 s as
	// Unknown; the resend period is shortened here so that the test sees
	// several.
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe}, dratest.WithHealthResend(20*time.Millisecond))
	k := r.register()
	ch := watchHealth(t, k)
	first := nextHealth(t, ch, "the first report", func(h map[string]health) bool { return len(h) == 2 })
	for i := range 3 {
		again := nextHealth(t, ch, "a resend", func(map[string]health) bool { return true })
		assert.Equal(t, first, again, "resend %d", i)
	}
}

func TestAPreparedGPUThatLeavesTheNodeIsReportedUnhealthyUntilUnprepared(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe}, dratest.WithHealthResend(50*time.Millisecond))
	k := r.register()
	a := dratest.Claim("ns", "a", "uid-a", dratest.Exclusive("gpu", discrete))
	r.create(a)
	require.Empty(t, prepare(t, k, a)["uid-a"].Error)
	ch := watchHealth(t, k)

	require.NoError(t, r.node.RemoveGPU("0000:03:00.0"))
	r.devices("the GPU leaves the slice", func(d []resourceapi.Device) bool {
		_, ok := byName(d)[discrete]
		return !ok && len(d) == 1
	})
	h := nextHealth(t, ch, "the removed GPU is unhealthy", func(h map[string]health) bool {
		return h[discrete].status == drahealth.HealthStatus_UNHEALTHY
	})
	assert.Contains(t, h[discrete].message, "no longer on the node")

	require.Empty(t, unprepare(t, k, a)["uid-a"].Error)
	nextHealth(t, ch, "the removed GPU is no longer reported", func(h map[string]health) bool {
		_, ok := h[discrete]
		return !ok && len(h) == 1
	})
}

func TestAGPUThatComesOrGoesIsRepublished(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU})
	r.devices("the iGPU", func(d []resourceapi.Device) bool { return len(d) == 1 })
	r.node.MustAddGPU(t, fakenode.GPU{Card: 1, PCI: "0000:0a:00.0", Device: "0x56a0", Driver: "xe"})
	devs := r.devices("the added GPU", func(d []resourceapi.Device) bool { return len(d) == 2 })
	assert.Equal(t, "xe", *byName(devs)["gpu-0000-0a-00-0"].Attributes["driver"].StringValue)
	require.NoError(t, r.node.RemoveGPU("0000:0a:00.0"))
	r.devices("the GPU gone", func(d []resourceapi.Device) bool { return len(d) == 1 })
}
