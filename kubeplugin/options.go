// Package kubeplugin is the kubelet device plugin of intel-gpu-cdi: it
// advertises the node's Intel GPUs as gpu.intel.com/i915 and
// gpu.intel.com/xe, keeps their CDI spec on disk current, and answers
// Allocate with CDI device names.
package kubeplugin

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

// Resource names the plugin advertises.
const (
	ResourceDomain     = "gpu.intel.com"
	ResourceI915       = ResourceDomain + "/i915"
	ResourceXe         = ResourceDomain + "/xe"
	ResourceMonitoring = ResourceDomain + "/monitoring"
)

// MonitoringDeviceID is the one device of the monitoring resource.
const MonitoringDeviceID = "monitoring"

// Defaults.
const (
	DefaultKubeletSocketDir = "/var/lib/kubelet/device-plugins"
	DefaultCDISpecDir       = "/var/run/cdi"
	DefaultResyncPeriod     = 60 * time.Second
	// MaxSharedDevNum bounds --shared-dev-num: each share is a device the
	// kubelet tracks, and no GPU is sensibly split further.
	MaxSharedDevNum = 1024
)

// Policy is how GetPreferredAllocation picks among candidate devices.
type Policy string

// Allocation policies.
const (
	// PolicyNone spreads a request over distinct GPUs first.
	PolicyNone Policy = "none"
	// PolicyBalanced takes from the GPU with the most free shares.
	PolicyBalanced Policy = "balanced"
	// PolicyPacked fills one GPU before the next, in PCI order.
	PolicyPacked Policy = "packed"
)

// ParsePolicy checks an --allocation-policy value.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case PolicyNone, PolicyBalanced, PolicyPacked:
		return p, nil
	}
	return "", fmt.Errorf("invalid allocation policy %q: want none, balanced or packed", s)
}

// Strategy is one way Allocate tells the runtime which devices to inject.
type Strategy string

// Device list strategies.
const (
	// StrategyCDICRI fills ContainerAllocateResponse.CDIDevices (Kubernetes ≥ 1.28).
	StrategyCDICRI Strategy = "cdi-cri"
	// StrategyCDIAnnotations sets cdi.k8s.io/ annotations (containerd 1.7.0/1.7.1, CRI-O).
	StrategyCDIAnnotations Strategy = "cdi-annotations"
	// StrategyDeviceSpecs fills legacy DeviceSpecs and mounts, for runtimes without CDI.
	StrategyDeviceSpecs Strategy = "device-specs"
)

// Strategies is a set of device list strategies.
type Strategies struct{ CRI, Annotations, DeviceSpecs bool }

// ParseStrategies checks a comma-separated --device-list-strategy value.
func ParseStrategies(s string) (Strategies, error) {
	var out Strategies
	for _, part := range strings.Split(s, ",") {
		switch Strategy(strings.TrimSpace(part)) {
		case StrategyCDICRI:
			out.CRI = true
		case StrategyCDIAnnotations:
			out.Annotations = true
		case StrategyDeviceSpecs:
			out.DeviceSpecs = true
		default:
			return Strategies{}, fmt.Errorf("invalid device list strategy %q: want a comma list of cdi-cri, cdi-annotations, device-specs", part)
		}
	}
	return out, nil
}

// Config is what the plugin needs. Build it with the options below; New
// checks it.
type Config struct {
	Scanner          *discovery.Scanner
	Builder          *spec.Builder
	KubeletSocketDir string
	CDISpecDir       string
	SharedDevNum     int
	Policy           Policy
	Strategies       Strategies
	EnableMonitoring bool
	// AllowIDs and DenyIDs filter GPUs by PCI device ID; at most one is set.
	AllowIDs     []string
	DenyIDs      []string
	ResyncPeriod time.Duration
	// Debounce coalesces a burst of /dev/dri events into one rescan.
	Debounce time.Duration
	Logger   *slog.Logger
	// Observer is told about what the plugin does (metrics); may be nil.
	Observer Observer
	// OnDevices is called with the GPUs after every rescan that changed
	// them (NFD feature labels); may be nil. It must not block for long.
	OnDevices func([]discovery.Device)
}

// Option sets a Config field.
type Option func(*Config)

// WithScanner sets the discovery scanner (its roots say where sysfs and /dev are).
func WithScanner(s *discovery.Scanner) Option { return func(c *Config) { c.Scanner = s } }

