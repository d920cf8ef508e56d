// Package node is the node model of the kubelet plugins: it reads the
// node's Intel GPUs, keeps their CDI spec on disk, watches /dev/dri for
// GPUs coming and going, and publishes each new state as an immutable
// Snapshot to its subscribers (the device plugin, the DRA driver, the NFD
// feature file). It knows no kubelet protocol.
package node

import (
	"log/slog"
	"slices"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dirwatch"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// Defaults.
const (
	DefaultCDISpecDir   = "/var/run/cdi"
	DefaultResyncPeriod = 60 * time.Second
	// DefaultDebounce is how long the node waits for the rest of a burst
	// of /dev/dri events before it rescans.
	DefaultDebounce = 5 * time.Millisecond
	// MinResyncPeriod is the shortest resync period other than 0: a rescan
	// reads every GPU's files and rebuilds the spec, and a period of
	// milliseconds would keep a core busy on a node where nothing changes.
	MinResyncPeriod = time.Second
	// MaxDebounce bounds Debounce: a longer one delays every hotplug.
	MaxDebounce = time.Second
)

// Config is what a Node needs. The caller fills it (DefaultConfig gives
// the defaults) and New checks it.
type Config struct {
	// Scanner reads the node; its roots say where sysfs and /dev are.
	Scanner *discovery.Scanner
	// Builder builds the spec: its kind and by-path mode.
	Builder *spec.Builder
	// CDISpecDir is where the spec is kept; created 0755 when missing.
	CDISpecDir string
	// AllowIDs and DenyIDs filter GPUs by PCI device ID ("0x56a0" or
	// "56A0"); at most one is set.
	AllowIDs []string
	DenyIDs  []string
	// ResyncPeriod is the safety-net rescan period; 0 turns it off.
	ResyncPeriod time.Duration
	// Debounce coalesces a burst of /dev/dri events into one rescan.
	Debounce time.Duration
	// Logger may be nil: nothing is logged.
	Logger *slog.Logger
	// Observer is told what the node does (metrics); may be nil.
	Observer Observer
	// Health, when set, says whether each GPU whose nodes are ready is
	// also well (not wedged, no fatal PCIe error, still answering), and
	// tells the node at once when that may have changed. May be nil: a GPU
	// is then healthy when its nodes are ready.
	Health HealthChecker
	// Watcher, when set, is the directory watcher the node shares with
	// the rest of the process (see dirwatch); nil makes one of its own.
	Watcher *dirwatch.Watcher
}

// HealthChecker is the node's source of GPU health (health.Monitor).
type HealthChecker interface {
	// Check returns the health of each device, in the order of devs.
	Check(devs []discovery.Device) []health.Status
	// Changed is signalled when a GPU's health may have changed.
	Changed() <-chan struct{}
}

// DefaultConfig returns a Config with every default set.
func DefaultConfig() Config {
	return Config{
		CDISpecDir:   DefaultCDISpecDir,
		ResyncPeriod: DefaultResyncPeriod,
		Debounce:     DefaultDebounce,
	}
}

// Validate checks every field and returns a *kubeplugin.FieldError naming
// the first one that cannot be used.
func (c *Config) Validate() error {
	if c.Scanner == nil {
		return kubeplugin.Invalid("Scanner", "is not set")
	}
	if c.Builder == nil {
		return kubeplugin.Invalid("Builder", "is not set")
	}
	if c.CDISpecDir == "" {
		return kubeplugin.Invalid("CDISpecDir", "must not be empty")
	}
	if len(c.AllowIDs) > 0 && len(c.DenyIDs) > 0 {
		return kubeplugin.Conflict("AllowIDs", "DenyIDs", "are mutually exclusive: set at most one")
	}
	for _, f := range []struct {
		name string
		ids  []string
	}{{"AllowIDs", c.AllowIDs}, {"DenyIDs", c.DenyIDs}} {
		for _, id := range f.ids {
			if _, err := discovery.NormalizeDeviceID(id); err != nil {
				return kubeplugin.Invalid(f.name, "%v", err)
			}
		}
	}
	if c.ResyncPeriod < 0 {
		return kubeplugin.Invalid("ResyncPeriod", "%s is negative", c.ResyncPeriod)
	}
	if c.ResyncPeriod > 0 && c.ResyncPeriod < MinResyncPeriod {
		return kubeplugin.Invalid("ResyncPeriod", "%s is below %s (0 turns the resync off)", c.ResyncPeriod, MinResyncPeriod)
	}
	if c.Debounce < 0 || c.Debounce > MaxDebounce {
		return kubeplugin.Invalid("Debounce", "%s is not between 0 and %s", c.Debounce, MaxDebounce)
	}
	return nil
}

// normalized returns a copy with the device IDs in the form sysfs uses
// and the optional fields filled. It is called on a valid Config.
func (c Config) normalized() Config {
	norm := func(ids []string) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i], _ = discovery.NormalizeDeviceID(id)
		}
		return out
	}
	c.AllowIDs, c.DenyIDs = norm(c.AllowIDs), norm(c.DenyIDs)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// wanted applies AllowIDs and DenyIDs.
func (c *Config) wanted(d *discovery.Device) bool {
	if len(c.AllowIDs) > 0 {
		return slices.Contains(c.AllowIDs, d.DeviceID)
	}
	return !slices.Contains(c.DenyIDs, d.DeviceID)
}

// Observer is told what the node does. Its methods must be cheap and safe
// for concurrent use.
type Observer interface {
	SpecWrite(err error)
	Rescan(d time.Duration, err error)
}

type nopObserver struct{}

func (nopObserver) SpecWrite(error)             {}
func (nopObserver) Rescan(time.Duration, error) {}
