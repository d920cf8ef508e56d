package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/httpserver"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/nfd"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/probe"
)

// pluginConfig holds the plugin's own flags. Fields that need no parsing
// land in the node and device plugin configurations directly; each of
// those checks its own values, and fieldFlags names the flag of a field
// it refuses.
type pluginConfig struct {
	Node               node.Config
	DevicePlugin       deviceplugin.Config
	AllocationPolicy   string
	DeviceListStrategy string
	AllowIDs           string
	DenyIDs            string
	MetricsAddress     string
	ProbeAddress       string
	NFDFeaturesDir     string
	Health             healthConfig
	sysfsRoot          string
}

// fieldFlags maps the configuration fields to the flags that set them.
var fieldFlags = map[string]string{
	"CDISpecDir":       "--cdi-spec-dir",
	"AllowIDs":         "--allow-ids",
	"DenyIDs":          "--deny-ids",
	"ResyncPeriod":     "--resync-period",
	"KubeletSocketDir": "--kubelet-socket-dir",
	"SharedDevNum":     "--shared-dev-num",
	"Policy":           "--allocation-policy",
	"Strategies":       "--device-list-strategy",
}

// flagError names the flag of a configuration field that was refused.
func flagError(err error) error {
	fe, ok := kubeplugin.AsFieldError(err)
	if !ok {
		return err
	}
	name := func(field string) string {
		if flag, ok := fieldFlags[field]; ok {
			return flag
		}
		return field
	}
	if fe.With != "" {
		return fmt.Errorf("%s and %s: %s", name(fe.Field), name(fe.With), fe.Reason)
	}
	return fmt.Errorf("%s: %s", name(fe.Field), fe.Reason)
}

func (c *pluginConfig) flags() []cli.Flag {
	c.Node, c.DevicePlugin = node.DefaultConfig(), deviceplugin.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "kubelet-socket-dir", Value: c.DevicePlugin.KubeletSocketDir, Usage: "the kubelet's device-plugin directory (holds kubelet.sock); it need not exist yet, its parent must", EnvVars: env("kubelet-socket-dir"), Destination: &c.DevicePlugin.KubeletSocketDir},
		&cli.StringFlag{Name: "cdi-spec-dir", Value: c.Node.CDISpecDir, Usage: "where the node's CDI spec is kept (created 0755 when missing)", EnvVars: env("cdi-spec-dir"), Destination: &c.Node.CDISpecDir},
		&cli.IntFlag{Name: "shared-dev-num", Value: c.DevicePlugin.SharedDevNum, Usage: "how many containers may share one GPU", EnvVars: env("shared-dev-num"), Destination: &c.DevicePlugin.SharedDevNum},
		&cli.StringFlag{Name: "allocation-policy", Value: string(c.DevicePlugin.Policy), Usage: "preferred allocation with shared GPUs: none (spread), balanced or packed", EnvVars: env("allocation-policy"), Destination: &c.AllocationPolicy},
		&cli.StringFlag{Name: "device-list-strategy", Value: string(deviceplugin.StrategyCDICRI), Usage: "comma list of cdi-cri, cdi-annotations, device-specs", EnvVars: env("device-list-strategy"), Destination: &c.DeviceListStrategy},
		&cli.BoolFlag{Name: "enable-monitoring", Usage: "advertise gpu.intel.com/monitoring: one device that gets every GPU", EnvVars: env("enable-monitoring"), Destination: &c.DevicePlugin.EnableMonitoring},
		&cli.StringFlag{Name: "allow-ids", Usage: "comma list of PCI device IDs (0x56a0) to hand out; no others", EnvVars: env("allow-ids"), Destination: &c.AllowIDs},
		&cli.StringFlag{Name: "deny-ids", Usage: "comma list of PCI device IDs never to hand out", EnvVars: env("deny-ids"), Destination: &c.DenyIDs},
		&cli.DurationFlag{Name: "resync-period", Value: c.Node.ResyncPeriod, Usage: "safety-net rescan period (changes are seen at once through /dev/dri events); 0 disables", EnvVars: env("resync-period"), Destination: &c.Node.ResyncPeriod},
		&cli.StringFlag{Name: "metrics-address", Usage: "host:port to serve Prometheus metrics on at /metrics (such as :9400); empty serves none", EnvVars: env("metrics-address"), Destination: &c.MetricsAddress},
		&cli.StringFlag{Name: "probe-address", Usage: "host:port to answer liveness (/healthz) and readiness (/readyz) probes on (such as :8081); empty serves none", EnvVars: env("probe-address"), Destination: &c.ProbeAddress},
		&cli.StringFlag{Name: "nfd-features-dir", Usage: "Node Feature Discovery features.d directory (such as " + nfd.DefaultFeaturesDir + ") to keep gpu.intel.com/ labels in; empty writes none", EnvVars: env("nfd-features-dir"), Destination: &c.NFDFeaturesDir},
	}
}

