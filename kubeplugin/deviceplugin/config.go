// Package deviceplugin is the kubelet device plugin (v1beta1 gRPC) of
// intel-gpu-cdi: a subscriber of the node model that advertises the GPUs
// as gpu.intel.com/i915 and gpu.intel.com/xe, registers with the kubelet
// (again after every kubelet restart), and answers Allocate with the CDI
// names of the node's spec.
package deviceplugin

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dirwatch"
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

// Defaults and bounds.
const (
	DefaultKubeletSocketDir = "/var/lib/kubelet/device-plugins"
	// MaxSharedDevNum bounds SharedDevNum: each share is a device the
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

// Policies lists every policy, for help texts and completion.
var Policies = []Policy{PolicyNone, PolicyBalanced, PolicyPacked}

// ParsePolicy checks a policy name.
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

// AllStrategies lists every strategy, for help texts and completion.
var AllStrategies = []Strategy{StrategyCDICRI, StrategyCDIAnnotations, StrategyDeviceSpecs}

// Strategies is a set of device list strategies.
type Strategies struct{ CRI, Annotations, DeviceSpecs bool }

// ParseStrategies checks a comma-separated list of strategies.
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

// Config is what the device plugin needs. The caller fills it
// (DefaultConfig gives the defaults) and New checks it.
type Config struct {
	// KubeletSocketDir is the kubelet's device-plugin directory, which
	// holds kubelet.sock. It need not exist yet: the plugin waits for the
	// kubelet to create it, watching its parent; when the parent cannot be
	// read (a non-root plugin), the directory itself must exist.
	KubeletSocketDir string
	// SharedDevNum makes each GPU that many devices, so that many
	// containers can share it.
	SharedDevNum int
	Policy       Policy
	Strategies   Strategies
	// EnableMonitoring adds gpu.intel.com/monitoring: one device that
	// gets every healthy GPU.
	EnableMonitoring bool
	// Logger may be nil: nothing is logged.
	Logger *slog.Logger
	// Observer is told what the plugin does (metrics); may be nil.
	Observer Observer
	// Watcher, when set, is the directory watcher the plugin shares with
	// the rest of the process (see dirwatch); nil makes one of its own.
	Watcher *dirwatch.Watcher
}

// DefaultConfig returns a Config with every default set.
func DefaultConfig() Config {
	return Config{
		KubeletSocketDir: DefaultKubeletSocketDir,
		SharedDevNum:     1,
		Policy:           PolicyNone,
		Strategies:       Strategies{CRI: true},
	}
}

// Validate checks every field and returns a *kubeplugin.FieldError naming
// the first one that cannot be used.
func (c *Config) Validate() error {
	if c.KubeletSocketDir == "" {
		return kubeplugin.Invalid("KubeletSocketDir", "must not be empty")
	}
	// The kubelet's directory is absolute, and the registrar directory
	// defaults to the one beside it.
	if !filepath.IsAbs(c.KubeletSocketDir) {
		return kubeplugin.Invalid("KubeletSocketDir", "%q is not an absolute path", c.KubeletSocketDir)
	}
	if n := len(filepath.Clean(c.KubeletSocketDir)); n > MaxKubeletSocketDirLen {
		return kubeplugin.Invalid("KubeletSocketDir", "%s is %d bytes, too long: the plugin's socket paths in it must fit the %d bytes of a unix socket address, which leaves %d for the directory",
			c.KubeletSocketDir, n, kubeplugin.MaxSocketPathLen, MaxKubeletSocketDirLen)
	}
	if c.SharedDevNum < 1 || c.SharedDevNum > MaxSharedDevNum {
		return kubeplugin.Invalid("SharedDevNum", "%d is not between 1 and %d", c.SharedDevNum, MaxSharedDevNum)
	}
	if _, err := ParsePolicy(string(c.Policy)); err != nil {
		return kubeplugin.Invalid("Policy", "%v", err)
	}
	if c.Strategies == (Strategies{}) {
		return kubeplugin.Invalid("Strategies", "none set: want at least one of cdi-cri, cdi-annotations, device-specs")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// Observer is told what the plugin does. Every method must be cheap and
// safe for concurrent use; Allocate calls it on the hot path.
type Observer interface {
	// Devices reports, per resource, how many devices are healthy and unhealthy.
	Devices(resource string, healthy, unhealthy int)
	Allocation(resource string, err error)
	Registration(resource string, err error)
	KubeletRestart()
}

type nopObserver struct{}

func (nopObserver) Devices(string, int, int)   {}
func (nopObserver) Allocation(string, error)   {}
func (nopObserver) Registration(string, error) {}
func (nopObserver) KubeletRestart()            {}
