package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/httpserver"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/probe"
)

// NodeFlags are the flags of every command that runs the node model (the
// GPUs, their CDI spec on disk, the /dev/dri watcher) for a kubelet plugin:
// `plugin` here, and the DRA driver's own binary (cmd/intel-gpu-cdi-dra),
// which imports them so that both take the same flags and variables.
type NodeFlags struct {
	common  commonConfig
	specCfg specConfig
	// Node is the node model's configuration; Complete fills what the
	// flags do not set directly.
	Node     node.Config
	allowIDs string
	denyIDs  string
	// MetricsAddress and ProbeAddress are where to serve metrics and the
	// probes; empty serves none.
	MetricsAddress string
	ProbeAddress   string
	health         healthConfig
	// Monitor is the GPU health monitor Complete built and put in Node;
	// the command runs it.
	Monitor *health.Monitor
}

// nodeFieldFlags maps the node configuration's fields to their flags.
var nodeFieldFlags = map[string]string{
	"CDISpecDir":   "--cdi-spec-dir",
	"AllowIDs":     "--allow-ids",
	"DenyIDs":      "--deny-ids",
	"ResyncPeriod": "--resync-period",
}

// Flags returns the flags, with the node's defaults.
func (f *NodeFlags) Flags() []cli.Flag {
	f.Node = node.DefaultConfig()
	flags := append(f.common.flags(), f.specCfg.flags()...)
	return append(append(flags,
		&cli.StringFlag{Name: "cdi-spec-dir", Value: f.Node.CDISpecDir, Usage: "where the node's CDI spec is kept (created 0755 when missing)", EnvVars: env("cdi-spec-dir"), Destination: &f.Node.CDISpecDir},
		&cli.StringFlag{Name: "allow-ids", Usage: "comma list of PCI device IDs (0x56a0) to hand out; no others", EnvVars: env("allow-ids"), Destination: &f.allowIDs},
		&cli.StringFlag{Name: "deny-ids", Usage: "comma list of PCI device IDs never to hand out", EnvVars: env("deny-ids"), Destination: &f.denyIDs},
		&cli.DurationFlag{Name: "resync-period", Value: f.Node.ResyncPeriod, Usage: "safety-net rescan period (changes are seen at once through /dev/dri events); 0 disables", EnvVars: env("resync-period"), Destination: &f.Node.ResyncPeriod},
		&cli.StringFlag{Name: "metrics-address", Usage: "host:port to serve Prometheus metrics on at /metrics (such as :9400); empty serves none", EnvVars: env("metrics-address"), Destination: &f.MetricsAddress},
		&cli.StringFlag{Name: "probe-address", Usage: "host:port to answer liveness (/healthz) and readiness (/readyz) probes on (such as :8081); empty serves none", EnvVars: env("probe-address"), Destination: &f.ProbeAddress},
	), f.health.flags()...)
}

// Complete builds the logger (writing to errw), then checks every node
// flag, so that a bad value stops start-up with an error naming its flag
// before anything is read or written.
func (f *NodeFlags) Complete(errw io.Writer) (*slog.Logger, error) {
	log, err := f.common.logger(errw)
	if err != nil {
		return nil, err
	}
	if err := f.common.checkRoots(); err != nil {
		return nil, err
	}
	scanner := f.common.scanner()
	if err := waitableRoots(scanner, log); err != nil {
		return nil, err
	}
	b, err := f.specCfg.builder()
	if err != nil {
		return nil, err
	}
	f.Node.AllowIDs, f.Node.DenyIDs = splitList(f.allowIDs), splitList(f.denyIDs)
	f.Node.Scanner, f.Node.Builder, f.Node.Logger = scanner, b, log
	if err := f.Node.Validate(); err != nil {
		return nil, FieldFlagError(err, nodeFieldFlags)
	}
	// A missing spec directory is made at start; something else in its
	// place would fail every write for ever.
	if fi, err := os.Stat(f.Node.CDISpecDir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("--cdi-spec-dir: %s is not a directory", f.Node.CDISpecDir)
	}
	if f.Monitor, err = f.health.monitor(f.common.SysfsRoot, log); err != nil {
		return nil, err
	}
	f.Node.Health = f.Monitor
	return log, nil
}

// waitableRoots refuses roots that are not a node, as list and generate
// do, but lets a kubelet plugin start on a node whose GPU driver has not
// made class/drm or /dev/dri yet: it watches for them and serves when
// they come.
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

// GPUCollector is the per-GPU metrics collector (health, PCIe errors,
// temperature, power, frequencies) over a node's current snapshot.
func (f *NodeFlags) GPUCollector(n *node.Node) *metrics.GPUCollector {
	gpus := func() []metrics.GPU {
		s := n.Snapshot()
		out := make([]metrics.GPU, len(s.GPUs))
		for i, g := range s.GPUs {
			out[i] = metrics.GPU{PCIAddress: g.PCIAddress(), Card: g.Device.Card, Health: g.Health}
		}
		return out
	}
	return metrics.NewGPUCollector(f.common.SysfsRoot, gpus, metrics.WithHealthStats(f.Monitor.Stats))
}

