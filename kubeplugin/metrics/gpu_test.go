package metrics_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

const (
	igpu = "0000:00:02.0"
	xe   = "0000:03:00.0"
)

// telemetryNode is the Telemetry fixture; the xe GPU is wedged and the
// i915 one has hung twice.
func telemetryNode(t *testing.T) (*fakenode.Node, func() []metrics.GPU) {
	t.Helper()
	n := fakenode.NewT(t, fakenode.WithMode(fakenode.HostDevices))
	n.MustApply(t, fakenode.Telemetry)
	gpus := []metrics.GPU{
		{PCIAddress: igpu, Card: "card0", Health: &health.Status{PCIAddress: igpu, Card: "card0", Healthy: true,
			Counters: health.Counters{Hangs: 2}}},
		{PCIAddress: xe, Card: "card1", Health: &health.Status{PCIAddress: xe, Card: "card1", Reason: health.ReasonWedged,
			Message: "card1 is wedged", Counters: health.Counters{DriverRecoveries: 1}}},
	}
	return n, func() []metrics.GPU { return gpus }
}

const healthSeries = `
# HELP intel_gpu_cdi_gpu_healthy 1 when the GPU is healthy, 0 when not; reason says why not (wedged, survivability-mode, aer-fatal, gone, …).
# TYPE intel_gpu_cdi_gpu_healthy gauge
intel_gpu_cdi_gpu_healthy{card="card0",pci_address="0000:00:02.0",reason=""} 1
intel_gpu_cdi_gpu_healthy{card="card1",pci_address="0000:03:00.0",reason="wedged"} 0
# HELP intel_gpu_cdi_gpu_hangs_total GPU hangs seen since the plugin started: devcoredumps naming the GPU and i915 error events.
# TYPE intel_gpu_cdi_gpu_hangs_total counter
intel_gpu_cdi_gpu_hangs_total{card="card0",pci_address="0000:00:02.0"} 2
intel_gpu_cdi_gpu_hangs_total{card="card1",pci_address="0000:03:00.0"} 0
# HELP intel_gpu_cdi_gpu_driver_recoveries_total Times the driver found the GPU wedged and recovered it itself (WEDGED=none).
# TYPE intel_gpu_cdi_gpu_driver_recoveries_total counter
intel_gpu_cdi_gpu_driver_recoveries_total{card="card0",pci_address="0000:00:02.0"} 0
intel_gpu_cdi_gpu_driver_recoveries_total{card="card1",pci_address="0000:03:00.0"} 1
`

const pcieSeries = `
# HELP intel_gpu_cdi_gpu_pcie_errors_total PCIe errors the kernel counted for the GPU's function since it was enumerated (aer_dev_*), by severity: correctable, nonfatal, fatal.
# TYPE intel_gpu_cdi_gpu_pcie_errors_total counter
intel_gpu_cdi_gpu_pcie_errors_total{card="card0",pci_address="0000:00:02.0",severity="correctable"} 0
intel_gpu_cdi_gpu_pcie_errors_total{card="card0",pci_address="0000:00:02.0",severity="fatal"} 0
intel_gpu_cdi_gpu_pcie_errors_total{card="card0",pci_address="0000:00:02.0",severity="nonfatal"} 0
intel_gpu_cdi_gpu_pcie_errors_total{card="card1",pci_address="0000:03:00.0",severity="correctable"} 12
intel_gpu_cdi_gpu_pcie_errors_total{card="card1",pci_address="0000:03:00.0",severity="fatal"} 1
intel_gpu_cdi_gpu_pcie_errors_total{card="card1",pci_address="0000:03:00.0",severity="nonfatal"} 3
`

const sensorSeries = `
# HELP intel_gpu_cdi_gpu_temperature_celsius Temperature from the GPU's hwmon (temp*_input), by sensor label.
# TYPE intel_gpu_cdi_gpu_temperature_celsius gauge
intel_gpu_cdi_gpu_temperature_celsius{card="card1",pci_address="0000:03:00.0",sensor="pkg"} 45.5
intel_gpu_cdi_gpu_temperature_celsius{card="card1",pci_address="0000:03:00.0",sensor="vram"} 52
# HELP intel_gpu_cdi_gpu_energy_joules_total Energy used from the GPU's hwmon (energy*_input), by sensor label; rate() of it is the power.
# TYPE intel_gpu_cdi_gpu_energy_joules_total counter
intel_gpu_cdi_gpu_energy_joules_total{card="card1",pci_address="0000:03:00.0",sensor="card"} 123.456789
intel_gpu_cdi_gpu_energy_joules_total{card="card1",pci_address="0000:03:00.0",sensor="pkg"} 100
`

