package metrics_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errBoom = errors.New("boom")

func TestObserverCallsLandInTheirMetrics(t *testing.T) {
	m := metrics.New()
	m.Devices(deviceplugin.ResourceI915, 2, 1)
	m.Devices(deviceplugin.ResourceXe, 1, 0)
	m.Devices(deviceplugin.ResourceI915, 3, 0) // a later list replaces the earlier
	m.Allocation(deviceplugin.ResourceI915, nil)
	m.Allocation(deviceplugin.ResourceI915, errBoom)
	m.Allocation(deviceplugin.ResourceXe, nil)
	m.Registration(deviceplugin.ResourceXe, errBoom)
	m.Registration(deviceplugin.ResourceXe, nil)
	m.KubeletRestart()
	m.SpecWrite(nil)
	m.SpecWrite(errBoom)
	m.SpecWrite(nil)
	m.Rescan(300*time.Microsecond, nil)
	m.Rescan(2*time.Second, errBoom)

	const want = `
# HELP intel_gpu_cdi_allocation_errors_total Allocate calls that failed, by resource.
# TYPE intel_gpu_cdi_allocation_errors_total counter
intel_gpu_cdi_allocation_errors_total{resource="gpu.intel.com/i915"} 1
intel_gpu_cdi_allocation_errors_total{resource="gpu.intel.com/monitoring"} 0
intel_gpu_cdi_allocation_errors_total{resource="gpu.intel.com/xe"} 0
# HELP intel_gpu_cdi_allocations_total Allocate calls answered, failed ones included, by resource.
# TYPE intel_gpu_cdi_allocations_total counter
intel_gpu_cdi_allocations_total{resource="gpu.intel.com/i915"} 2
intel_gpu_cdi_allocations_total{resource="gpu.intel.com/monitoring"} 0
intel_gpu_cdi_allocations_total{resource="gpu.intel.com/xe"} 1
# HELP intel_gpu_cdi_devices Devices advertised to the kubelet, by resource and health (healthy or unhealthy). With --shared-dev-num each share is a device.
# TYPE intel_gpu_cdi_devices gauge
intel_gpu_cdi_devices{health="healthy",resource="gpu.intel.com/i915"} 3
intel_gpu_cdi_devices{health="healthy",resource="gpu.intel.com/monitoring"} 0
intel_gpu_cdi_devices{health="healthy",resource="gpu.intel.com/xe"} 1
intel_gpu_cdi_devices{health="unhealthy",resource="gpu.intel.com/i915"} 0
intel_gpu_cdi_devices{health="unhealthy",resource="gpu.intel.com/monitoring"} 0
intel_gpu_cdi_devices{health="unhealthy",resource="gpu.intel.com/xe"} 0
# HELP intel_gpu_cdi_kubelet_restarts_total Kubelet restarts seen (kubelet.sock created again).
# TYPE intel_gpu_cdi_kubelet_restarts_total counter
intel_gpu_cdi_kubelet_restarts_total 1
# HELP intel_gpu_cdi_registration_errors_total Registration attempts with the kubelet that failed, by resource.
# TYPE intel_gpu_cdi_registration_errors_total counter
intel_gpu_cdi_registration_errors_total{resource="gpu.intel.com/i915"} 0
intel_gpu_cdi_registration_errors_total{resource="gpu.intel.com/monitoring"} 0
intel_gpu_cdi_registration_errors_total{resource="gpu.intel.com/xe"} 1
# HELP intel_gpu_cdi_registrations_total Registration attempts with the kubelet, failed ones included, by resource.
# TYPE intel_gpu_cdi_registrations_total counter
intel_gpu_cdi_registrations_total{resource="gpu.intel.com/i915"} 0
intel_gpu_cdi_registrations_total{resource="gpu.intel.com/monitoring"} 0
intel_gpu_cdi_registrations_total{resource="gpu.intel.com/xe"} 2
# HELP intel_gpu_cdi_rescan_duration_seconds How long a rescan took, from reading sysfs to the kubelet lists and the spec on disk.
# TYPE intel_gpu_cdi_rescan_duration_seconds histogram
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.0001"} 0
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.00025"} 0
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.0005"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.001"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.0025"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.005"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.01"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.025"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.05"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.1"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.25"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="0.5"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="1"} 1
intel_gpu_cdi_rescan_duration_seconds_bucket{le="+Inf"} 2
intel_gpu_cdi_rescan_duration_seconds_sum 2.0003
intel_gpu_cdi_rescan_duration_seconds_count 2
# HELP intel_gpu_cdi_rescan_errors_total Rescans that failed (scan or spec write).
# TYPE intel_gpu_cdi_rescan_errors_total counter
intel_gpu_cdi_rescan_errors_total 1
# HELP intel_gpu_cdi_rescans_total Rescans of the node's GPUs, failed ones included.
# TYPE intel_gpu_cdi_rescans_total counter
intel_gpu_cdi_rescans_total 2
# HELP intel_gpu_cdi_spec_write_errors_total CDI spec writes that failed.
# TYPE intel_gpu_cdi_spec_write_errors_total counter
intel_gpu_cdi_spec_write_errors_total 1
# HELP intel_gpu_cdi_spec_writes_total CDI spec writes, failed ones included.
# TYPE intel_gpu_cdi_spec_writes_total counter
intel_gpu_cdi_spec_writes_total 3
`
	names := []string{
		"intel_gpu_cdi_allocation_errors_total", "intel_gpu_cdi_allocations_total", "intel_gpu_cdi_devices",
		"intel_gpu_cdi_kubelet_restarts_total", "intel_gpu_cdi_registration_errors_total",
		"intel_gpu_cdi_registrations_total", "intel_gpu_cdi_rescan_duration_seconds",
		"intel_gpu_cdi_rescan_errors_total", "intel_gpu_cdi_rescans_total",
		"intel_gpu_cdi_spec_write_errors_total", "intel_gpu_cdi_spec_writes_total",
	}
	require.NoError(t, testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...))
}