// WithBuilder sets the CDI spec builder (kind and by-path mode).
func WithBuilder(b *spec.Builder) Option { return func(c *Config) { c.Builder = b } }

// WithKubeletSocketDir sets the kubelet's device-plugin directory.
func WithKubeletSocketDir(d string) Option { return func(c *Config) { c.KubeletSocketDir = d } }

// WithCDISpecDir sets where the spec is written.
func WithCDISpecDir(d string) Option { return func(c *Config) { c.CDISpecDir = d } }

// WithSharedDevNum makes each GPU n devices, so n containers can share it.
func WithSharedDevNum(n int) Option { return func(c *Config) { c.SharedDevNum = n } }

// WithPolicy sets the preferred-allocation policy.
func WithPolicy(p Policy) Option { return func(c *Config) { c.Policy = p } }

// WithStrategies sets how Allocate names the devices.
func WithStrategies(s Strategies) Option { return func(c *Config) { c.Strategies = s } }

// WithMonitoring adds the gpu.intel.com/monitoring resource.
func WithMonitoring(on bool) Option { return func(c *Config) { c.EnableMonitoring = on } }

// WithAllowIDs hands out only GPUs with these PCI device IDs.
func WithAllowIDs(ids []string) Option { return func(c *Config) { c.AllowIDs = ids } }

// WithDenyIDs never hands out GPUs with these PCI device IDs.
func WithDenyIDs(ids []string) Option { return func(c *Config) { c.DenyIDs = ids } }

// WithResyncPeriod sets the safety-net rescan period; 0 turns it off.
func WithResyncPeriod(d time.Duration) Option { return func(c *Config) { c.ResyncPeriod = d } }

// WithDebounce sets how long a burst of device events is collected.
func WithDebounce(d time.Duration) Option { return func(c *Config) { c.Debounce = d } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *Config) { c.Logger = l } }

// WithObserver sets the observer that metrics hang on.
func WithObserver(o Observer) Option { return func(c *Config) { c.Observer = o } }

// WithOnDevices sets a callback for the device set after each change.
func WithOnDevices(f func([]discovery.Device)) Option { return func(c *Config) { c.OnDevices = f } }

func (c *Config) check() error {
	if c.Scanner == nil {
		c.Scanner = discovery.New()
	}
	if c.Builder == nil {
		b, err := spec.NewBuilder()
		if err != nil {
			return err
		}
		c.Builder = b
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.KubeletSocketDir == "" {
		return fmt.Errorf("kubelet socket directory is empty")
	}
	if c.CDISpecDir == "" {
		return fmt.Errorf("CDI spec directory is empty")
	}
	if c.SharedDevNum < 1 || c.SharedDevNum > MaxSharedDevNum {
		return fmt.Errorf("shared-dev-num %d: want 1 to %d", c.SharedDevNum, MaxSharedDevNum)
	}
	if _, err := ParsePolicy(string(c.Policy)); err != nil {
		return err
	}
	if c.Strategies == (Strategies{}) {
		return fmt.Errorf("no device list strategy")
	}
	if len(c.AllowIDs) > 0 && len(c.DenyIDs) > 0 {
		return fmt.Errorf("allow-ids and deny-ids are mutually exclusive")
	}
	for _, list := range [][]string{c.AllowIDs, c.DenyIDs} {
		for i, id := range list {
			n, err := discovery.NormalizeDeviceID(id)
			if err != nil {
				return err
			}
			list[i] = n
		}
	}
	if c.ResyncPeriod < 0 {
		return fmt.Errorf("resync period %s is negative", c.ResyncPeriod)
	}
	return nil
}

// Observer is told what the plugin does. Every method must be cheap and
// safe for concurrent use; Allocate calls it on the hot path.
type Observer interface {
	// Devices reports, per resource, how many devices are healthy and unhealthy.
	Devices(resource string, healthy, unhealthy int)
	Allocation(resource string, err error)
	Registration(resource string, err error)
	KubeletRestart()
	SpecWrite(err error)
	Rescan(d time.Duration, err error)
}

type nopObserver struct{}

func (nopObserver) Devices(string, int, int)    {}
func (nopObserver) Allocation(string, error)    {}
func (nopObserver) Registration(string, error)  {}
func (nopObserver) KubeletRestart()             {}
func (nopObserver) SpecWrite(error)             {}
func (nopObserver) Rescan(time.Duration, error) {}