const frequencySeries = `
# HELP intel_gpu_cdi_gpu_frequency_current_hertz GT frequency requested now (i915 rps_cur_freq_mhz / gt_cur_freq_mhz, xe cur_freq).
# TYPE intel_gpu_cdi_gpu_frequency_current_hertz gauge
intel_gpu_cdi_gpu_frequency_current_hertz{card="card0",gt="gt0",pci_address="0000:00:02.0"} 3e+08
intel_gpu_cdi_gpu_frequency_current_hertz{card="card1",gt="gt0",pci_address="0000:03:00.0"} 1.2e+09
intel_gpu_cdi_gpu_frequency_current_hertz{card="card1",gt="gt1",pci_address="0000:03:00.0"} 8e+08
# HELP intel_gpu_cdi_gpu_frequency_max_hertz Highest GT frequency allowed (i915 rps_max_freq_mhz / gt_max_freq_mhz, xe max_freq).
# TYPE intel_gpu_cdi_gpu_frequency_max_hertz gauge
intel_gpu_cdi_gpu_frequency_max_hertz{card="card0",gt="gt0",pci_address="0000:00:02.0"} 1.3e+09
intel_gpu_cdi_gpu_frequency_max_hertz{card="card1",gt="gt0",pci_address="0000:03:00.0"} 2.4e+09
intel_gpu_cdi_gpu_frequency_max_hertz{card="card1",gt="gt1",pci_address="0000:03:00.0"} 1.6e+09
# HELP intel_gpu_cdi_gpu_frequency_actual_hertz GT frequency the hardware runs at (i915 rps_act_freq_mhz / gt_act_freq_mhz, xe act_freq); 0 while the GT sleeps.
# TYPE intel_gpu_cdi_gpu_frequency_actual_hertz gauge
intel_gpu_cdi_gpu_frequency_actual_hertz{card="card0",gt="gt0",pci_address="0000:00:02.0"} 3e+08
intel_gpu_cdi_gpu_frequency_actual_hertz{card="card1",gt="gt0",pci_address="0000:03:00.0"} 1.15e+09
intel_gpu_cdi_gpu_frequency_actual_hertz{card="card1",gt="gt1",pci_address="0000:03:00.0"} 0
`

var gpuMetricNames = []string{
	"intel_gpu_cdi_gpu_healthy", "intel_gpu_cdi_gpu_hangs_total", "intel_gpu_cdi_gpu_driver_recoveries_total",
	"intel_gpu_cdi_gpu_pcie_errors_total", "intel_gpu_cdi_gpu_temperature_celsius", "intel_gpu_cdi_gpu_power_watts",
	"intel_gpu_cdi_gpu_energy_joules_total", "intel_gpu_cdi_gpu_frequency_current_hertz",
	"intel_gpu_cdi_gpu_frequency_max_hertz", "intel_gpu_cdi_gpu_frequency_actual_hertz",
}

func TestGPUCollectorReadsSysfsAtScrape(t *testing.T) {
	n, gpus := telemetryNode(t)
	c := metrics.NewGPUCollector(n.Sys, gpus)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	// What changes between scrapes is read anew.
	if err := n.SetAER(xe, fakenode.AER{Correctable: 12, Nonfatal: 3, Fatal: 1}); err != nil {
		t.Fatal(err)
	}
	want := healthSeries + pcieSeries + sensorSeries + frequencySeries
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), gpuMetricNames...); err != nil {
		t.Error(err)
	}
}