// SysfsRoot is the absolute sysfs root, once Complete returned.
func (f *NodeFlags) SysfsRoot() string { return f.common.SysfsRoot }

// KubeletSocketDirFlag is --kubelet-socket-dir, the kubelet's device-plugin
// directory: `plugin` serves there, the DRA driver checks that it does not.
func KubeletSocketDirFlag(dest *string) cli.Flag {
	return &cli.StringFlag{Name: "kubelet-socket-dir", Value: deviceplugin.DefaultKubeletSocketDir, Usage: "the kubelet's device-plugin directory (holds kubelet.sock); it need not exist yet: the plugin waits for the kubelet to make it", EnvVars: env("kubelet-socket-dir"), Destination: dest}
}

// KubeletRegistrarDirFlag is --kubelet-registrar-dir, the kubelet's
// plugins_registry directory: the DRA driver registers there, `plugin`
// checks that no DRA driver did.
func KubeletRegistrarDirFlag(dest *string, def, usage string) cli.Flag {
	return &cli.StringFlag{Name: "kubelet-registrar-dir", Value: def, Usage: usage, EnvVars: env("kubelet-registrar-dir"), Destination: dest}
}

// SharedDevNumFlag is --shared-dev-num: how many containers (device
// plugin) or claims (DRA) may share one GPU.
func SharedDevNumFlag(dest *int, usage string) cli.Flag {
	return &cli.IntFlag{Name: "shared-dev-num", Value: 1, Usage: usage, EnvVars: env("shared-dev-num"), Destination: dest}
}

// EnvVars returns the environment variable that sets a flag: --node-name is
// INTEL_GPU_CDI_NODE_NAME.
func EnvVars(flag string) []string { return env(flag) }

// FieldFlagError names the flag of a configuration field that was refused:
// fields maps each field of the configuration to its flag.
func FieldFlagError(err error, fields map[string]string) error {
	fe, ok := kubeplugin.AsFieldError(err)
	if !ok {
		return err
	}
	name := func(field string) string {
		if flag, ok := fields[field]; ok {
			return flag
		}
		return field
	}
	if fe.With != "" {
		return fmt.Errorf("%s and %s: %s", name(fe.Field), name(fe.With), fe.Reason)
	}
	return fmt.Errorf("%s: %s", name(fe.Field), fe.Reason)
}

// KubeletPlugin is the kubelet plugin a command serves beside the node:
// the device plugin or the DRA driver.
type KubeletPlugin struct {
	// Name names it in the readiness probe's answer and in the log.
	Name string
	// Ready is its readiness check.
	Ready func() error
	// Run serves it until ctx ends; an error stops the node too.
	Run func(ctx context.Context) error
	// Helpers run beside it until the end (the NFD labels).
	Helpers []func(ctx context.Context)
}

// Serve binds the metrics (when obs is set) and probe endpoints, so that a
// taken address stops start-up, then runs the node, the health monitor,
// the endpoints, p and its helpers until a signal or parent ends them or
// the node or p fails. An endpoint failure is logged, never fatal: it is
// no reason to stop serving GPUs. started is logged once all is running.
func (f *NodeFlags) Serve(parent context.Context, log *slog.Logger, n *node.Node, obs *metrics.Metrics, p KubeletPlugin, started string, attrs ...any) error {
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
		obs.Registry().MustRegister(f.GPUCollector(n))
		srv, err := metrics.Listen(f.MetricsAddress, obs.Handler())
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		endpoints = append(endpoints, endpoint{"metrics", srv})
	}
	if f.ProbeAddress != "" {
		srv, err := probe.Listen(f.ProbeAddress,
			probe.Check{Name: "node", Live: n.Live, Ready: n.Ready},
			probe.Check{Name: p.Name, Ready: p.Ready})
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
			if err := e.srv.Serve(ctx); err != nil {
				log.Error("serving "+e.name, "address", e.srv.Addr().String(), "err", err)
			}
		})
	}
	helpers.Go(func() { _ = f.Monitor.Run(ctx) })
	for _, h := range p.Helpers {
		helpers.Go(func() { h(ctx) })
	}
	pluginErr := make(chan error, 1)
	helpers.Go(func() {
		err := p.Run(ctx)
		if err != nil {
			cancel()
		}
		pluginErr <- err
	})
	log.Info(started, attrs...)
	err := n.Run(ctx)
	cancel()
	helpers.Wait()
	if err != nil {
		return err
	}
	if err = <-pluginErr; err == nil {
		log.Info("stopped")
	}
	return err
}
