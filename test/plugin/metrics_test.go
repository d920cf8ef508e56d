package plugin_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/nfd"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// serveMetrics serves m on a port the system picks and stops the server
// when the test ends. It returns the /metrics URL.
func serveMetrics(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	srv, err := metrics.Listen("127.0.0.1:0", m.Handler())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "metrics server shutdown")
		case <-time.After(waitFor):
			t.Error("metrics server did not stop")
		}
	})
	return "http://" + srv.Addr().String() + metrics.Path
}

// scrape fetches and parses a /metrics page, as Prometheus would.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	// No keep-alive: an idle connection would outlive the test (goleak).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitFor}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return families
}

// sample is one series: its name (with _count for a histogram's count) and
// its labels as sorted "k=v" pairs joined by commas.
type sample struct{ name, labels string }

func series(name string, labels ...string) sample {
	slices.Sort(labels)
	return sample{name, strings.Join(labels, ",")}
}

func (s sample) String() string { return s.name + "{" + s.labels + "}" }

// value finds a series in parsed families; ok is false when it is absent.
func value(families map[string]*dto.MetricFamily, s sample) (v float64, ok bool) {
	name, histCount := s.name, false
	if base, found := strings.CutSuffix(name, "_count"); found && families[name] == nil {
		name, histCount = base, true
	}
	f := families[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		var have []string
		for _, l := range m.GetLabel() {
			have = append(have, l.GetName()+"="+l.GetValue())
		}
		slices.Sort(have)
		if strings.Join(have, ",") != s.labels {
			continue
		}
		switch {
		case histCount:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// check compares scraped families with what a test wants and describes
// each difference.
type check func(map[string]*dto.MetricFamily) []string

// exactly wants each series at its value.
func exactly(want map[sample]float64) check {
	return func(families map[string]*dto.MetricFamily) []string {
		var diff []string
		for s, w := range want {
			got, ok := value(families, s)
			switch {
			case !ok:
				diff = append(diff, fmt.Sprintf("%s missing, want %v", s, w))
			case got != w:
				diff = append(diff, fmt.Sprintf("%s = %v, want %v", s, got, w))
			}
		}
		return diff
	}
}

// registeredOK wants n successful registrations of a resource. How many
// attempts that took is not fixed: an attempt can hit the kubelet's new
// socket between its bind and its listen and be refused, then retried.
func registeredOK(resource string, n float64) check {
	return func(families map[string]*dto.MetricFamily) []string {
		total, _ := value(families, series("intel_gpu_cdi_registrations_total", "resource="+resource))
		failed, _ := value(families, series("intel_gpu_cdi_registration_errors_total", "resource="+resource))
		if total-failed != n {
			return []string{fmt.Sprintf("%s: %v registrations, %v failed; want %v that succeeded", resource, total, failed, n)}
		}
		return nil
	}
}

// assertMetrics scrapes until every check passes (observer calls may trail
// what the kubelet sees by a moment) and reports the differences if they
// never all do.
func assertMetrics(t *testing.T, url string, checks ...check) {
	t.Helper()
	var diff []string
	deadline := time.Now().Add(waitFor)
	for {
		families := scrape(t, url)
		diff = nil
		for _, c := range checks {
			diff = append(diff, c(families)...)
		}
		if len(diff) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	slices.Sort(diff)
	assert.Empty(t, diff)
}

const (
	i915 = "resource=" + deviceplugin.ResourceI915
	xe   = "resource=" + deviceplugin.ResourceXe
	mon  = "resource=" + deviceplugin.ResourceMonitoring
)

func TestMetricsCountAllocationsRegistrationsRestartsAndRescans(t *testing.T) {
	m := metrics.New()
	r := startRig(t, demo, plugintest.WithObserver(m))
	url := serveMetrics(t, m)
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	r.registered(deviceplugin.ResourceXe, 1)
	r.nextList(r.watch(c), "both i915 GPUs", func(l []*pluginapi.Device) bool { return len(l) == 2 })

	_, err := allocate(r.ctx(), c, []string{"0000:03:00.0"})
	require.NoError(t, err)
	_, err = allocate(r.ctx(), c, []string{"0000:99:00.0"})
	require.Error(t, err, "an unknown ID fails")

	// The kubelet may accept a registration a moment before the plugin
	// hears back: restart only once the plugin knows of both.
	assertMetrics(t, url, registeredOK(deviceplugin.ResourceI915, 1), registeredOK(deviceplugin.ResourceXe, 1))
	require.NoError(t, r.kubelet.Restart())
	r.registered(deviceplugin.ResourceI915, 2)
	r.registered(deviceplugin.ResourceXe, 2)

	assertMetrics(t, url, registeredOK(deviceplugin.ResourceI915, 2), registeredOK(deviceplugin.ResourceXe, 2), exactly(map[sample]float64{
		series("intel_gpu_cdi_devices", i915, "health=healthy"):   2,
		series("intel_gpu_cdi_devices", i915, "health=unhealthy"): 0,
		series("intel_gpu_cdi_devices", xe, "health=healthy"):     1,
		series("intel_gpu_cdi_devices", xe, "health=unhealthy"):   0,
		series("intel_gpu_cdi_devices", mon, "health=healthy"):    0,

		series("intel_gpu_cdi_allocations_total", i915):       2,
		series("intel_gpu_cdi_allocation_errors_total", i915): 1,
		series("intel_gpu_cdi_allocations_total", xe):         0,
		series("intel_gpu_cdi_allocation_errors_total", xe):   0,

		series("intel_gpu_cdi_kubelet_restarts_total"): 1,

		// One rescan at start; it wrote the spec once (the trim after it
		// found the same bytes on disk).
		series("intel_gpu_cdi_rescans_total"):                 1,
		series("intel_gpu_cdi_rescan_errors_total"):           0,
		series("intel_gpu_cdi_rescan_duration_seconds_count"): 1,
		series("intel_gpu_cdi_spec_writes_total"):             1,
		series("intel_gpu_cdi_spec_write_errors_total"):       0,
	}))

	families := scrape(t, url)
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		assert.Contains(t, families, name, "the runtime collectors are registered")
	}
	h := families["intel_gpu_cdi_rescan_duration_seconds"].GetMetric()[0].GetHistogram()
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	assert.Equal(t, append(slices.Clone(metrics.RescanBuckets), math.Inf(1)), bounds)
}

func TestMetricsFollowHotplugAndHealth(t *testing.T) {
	m := metrics.New()
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU}, plugintest.WithObserver(m))
	url := serveMetrics(t, m)
	r.registered(deviceplugin.ResourceI915, 1)
	devices := func(healthy, unhealthy float64) check {
		return exactly(map[sample]float64{
			series("intel_gpu_cdi_devices", i915, "health=healthy"):   healthy,
			series("intel_gpu_cdi_devices", i915, "health=unhealthy"): unhealthy,
		})
	}
	assertMetrics(t, url, devices(1, 0))

	r.node.MustAddGPU(t, fakenode.GPU{Card: 1, PCI: "0000:03:00.0", Device: "0x56a0"})
	assertMetrics(t, url, devices(2, 0))
	require.NoError(t, r.node.RemoveDevNodes("0000:03:00.0"))
	assertMetrics(t, url, devices(1, 1))
	require.NoError(t, r.node.AddDevNodes("0000:03:00.0"))
	assertMetrics(t, url, devices(2, 0))
	require.NoError(t, r.node.RemoveGPU("0000:03:00.0"))
	assertMetrics(t, url, devices(1, 0), exactly(map[sample]float64{
		series("intel_gpu_cdi_rescan_errors_total"):     0,
		series("intel_gpu_cdi_spec_write_errors_total"): 0,
	}))
}

// freePort returns a loopback address no one listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// runCLI runs `intel-gpu-cdi plugin args…` in process until the test
// cancels it, and returns its exit error channel and the log.
func runCLI(t *testing.T, ctx context.Context, args ...string) (<-chan error, *syncBuffer) {
	t.Helper()
	a := app.New()
	log := &syncBuffer{}
	a.Writer, a.ErrWriter = log, log
	done := make(chan error, 1)
	go func() { done <- a.RunContext(ctx, append([]string{"intel-gpu-cdi", "plugin"}, args...)) }()
	return done, log
}

// stopCLI cancels a plugin started by runCLI and checks it returned
// cleanly.
func stopCLI(t *testing.T, cancel context.CancelFunc, done <-chan error, log fmt.Stringer) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "log:\n%s", log)
	case <-time.After(waitFor):
		t.Fatal("the plugin did not stop")
	}
}

