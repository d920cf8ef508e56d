package app

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/nfd"
)

// minResyncPeriod is the shortest --resync-period other than 0.
const minResyncPeriod = time.Second

// pluginConfig holds the plugin's own flags.
type pluginConfig struct {
	KubeletSocketDir   string
	CDISpecDir         string
	SharedDevNum       int
	AllocationPolicy   string
	DeviceListStrategy string
	EnableMonitoring   bool
	AllowIDs           string
	DenyIDs            string
	ResyncPeriod       time.Duration
	MetricsAddress     string
	NFDFeaturesDir     string
}

func (c *pluginConfig) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "kubelet-socket-dir", Value: kubeplugin.DefaultKubeletSocketDir, Usage: "the kubelet's device-plugin directory (holds kubelet.sock)", EnvVars: env("kubelet-socket-dir"), Destination: &c.KubeletSocketDir},
		&cli.StringFlag{Name: "cdi-spec-dir", Value: kubeplugin.DefaultCDISpecDir, Usage: "where the node's CDI spec is kept", EnvVars: env("cdi-spec-dir"), Destination: &c.CDISpecDir},
		&cli.IntFlag{Name: "shared-dev-num", Value: 1, Usage: "how many containers may share one GPU", EnvVars: env("shared-dev-num"), Destination: &c.SharedDevNum},
		&cli.StringFlag{Name: "allocation-policy", Value: string(kubeplugin.PolicyNone), Usage: "preferred allocation with shared GPUs: none (spread), balanced or packed", EnvVars: env("allocation-policy"), Destination: &c.AllocationPolicy},
		&cli.StringFlag{Name: "device-list-strategy", Value: string(kubeplugin.StrategyCDICRI), Usage: "comma list of cdi-cri, cdi-annotations, device-specs", EnvVars: env("device-list-strategy"), Destination: &c.DeviceListStrategy},
		&cli.BoolFlag{Name: "enable-monitoring", Usage: "advertise gpu.intel.com/monitoring: one device that gets every GPU", EnvVars: env("enable-monitoring"), Destination: &c.EnableMonitoring},
		&cli.StringFlag{Name: "allow-ids", Usage: "comma list of PCI device IDs (0x56a0) to hand out; no others", EnvVars: env("allow-ids"), Destination: &c.AllowIDs},
		&cli.StringFlag{Name: "deny-ids", Usage: "comma list of PCI device IDs never to hand out", EnvVars: env("deny-ids"), Destination: &c.DenyIDs},
		&cli.DurationFlag{Name: "resync-period", Value: kubeplugin.DefaultResyncPeriod, Usage: "safety-net rescan period (changes are seen at once through /dev/dri events); 0 disables", EnvVars: env("resync-period"), Destination: &c.ResyncPeriod},
		&cli.StringFlag{Name: "metrics-address", Usage: "host:port to serve Prometheus metrics on at /metrics (such as :9400); empty serves none", EnvVars: env("metrics-address"), Destination: &c.MetricsAddress},
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
			opts, err := cfg.options(&specCfg)
			if err != nil {
				return err
			}
			opts = append(opts,
				kubeplugin.WithScanner(common.scanner()),
				kubeplugin.WithLogger(log),
			)
			var labels *nfd.Writer
			if cfg.NFDFeaturesDir != "" {
				if labels, err = nfd.New(cfg.NFDFeaturesDir, nfd.WithLogger(log)); err != nil {
					return fmt.Errorf("--nfd-features-dir: %w", err)
				}
				opts = append(opts, kubeplugin.WithOnDevices(labels.Update))
			}
			var obs *metrics.Metrics
			if cfg.MetricsAddress != "" {
				obs = metrics.New()
				opts = append(opts, kubeplugin.WithObserver(obs))
			}
			p, err := kubeplugin.New(opts...)
			if err != nil {
				return err
			}
			var srv *metrics.Server
			if obs != nil {
				if srv, err = metrics.Listen(cfg.MetricsAddress, obs.Handler()); err != nil {
					return fmt.Errorf("--metrics-address: %w", err)
				}
			}
			if err := cfg.checkSocketDir(); err != nil {
				if srv != nil {
					srv.Close()
				}
				return err
			}

			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// The helpers stop with the plugin, whatever ends it.
			ctx, cancel := context.WithCancel(ctx)
			var helpers sync.WaitGroup
			defer helpers.Wait()
			defer cancel()
			if srv != nil {
				log.Info("serving metrics", "address", srv.Addr().String(), "path", metrics.Path)
				helpers.Go(func() {
					// A metrics failure is no reason to stop serving GPUs.
					if err := srv.Serve(ctx); err != nil {
						log.Error("metrics server", "err", err)
					}
				})
			}
			if labels != nil {
				log.Info("keeping NFD feature labels", "path", labels.Path())
				helpers.Go(func() { labels.Run(ctx) })
			}
			log.Info("starting device plugin", "version", Version, "sysfs", common.SysfsRoot, "dev", common.DevRoot,
				"kubeletSocketDir", cfg.KubeletSocketDir, "spec", p.SpecPath())
			return p.Run(ctx)
		},
	}
}