func pluginCommand() *cli.Command {
	var (
		common  commonConfig
		specCfg specConfig
		cfg     pluginConfig
	)
	flags := append(common.flags(), specCfg.flags()...)
	flags = append(flags, cfg.flags()...)
	flags = append(flags, cfg.Health.flags()...)
	return &cli.Command{
		Name:  "plugin",
		Usage: "serve the node's Intel GPUs to the kubelet as gpu.intel.com/i915 and gpu.intel.com/xe",
		Description: "Writes the node's CDI spec to --cdi-spec-dir, registers with the kubelet and answers " +
			"Allocate with CDI device names. Watches /dev/dri for GPUs coming and going and the kubelet " +
			"socket directory for kubelet restarts. Stops on SIGTERM or SIGINT, leaving the spec in place.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			log, err := common.logger(c.App.ErrWriter)
			if err != nil {
				return err
			}
			if err := common.checkRoots(); err != nil {
				return err
			}
			if err := waitableRoots(common.scanner(), log); err != nil {
				return err
			}
			if err := cfg.complete(&common, &specCfg, log); err != nil {
				return err
			}
			return cfg.run(c.Context, log)
		},
	}
}

// waitableRoots refuses roots that are not a node, as list and generate
// do, but lets the plugin start on a node whose GPU driver has not made
// class/drm or /dev/dri yet: it watches for them and serves when they come.
func waitableRoots(s *discovery.Scanner, log *slog.Logger) error {
	err := s.CheckRoots()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, discovery.ErrNoDRMClass), errors.Is(err, discovery.ErrNoDRI):
		log.Warn("no GPU to serve yet; waiting for the driver", "reason", rootFlagError(err).Error())
		return nil
	}
	return rootFlagError(err)
}

// complete parses the flags that need it and checks both configurations,
// so that every bad value stops start-up with an error naming its flag.
func (c *pluginConfig) complete(common *commonConfig, specCfg *specConfig, log *slog.Logger) error {
	b, err := specCfg.builder()
	if err != nil {
		return err
	}
	if c.DevicePlugin.Policy, err = deviceplugin.ParsePolicy(c.AllocationPolicy); err != nil {
		return fmt.Errorf("--allocation-policy: %w", err)
	}
	if c.DevicePlugin.Strategies, err = deviceplugin.ParseStrategies(c.DeviceListStrategy); err != nil {
		return fmt.Errorf("--device-list-strategy: %w", err)
	}
	c.Node.AllowIDs, c.Node.DenyIDs = splitList(c.AllowIDs), splitList(c.DenyIDs)
	c.Node.Scanner, c.Node.Builder, c.Node.Logger = common.scanner(), b, log
	c.sysfsRoot = common.SysfsRoot
	c.DevicePlugin.Logger = log
	if err := c.Node.Validate(); err != nil {
		return flagError(err)
	}
	if err := c.DevicePlugin.Validate(); err != nil {
		return flagError(err)
	}
	// A missing directory is made at start (the spec dir) or waited for
	// (the socket dir); something else in its place would fail every
	// write and socket for ever.
	for _, d := range []struct{ flag, dir string }{{"--kubelet-socket-dir", c.DevicePlugin.KubeletSocketDir}, {"--cdi-spec-dir", c.Node.CDISpecDir}} {
		if fi, err := os.Stat(d.dir); err == nil && !fi.IsDir() {
			return fmt.Errorf("%s: %s is not a directory", d.flag, d.dir)
		}
	}
	return nil
}