func TestTheCLIServesMetricsAndKeepsNFDLabelsUntilItStops(t *testing.T) {
	node := fakenode.NewT(t)
	node.MustApply(t, fakenode.Demo)
	sockDir := testenv.SocketDir(t)
	k, err := fakekubelet.Start(sockDir)
	require.NoError(t, err)
	t.Cleanup(k.Stop)
	addr := freePort(t)
	features := filepath.Join(t.TempDir(), "features.d")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, log := runCLI(t, ctx,
		"--sysfs-root", node.Sys, "--dev-root", node.Dev,
		"--kubelet-socket-dir", sockDir, "--cdi-spec-dir", filepath.Join(t.TempDir(), "cdi"),
		"--metrics-address", addr, "--nfd-features-dir", features)
	rctx, rcancel := context.WithTimeout(ctx, waitFor)
	defer rcancel()
	_, err = k.WaitRegistration(rctx, deviceplugin.ResourceXe, 1)
	require.NoError(t, err, "log:\n%s", log)

	assertMetrics(t, "http://"+addr+metrics.Path, registeredOK(deviceplugin.ResourceXe, 1), exactly(map[sample]float64{
		series("intel_gpu_cdi_devices", i915, "health=healthy"): 2,
		series("intel_gpu_cdi_devices", xe, "health=healthy"):   1,
	}))
	labelFile := filepath.Join(features, nfd.FileName)
	waitForFile(t, labelFile, demoLabels)

	stopCLI(t, cancel, done, log)
	assert.NoFileExists(t, labelFile, "the labels go with the plugin")
	l, err := net.Listen("tcp", addr)
	require.NoError(t, err, "the metrics port is free once the plugin returned")
	l.Close()
	assert.Contains(t, log.String(), "serving metrics")
}

func TestABadMetricsAddressStopsStartUpNamingTheFlag(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()

	tests := []struct {
		name string
		args []string
		env  string
	}{
		{"an address without a port", []string{"--metrics-address", "localhost"}, ""},
		{"a port out of range", []string{"--metrics-address", ":70000"}, ""},
		{"an address in use", []string{"--metrics-address", taken.Addr().String()}, ""},
		{"a bad address from the environment", nil, "nonsense"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("INTEL_GPU_CDI_METRICS_ADDRESS", tc.env)
			}
			args := append([]string{"--kubelet-socket-dir", testenv.SocketDir(t), "--cdi-spec-dir", t.TempDir()}, tc.args...)
			done, log := runCLI(t, context.Background(), args...)
			select {
			case err := <-done:
				require.Error(t, err, "log:\n%s", log)
				assert.Contains(t, err.Error(), "--metrics-address")
			case <-time.After(waitFor):
				t.Fatal("start-up did not fail")
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe to log into from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