// options turns the flags into plugin options, naming the flag of any bad
// value so that start-up stops with an error a person can act on.
func (c *pluginConfig) options(specCfg *specConfig) ([]kubeplugin.Option, error) {
	b, err := specCfg.builder()
	if err != nil {
		return nil, err
	}
	if c.SharedDevNum < 1 || c.SharedDevNum > kubeplugin.MaxSharedDevNum {
		return nil, fmt.Errorf("--shared-dev-num: %d is not between 1 and %d", c.SharedDevNum, kubeplugin.MaxSharedDevNum)
	}
	policy, err := kubeplugin.ParsePolicy(c.AllocationPolicy)
	if err != nil {
		return nil, fmt.Errorf("--allocation-policy: %w", err)
	}
	strategies, err := kubeplugin.ParseStrategies(c.DeviceListStrategy)
	if err != nil {
		return nil, fmt.Errorf("--device-list-strategy: %w", err)
	}
	allow, err := parseIDs(c.AllowIDs)
	if err != nil {
		return nil, fmt.Errorf("--allow-ids: %w", err)
	}
	deny, err := parseIDs(c.DenyIDs)
	if err != nil {
		return nil, fmt.Errorf("--deny-ids: %w", err)
	}
	if len(allow) > 0 && len(deny) > 0 {
		return nil, fmt.Errorf("--allow-ids and --deny-ids are mutually exclusive")
	}
	if c.ResyncPeriod < 0 {
		return nil, fmt.Errorf("--resync-period: %s is negative", c.ResyncPeriod)
	}
	// A rescan reads every GPU's files and rebuilds the spec: a period of
	// milliseconds would keep a core busy on a node where nothing changes.
	if c.ResyncPeriod > 0 && c.ResyncPeriod < minResyncPeriod {
		return nil, fmt.Errorf("--resync-period: %s is below %s (0 turns the resync off)", c.ResyncPeriod, minResyncPeriod)
	}
	for _, d := range []struct{ flag, dir string }{{"--kubelet-socket-dir", c.KubeletSocketDir}, {"--cdi-spec-dir", c.CDISpecDir}} {
		if d.dir == "" {
			return nil, fmt.Errorf("%s: must not be empty", d.flag)
		}
		// A missing directory is made at start; something else in its
		// place would fail every write and socket for ever.
		if fi, err := os.Stat(d.dir); err == nil && !fi.IsDir() {
			return nil, fmt.Errorf("%s: %s is not a directory", d.flag, d.dir)
		}
	}

	return []kubeplugin.Option{
		kubeplugin.WithBuilder(b),
		kubeplugin.WithKubeletSocketDir(c.KubeletSocketDir),
		kubeplugin.WithCDISpecDir(c.CDISpecDir),
		kubeplugin.WithSharedDevNum(c.SharedDevNum),
		kubeplugin.WithPolicy(policy),
		kubeplugin.WithStrategies(strategies),
		kubeplugin.WithMonitoring(c.EnableMonitoring),
		kubeplugin.WithAllowIDs(allow),
		kubeplugin.WithDenyIDs(deny),
		kubeplugin.WithResyncPeriod(c.ResyncPeriod),
	}, nil
}

// checkSocketDir refuses a --kubelet-socket-dir too long for the sockets
// in it: the plugin would start and then fail to serve for ever.
func (c *pluginConfig) checkSocketDir() error {
	if n := len(filepath.Clean(c.KubeletSocketDir)); n > kubeplugin.MaxKubeletSocketDirLen {
		return fmt.Errorf("--kubelet-socket-dir: %d bytes is too long: the plugin's socket paths in it must fit the %d bytes of a unix socket address, which leaves %d for the directory",
			n, kubeplugin.MaxSocketPathLen, kubeplugin.MaxKubeletSocketDirLen)
	}
	return nil
}

// parseIDs reads a comma list of PCI device IDs.
func parseIDs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ids []string
	for _, part := range strings.Split(s, ",") {
		id, err := discovery.NormalizeDeviceID(part)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}
