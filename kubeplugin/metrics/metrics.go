// Package metrics exposes what the node and the device plugin do as
// Prometheus metrics: it implements both Observers on a registry of its own
// and serves that registry over HTTP.
//
// Every counter named *_total counts attempts, failed ones included; the
// matching *_errors_total counts the failed ones alone, so the success rate
// is 1 - errors/total.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// Namespace starts every metric name.
const Namespace = "intel_gpu_cdi"

// Health label values of the devices gauge.
const (
	Healthy   = "healthy"
	Unhealthy = "unhealthy"
)

// RescanBuckets are the rescan duration buckets, in seconds: a scan of a
// few GPUs takes a fraction of a millisecond, a scan of hundreds with a
// spec write on a slow disk approaches a second.
var RescanBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1,
}

// knownResources get their label children resolved up front, so the
// Observer methods on the Allocate path do no map lookup under a lock and
// every series reads 0 before anything happens.
var knownResources = []string{deviceplugin.ResourceI915, deviceplugin.ResourceXe, deviceplugin.ResourceMonitoring}

// Metrics is a kubeplugin.Observer that records into its own registry.
// It is safe for concurrent use.
type Metrics struct {
	reg     *prometheus.Registry
	handler *handler

	devices          *prometheus.GaugeVec
	allocations      *prometheus.CounterVec
	allocationErrors *prometheus.CounterVec
	registrations    *prometheus.CounterVec
	registrationErrs *prometheus.CounterVec
	kubeletRestarts  prometheus.Counter
	specWrites       prometheus.Counter
	specWriteErrors  prometheus.Counter
	rescans          prometheus.Counter
	rescanErrors     prometheus.Counter
	rescanDuration   prometheus.Histogram
	byResource       map[string]*resourceMetrics
}

// resourceMetrics are the pre-resolved children of one resource. The map
// holding them is filled in New and only read afterwards.
type resourceMetrics struct {
	healthy, unhealthy       prometheus.Gauge
	allocations, allocErrors prometheus.Counter
	registrations, regErrors prometheus.Counter
}

var (
	_ node.Observer         = (*Metrics)(nil)
	_ deviceplugin.Observer = (*Metrics)(nil)
)

// New returns metrics registered in a fresh registry that also holds the
// Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	byResource := []string{"resource"}
	m.devices = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "devices",
		Help: "Devices advertised to the kubelet, by resource and health (healthy or unhealthy). With --shared-dev-num each share is a device.",
	}, []string{"resource", "health"})
	m.allocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "allocations_total",
		Help: "Allocate calls answered, failed ones included, by resource.",
	}, byResource)
	m.allocationErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "allocation_errors_total",
		Help: "Allocate calls that failed, by resource.",
	}, byResource)
	m.registrations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "registrations_total",
		Help: "Registration attempts with the kubelet, failed ones included, by resource.",
	}, byResource)
	m.registrationErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "registration_errors_total",
		Help: "Registration attempts with the kubelet that failed, by resource.",
	}, byResource)
	m.kubeletRestarts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "kubelet_restarts_total",
		Help: "Kubelet restarts seen (kubelet.sock created again).",
	})
	m.specWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "spec_writes_total",
		Help: "CDI spec writes, failed ones included.",
	})
	m.specWriteErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "spec_write_errors_total",
		Help: "CDI spec writes that failed.",
	})
	m.rescans = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "rescans_total",
		Help: "Rescans of the node's GPUs, failed ones included.",
	})
	m.rescanErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "rescan_errors_total",
		Help: "Rescans that failed (scan or spec write).",
	})
	m.rescanDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "rescan_duration_seconds",
		Help:    "How long a rescan took, from reading sysfs to the kubelet lists and the spec on disk.",
		Buckets: RescanBuckets,
	})
	m.reg.MustRegister(
		m.devices, m.allocations, m.allocationErrors, m.registrations, m.registrationErrs,
		m.kubeletRestarts, m.specWrites, m.specWriteErrors, m.rescans, m.rescanErrors, m.rescanDuration,
	)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = newHandler(m.reg)
	m.byResource = make(map[string]*resourceMetrics, len(knownResources))
	for _, r := range knownResources {
		m.byResource[r] = m.resolve(r)
	}
	return m
}

func (m *Metrics) resolve(resource string) *resourceMetrics {
	return &resourceMetrics{
		healthy:       m.devices.WithLabelValues(resource, Healthy),
		unhealthy:     m.devices.WithLabelValues(resource, Unhealthy),
		allocations:   m.allocations.WithLabelValues(resource),
		allocErrors:   m.allocationErrors.WithLabelValues(resource),
		registrations: m.registrations.WithLabelValues(resource),
		regErrors:     m.registrationErrs.WithLabelValues(resource),
	}
}

// of returns the children of a resource. A resource the plugin did not
// advertise when this package was written is resolved on each call: slower,
// still correct.
func (m *Metrics) of(resource string) *resourceMetrics {
	if r, ok := m.byResource[resource]; ok {
		return r
	}
	return m.resolve(resource)
}

// Registry is the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Devices implements kubeplugin.Observer.
func (m *Metrics) Devices(resource string, healthy, unhealthy int) {
	r := m.of(resource)
	r.healthy.Set(float64(healthy))
	r.unhealthy.Set(float64(unhealthy))
}

// Allocation implements kubeplugin.Observer.
func (m *Metrics) Allocation(resource string, err error) {
	r := m.of(resource)
	r.allocations.Inc()
	if err != nil {
		r.allocErrors.Inc()
	}
}

// Registration implements kubeplugin.Observer.
func (m *Metrics) Registration(resource string, err error) {
	r := m.of(resource)
	r.registrations.Inc()
	if err != nil {
		r.regErrors.Inc()
	}
}

// KubeletRestart implements kubeplugin.Observer.
func (m *Metrics) KubeletRestart() { m.kubeletRestarts.Inc() }

// SpecWrite implements kubeplugin.Observer.
func (m *Metrics) SpecWrite(err error) {
	m.specWrites.Inc()
	if err != nil {
		m.specWriteErrors.Inc()
	}
}

// Rescan implements kubeplugin.Observer.
func (m *Metrics) Rescan(d time.Duration, err error) {
	m.rescans.Inc()
	if err != nil {
		m.rescanErrors.Inc()
	}
	m.rescanDuration.Observe(d.Seconds())
}
