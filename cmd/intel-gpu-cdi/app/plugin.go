package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dirwatch"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/nfd"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// pluginConfig holds the plugin's flags: those of every command that runs
// the node model, and its own. Fields that need no parsing land in the
// node and device plugin configurations directly; each of those checks its
// own values, and fieldFlags names the flag of a field it refuses.
type pluginConfig struct {
	NodeFlags
	DevicePlugin       deviceplugin.Config
	AllocationPolicy   string
	DeviceListStrategy string
	NFDFeaturesDir     string
	RegistrarDir       string
}

// fieldFlags maps the device plugin's configuration fields to the flags
// that set them.
var fieldFlags = map[string]string{
	"KubeletSocketDir": "--kubelet-socket-dir",
	"SharedDevNum":     "--shared-dev-num",
	"Policy":           "--allocation-policy",
	"Strategies":       "--device-list-strategy",
}

// flagError names the flag of a configuration field that was refused.
func flagError(err error) error { return FieldFlagError(err, fieldFlags) }

func (c *pluginConfig) flags() []cli.Flag {
	c.DevicePlugin = deviceplugin.DefaultConfig()
	return append(c.NodeFlags.Flags(),
		KubeletSocketDirFlag(&c.DevicePlugin.KubeletSocketDir),
		SharedDevNumFlag(&c.DevicePlugin.SharedDevNum, "how many containers may share one GPU"),
		&cli.StringFlag{Name: "allocation-policy", Value: string(c.DevicePlugin.Policy), Usage: "preferred allocation with shared GPUs: none (spread), balanced or packed", EnvVars: env("allocation-policy"), Destination: &c.AllocationPolicy},
		&cli.StringFlag{Name: "device-list-strategy", Value: string(deviceplugin.StrategyCDICRI), Usage: "comma list of cdi-cri, cdi-annotations, device-specs", EnvVars: env("device-list-strategy"), Destination: &c.DeviceListStrategy},
		&cli.BoolFlag{Name: "enable-monitoring", Usage: "advertise gpu.intel.com/monitoring: one device that gets every GPU", EnvVars: env("enable-monitoring"), Destination: &c.DevicePlugin.EnableMonitoring},
		KubeletRegistrarDirFlag(&c.RegistrarDir, "", "the kubelet's plugins_registry directory, looked at (never written) for a DRA driver of the same GPUs, beside which the plugin refuses to start; empty: the one beside --kubelet-socket-dir, as a kubelet with its default --root-dir keeps them"),
		&cli.StringFlag{Name: "nfd-features-dir", Usage: "Node Feature Discovery features.d directory (such as " + nfd.DefaultFeaturesDir + ") to keep gpu.intel.com/ labels in; empty writes none", EnvVars: env("nfd-features-dir"), Destination: &c.NFDFeaturesDir},
	)
}

func pluginCommand() *cli.Command {
	var cfg pluginConfig
	return &cli.Command{
		Name:  "plugin",
		Usage: "serve the node's Intel GPUs to the kubelet as gpu.intel.com/i915 and gpu.intel.com/xe",
		Description: "Writes the node's CDI spec to --cdi-spec-dir, registers with the kubelet and answers " +
			"Allocate with CDI device names. Watches /dev/dri for GPUs coming and going and the kubelet " +
			"socket directory for kubelet restarts. Stops on SIGTERM or SIGINT, leaving the spec in place. " +
			"Refuses to start where a DRA driver for the same GPUs is registered with the kubelet.",
		Flags: cfg.flags(),
		Action: func(c *cli.Context) error {
			log, err := cfg.NodeFlags.Complete(c.App.ErrWriter)
			if err != nil {
				return err
			}
			if err := cfg.complete(log); err != nil {
				return err
			}
			if err := refuseBesideDRA(cfg.RegistrarDir); err != nil {
				return err
			}
			return cfg.run(c.Context, log)
		},
	}
}

// complete parses the flags that need it and checks the device plugin's
// configuration, so that every bad value stops start-up with an error
// naming its flag.
func (c *pluginConfig) complete(log *slog.Logger) error {
	var err error
	if c.DevicePlugin.Policy, err = deviceplugin.ParsePolicy(c.AllocationPolicy); err != nil {
		return fmt.Errorf("--allocation-policy: %w", err)
	}
	if c.DevicePlugin.Strategies, err = deviceplugin.ParseStrategies(c.DeviceListStrategy); err != nil {
		return fmt.Errorf("--device-list-strategy: %w", err)
	}
	c.DevicePlugin.Logger = log
	if err := c.DevicePlugin.Validate(); err != nil {
		return flagError(err)
	}
	if c.RegistrarDir == "" {
		c.RegistrarDir = conflict.RegistryBeside(c.DevicePlugin.KubeletSocketDir)
	}
	if d := c.RegistrarDir; !filepath.IsAbs(d) {
		return fmt.Errorf("--kubelet-registrar-dir: %q is not an absolute path", d)
	} else if fi, err := os.Stat(d); err == nil && !fi.IsDir() {
		// Missing is no DRA driver; something else in its place would
		// hide one for ever.
		return fmt.Errorf("--kubelet-registrar-dir: %s is not a directory", d)
	}
	// A missing socket directory is waited for; something else in its
	// place would fail every socket for ever.
	if fi, err := os.Stat(c.DevicePlugin.KubeletSocketDir); err == nil && !fi.IsDir() {
		return fmt.Errorf("--kubelet-socket-dir: %s is not a directory", c.DevicePlugin.KubeletSocketDir)
	}
	return nil
}

// run wires the node, the device plugin and the optional endpoints, and
// serves until a signal or ctx ends it.
func (c *pluginConfig) run(parent context.Context, log *slog.Logger) error {
	var obs *metrics.Metrics
	if c.MetricsAddress != "" {
		obs = metrics.New()
		c.Node.Observer, c.DevicePlugin.Observer = obs, obs
	}
	// One directory watcher for /dev/dri and the kubelet's directory.
	watch, err := dirwatch.New()
	if err != nil {
		return err
	}
	defer watch.Close()
	c.Node.Watcher, c.DevicePlugin.Watcher = watch, watch
	n, err := node.New(c.Node)
	if err != nil {
		return FieldFlagError(err, nodeFieldFlags)
	}
	dp, err := deviceplugin.New(c.DevicePlugin)
	if err != nil {
		return flagError(err)
	}
	n.Subscribe(dp)

	var labels *nfd.Writer
	if c.NFDFeaturesDir != "" {
		if labels, err = nfd.New(c.NFDFeaturesDir, nfd.WithLogger(log)); err != nil {
			return fmt.Errorf("--nfd-features-dir: %w", err)
		}
		n.Subscribe(labels.Subscriber())
	}

	served := KubeletPlugin{Name: "device plugin", Ready: dp.Ready, Run: dp.Run}
	if labels != nil {
		served.Helpers = append(served.Helpers, func(ctx context.Context) {
			log.Info("keeping NFD feature labels", "path", labels.Path())
			labels.Run(ctx)
		})
	}
	return c.Serve(parent, log, n, obs, served, "starting device plugin",
		"version", Version, "sysfs", c.Node.Scanner.SysfsRoot(), "dev", c.Node.Scanner.DevRoot(),
		"kubeletSocketDir", c.DevicePlugin.KubeletSocketDir, "spec", n.SpecPath())
}

// splitList reads a comma list. An empty list is none; an empty item is
// kept, for the check to refuse.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return strings.Split(s, ",")
}