func TestGPUCollectorLeavesOutWhatIsNotThere(t *testing.T) {
	n, gpus := telemetryNode(t)
	c := metrics.NewGPUCollector(n.Sys, gpus)
	xeDir := health.FunctionDir(n.Sys, xe)

	t.Run("a runtime-suspended GPU is not woken for sensors and frequencies", func(t *testing.T) {
		if err := n.SetRuntimeStatus(xe, "suspended"); err != nil {
			t.Fatal(err)
		}
		defer n.SetRuntimeStatus(xe, "active")
		got := gather(t, c)
		for _, name := range []string{"temperature_celsius", "energy_joules_total", "frequency_current_hertz"} {
			if strings.Contains(got, "intel_gpu_cdi_gpu_"+name+`{card="card1"`) {
				t.Errorf("%s reported for the suspended GPU:\n%s", name, got)
			}
		}
		for _, line := range []string{`intel_gpu_cdi_gpu_healthy{card="card1",pci_address="0000:03:00.0",reason="wedged"} 0`,
			`intel_gpu_cdi_gpu_pcie_errors_total{card="card1",pci_address="0000:03:00.0",severity="fatal"} 0`} {
			if !strings.Contains(got, line) {
				t.Errorf("missing %s", line)
			}
		}
	})

	t.Run("missing and malformed files mean no series, not zero", func(t *testing.T) {
		for _, f := range []string{"aer_dev_fatal", "tile0/gt1/freq0/cur_freq"} {
			if err := os.Remove(filepath.Join(xeDir, f)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(xeDir, "hwmon", "hwmon0", "temp2_input"), []byte("N/A\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		got := gather(t, c)
		for _, absent := range []string{
			`pcie_errors_total{card="card1"`,
			`frequency_current_hertz{card="card1",gt="gt1"`,
			`sensor="vram"`,
			`power_watts`,
		} {
			if strings.Contains(got, absent) {
				t.Errorf("series %s reported:\n%s", absent, got)
			}
		}
		for _, present := range []string{`frequency_max_hertz{card="card1",gt="gt1",pci_address="0000:03:00.0"} 1.6e+09`,
			`temperature_celsius{card="card1",pci_address="0000:03:00.0",sensor="pkg"} 45.5`} {
			if !strings.Contains(got, present) {
				t.Errorf("missing %s", present)
			}
		}
	})

	t.Run("power where the hwmon has it, unlabelled channels by name", func(t *testing.T) {
		if _, err := n.AddHwmon(igpu, fakenode.Hwmon{Name: "i915", Powers: []fakenode.Sensor{{Value: 15_250_000}}}); err != nil {
			t.Fatal(err)
		}
		if got := gather(t, c); !strings.Contains(got, `intel_gpu_cdi_gpu_power_watts{card="card0",pci_address="0000:00:02.0",sensor="power1"} 15.25`) {
			t.Errorf("no power series for card0:\n%s", got)
		}
	})

	t.Run("a GPU without health leaves out the health series", func(t *testing.T) {
		c := metrics.NewGPUCollector(n.Sys, func() []metrics.GPU { return []metrics.GPU{{PCIAddress: igpu, Card: "card0"}} })
		got := gather(t, c)
		if strings.Contains(got, "healthy") || strings.Contains(got, "hangs_total") {
			t.Errorf("health series without a status:\n%s", got)
		}
		if !strings.Contains(got, "frequency_max_hertz") {
			t.Errorf("sysfs series missing:\n%s", got)
		}
	})
}

func TestGPUCollectorReportsTheMonitorsOwnCounters(t *testing.T) {
	stats := health.Stats{Listener: health.ListenerUnavailable, Received: 10, Malformed: 2, Foreign: 1, Overflows: 4, Dropped: 3}
	c := metrics.NewGPUCollector(t.TempDir(), func() []metrics.GPU { return nil },
		metrics.WithHealthStats(func() health.Stats { return stats }))
	const want = `
# HELP intel_gpu_cdi_health_uevent_listener_up 1 while the health monitor hears kernel uevents; 0 when it cannot (no netlink access): wedged GPUs then go unnoticed.
# TYPE intel_gpu_cdi_health_uevent_listener_up gauge
intel_gpu_cdi_health_uevent_listener_up 0
# HELP intel_gpu_cdi_health_uevents_total Kernel uevent messages read, by result: parsed, malformed, foreign (not sent by the kernel).
# TYPE intel_gpu_cdi_health_uevents_total counter
intel_gpu_cdi_health_uevents_total{result="foreign"} 1
intel_gpu_cdi_health_uevents_total{result="malformed"} 2
intel_gpu_cdi_health_uevents_total{result="parsed"} 7
# HELP intel_gpu_cdi_health_uevent_overflows_total Times the kernel dropped uevents because the socket buffer was full (every GPU was re-checked).
# TYPE intel_gpu_cdi_health_uevent_overflows_total counter
intel_gpu_cdi_health_uevent_overflows_total 4
# HELP intel_gpu_cdi_health_uevents_dropped_total Uevents about a GPU that could not be tracked (gone before they were handled).
# TYPE intel_gpu_cdi_health_uevents_dropped_total counter
intel_gpu_cdi_health_uevents_dropped_total 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	stats.Listener = health.ListenerListening
	if got := testutil.ToFloat64(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		mc := make(chan prometheus.Metric, 16)
		c.Collect(mc)
		close(mc)
		for m := range mc {
			if strings.Contains(m.Desc().String(), "listener_up") {
				ch <- m
			}
		}
	})); got != 1 {
		t.Errorf("listener_up = %v while listening, want 1", got)
	}
}

// gather scrapes c alone and returns the text exposition.
func gather(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
