// Package dra is the Dynamic Resource Allocation (resource.k8s.io/v1)
// kubelet plugin of intel-gpu-cdi: a subscriber of the node model that
// publishes the node's GPUs in ResourceSlices, registers with the kubelet
// through plugins_registry, answers NodePrepareResources with the CDI names
// of the node's one spec, keeps the prepared claims in a checkpoint, and
// reports device health to the kubelet and as device taints.
package dra

import (
	"log/slog"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
)

// Defaults and bounds.
const (
	// DefaultDriverName is the name of Intel's own DRA driver for GPUs, so
	// that DeviceClasses and claims written for it work unchanged.
	DefaultDriverName = conflict.DefaultDRADriverName
	// DefaultRegistrarDir is where the kubelet looks for registration
	// sockets.
	DefaultRegistrarDir = conflict.DefaultRegistrarDir
	// DefaultPluginsDir holds one data directory per kubelet plugin: ours is
	// <dir>/<driver name>, with the DRA socket and the checkpoint.
	DefaultPluginsDir = "/var/lib/kubelet/plugins"
	// MaxSharedDevNum bounds SharedDevNum, as for the device plugin.
	MaxSharedDevNum = 1024
	// DefaultHealthResend is how often the health of every device is sent
	// to the kubelet again when nothing changed: the kubelet reports a
	// device whose health was not refreshed for 30 s as Unknown.
	DefaultHealthResend = 10 * time.Second
	// MaxHealthResend leaves room within the kubelet's 30 s for a resend
	// that is late by a few seconds.
	MaxHealthResend = 20 * time.Second
)

// Socket and file names.
const (
	// SocketName is the DRA socket in the plugin data directory; the
	// kubelet plugin helper names it so.
	SocketName = "dra.sock"
	// CheckpointName is the checkpoint file in the plugin data directory.
	CheckpointName = "checkpoint.json"
)

// Config is what the DRA driver needs. The caller fills it (DefaultConfig
// gives the defaults) and New checks it.
type Config struct {
	// DriverName is the DRA driver name: ResourceSlices carry it, and
	// DeviceClasses select on it. A DNS subdomain.
	DriverName string
	// NodeName is this node: the pool of its ResourceSlices and their
	// owner.
	NodeName string
	// RegistrarDir is the kubelet's plugins_registry directory; the
	// registration socket <driver>-reg.sock is made there. It must be the
	// same path inside and outside the container.
	RegistrarDir string
	// PluginsDir is the kubelet's plugins directory; the plugin keeps its
	// DRA socket and checkpoint in PluginsDir/<driver>, made 0750 when
	// missing. The same path inside and outside the container.
	PluginsDir string
	// SysfsRoot is where sysfs is mounted: the PCIe root of a GPU is read
	// from its bus/pci/devices link.
	SysfsRoot string
	// SharedDevNum is how many claims may share one GPU. 1 makes every GPU
	// exclusive; more publishes each GPU with allowMultipleAllocations and
	// that many shares of consumable capacity.
	SharedDevNum int
	// HealthResend is how often device health is sent to the kubelet when
	// nothing changed.
	HealthResend time.Duration
	// Client reaches the API server: ResourceSlices, claims, the node. New
	// requires it; Validate, which checks what flags set, does not.
	Client kubernetes.Interface
	// Logger may be nil: nothing is logged.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default set.
func DefaultConfig() Config {
	return Config{
		DriverName:   DefaultDriverName,
		RegistrarDir: DefaultRegistrarDir,
		PluginsDir:   DefaultPluginsDir,
		SysfsRoot:    "/sys",
		SharedDevNum: 1,
		HealthResend: DefaultHealthResend,
	}
}

// DataDir is the plugin's own directory: PluginsDir/DriverName.
func (c *Config) DataDir() string { return filepath.Join(c.PluginsDir, c.DriverName) }

// RegistrationSocket is the path of the registration socket.
func (c *Config) RegistrationSocket() string {
	return filepath.Join(c.RegistrarDir, conflict.RegistrationSocket(c.DriverName))
}

// DRASocket is the path of the socket the kubelet calls for
// NodePrepareResources and the health stream.
func (c *Config) DRASocket() string { return filepath.Join(c.DataDir(), SocketName) }

// Validate checks every field and returns a *kubeplugin.FieldError naming
// the first one that cannot be used.
func (c *Config) Validate() error {
	if errs := validation.IsDNS1123Subdomain(c.DriverName); len(errs) > 0 {
		return kubeplugin.Invalid("DriverName", "%q is not a DNS subdomain: %s", c.DriverName, errs[0])
	}
	// The driver name is also the domain of the taint key and of the
	// attributes, and a device attribute domain is at most 63 bytes.
	if len(c.DriverName) > 63 {
		return kubeplugin.Invalid("DriverName", "%q is %d bytes, more than 63", c.DriverName, len(c.DriverName))
	}
	if c.NodeName == "" {
		return kubeplugin.Invalid("NodeName", "must not be empty: the pool of this node's ResourceSlices is named after it")
	}
	if errs := validation.IsDNS1123Subdomain(c.NodeName); len(errs) > 0 {
		return kubeplugin.Invalid("NodeName", "%q is not a node name: %s", c.NodeName, errs[0])
	}
	for _, d := range []struct{ field, dir, sock string }{
		{"RegistrarDir", c.RegistrarDir, c.RegistrationSocket()},
		{"PluginsDir", c.PluginsDir, c.DRASocket()},
	} {
		if d.dir == "" {
			return kubeplugin.Invalid(d.field, "must not be empty")
		}
		if !filepath.IsAbs(d.dir) {
			return kubeplugin.Invalid(d.field, "%s is not absolute: the kubelet resolves the socket path outside this container", d.dir)
		}
		if n := len(d.sock); n > kubeplugin.MaxSocketPathLen {
			return kubeplugin.Invalid(d.field, "%s makes the socket path %s %d bytes long, more than the %d a unix socket address holds",
				d.dir, d.sock, n, kubeplugin.MaxSocketPathLen)
		}
	}
	if c.SysfsRoot == "" {
		return kubeplugin.Invalid("SysfsRoot", "must not be empty")
	}
	if c.SharedDevNum < 1 || c.SharedDevNum > MaxSharedDevNum {
		return kubeplugin.Invalid("SharedDevNum", "%d is not between 1 and %d", c.SharedDevNum, MaxSharedDevNum)
	}
	if c.HealthResend <= 0 || c.HealthResend > MaxHealthResend {
		return kubeplugin.Invalid("HealthResend", "%s is not between 0 and %s: the kubelet takes health not refreshed within 30s as Unknown", c.HealthResend, MaxHealthResend)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// taintKey is the key of the taint an unhealthy GPU gets.
func (c *Config) taintKey() string { return c.DriverName + "/unhealthy" }