func TestAResourceNotKnownInAdvanceIsStillCounted(t *testing.T) {
	m := metrics.New()
	m.Allocation("gpu.intel.com/future", nil)
	m.Allocation("gpu.intel.com/future", errBoom)
	m.Devices("gpu.intel.com/future", 4, 0)

	const want = `
# HELP intel_gpu_cdi_allocation_errors_total Allocate calls that failed, by resource.
# TYPE intel_gpu_cdi_allocation_errors_total counter
intel_gpu_cdi_allocation_errors_total{resource="gpu.intel.com/future"} 1
intel_gpu_cdi_allocation_errors_total{resource="gpu.intel.com/i915"} 0
intel_gpu_cdi_allocation_errors_total{resource="gpu.intel.com/monitoring"} 0
intel_gpu_cdi_allocation_errors_total{resource="gpu.intel.com/xe"} 0
`
	require.NoError(t, testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "intel_gpu_cdi_allocation_errors_total"))
	n, err := testutil.GatherAndCount(m.Registry(), "intel_gpu_cdi_devices")
	require.NoError(t, err)
	assert.Equal(t, 8, n, "three known resources and the new one, each healthy and unhealthy")
}

func TestTheRegistryHoldsTheRuntimeCollectorsAndNothingGlobal(t *testing.T) {
	m := metrics.New()
	families, err := m.Registry().Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	assert.Contains(t, names, "go_goroutines")
	assert.Contains(t, names, "process_start_time_seconds")
	// Two instances must not collide, as they would in the default registry.
	assert.NotPanics(t, func() { metrics.New() })
}

func TestAllocationObserverDoesNotAllocate(t *testing.T) {
	m := metrics.New()
	allocs := testing.AllocsPerRun(1000, func() {
		m.Allocation(deviceplugin.ResourceI915, nil)
		m.Allocation(deviceplugin.ResourceXe, errBoom)
	})
	assert.Zero(t, allocs, "the Allocate hot path must not allocate in the observer")
}

func BenchmarkAllocation(b *testing.B) {
	m := metrics.New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Allocation(deviceplugin.ResourceI915, nil)
		}
	})
}