// run wires the node, the device plugin and the optional endpoints, and
// serves until a signal or ctx ends it.
func (c *pluginConfig) run(parent context.Context, log *slog.Logger) error {
	monitor, err := c.Health.monitor(c.sysfsRoot, log)
	if err != nil {
		return err
	}
	c.Node.Health = monitor
	var obs *metrics.Metrics
	if c.MetricsAddress != "" {
		obs = metrics.New()
		c.Node.Observer, c.DevicePlugin.Observer = obs, obs
	}
	n, err := node.New(c.Node)
	if err != nil {
		return flagError(err)
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

	// Every address is bound before anything runs, so a taken one stops
	// start-up.
	type endpoint struct {
		name string
		srv  *httpserver.Server
	}
	var endpoints []endpoint
	closeAll := func() {
		for _, e := range endpoints {
			e.srv.Close()
		}
	}
	if obs != nil {
		obs.Registry().MustRegister(metrics.NewGPUCollector(c.sysfsRoot, snapshotGPUs(n), metrics.WithHealthStats(monitor.Stats)))
		srv, err := metrics.Listen(c.MetricsAddress, obs.Handler())
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		endpoints = append(endpoints, endpoint{"metrics", srv})
	}
	if c.ProbeAddress != "" {
		srv, err := probe.Listen(c.ProbeAddress,
			probe.Check{Name: "node", Live: n.Live, Ready: n.Ready},
			probe.Check{Name: "device plugin", Ready: dp.Ready})
		if err != nil {
			closeAll()
			return fmt.Errorf("--probe-address: %w", err)
		}
		endpoints = append(endpoints, endpoint{"probes", srv})
	}

	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Everything stops with the node, whatever ends it.
	ctx, cancel := context.WithCancel(ctx)
	var helpers sync.WaitGroup
	defer helpers.Wait()
	defer cancel()
	for _, e := range endpoints {
		log.Info("serving "+e.name, "address", e.srv.Addr().String())
		helpers.Go(func() {
			// An endpoint failure is no reason to stop serving GPUs.
			if err := e.srv.Serve(ctx); err != nil {
				log.Error("serving "+e.name, "err", err)
			}
		})
	}
	helpers.Go(func() { _ = monitor.Run(ctx) })
	if labels != nil {
		log.Info("keeping NFD feature labels", "path", labels.Path())
		helpers.Go(func() { labels.Run(ctx) })
	}
	dpErr := make(chan error, 1)
	helpers.Go(func() {
		err := dp.Run(ctx)
		if err != nil {
			cancel()
		}
		dpErr <- err
	})
	log.Info("starting device plugin", "version", Version, "sysfs", c.Node.Scanner.SysfsRoot(), "dev", c.Node.Scanner.DevRoot(),
		"kubeletSocketDir", c.DevicePlugin.KubeletSocketDir, "spec", n.SpecPath())
	err = n.Run(ctx)
	cancel()
	helpers.Wait()
	if err != nil {
		return err
	}
	err = <-dpErr
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// snapshotGPUs lists the node's current GPUs for the GPU metrics.
func snapshotGPUs(n *node.Node) func() []metrics.GPU {
	return func() []metrics.GPU {
		s := n.Snapshot()
		out := make([]metrics.GPU, len(s.GPUs))
		for i, g := range s.GPUs {
			out[i] = metrics.GPU{PCIAddress: g.PCIAddress(), Card: g.Device.Card, Health: g.Health}
		}
		return out
	}
}

// splitList reads a comma list. An empty list is none; an empty item is
// kept, for the check to refuse.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return strings.Split(s, ",")
}
