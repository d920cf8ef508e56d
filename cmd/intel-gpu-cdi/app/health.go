package app

import (
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// healthConfig holds the flags of the GPU health monitor.
type healthConfig struct {
	Sources     string
	StateFile   string
	FatalAER    uint64
	NonfatalAER uint64
	Hangs       uint64
}

func (c *healthConfig) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "health-sources", Value: "all", Usage: "comma list of the kernel's health signals to act on: uevent (listen for kernel uevents; the only way to learn of a wedge), wedge, hangs, aer, gone; or all, or none", EnvVars: env("health-sources"), Destination: &c.Sources},
		&cli.StringFlag{Name: "health-state-file", Usage: "where to keep what only kernel events said (wedges, PCIe error baselines) across restarts, such as /var/run/intel-gpu-cdi/health.json (not in a CDI spec directory); empty keeps it in memory", EnvVars: env("health-state-file"), Destination: &c.StateFile},
		&cli.Uint64Flag{Name: "health-fatal-aer", Value: health.DefaultThresholds.FatalAER, Usage: "fatal PCIe errors since the driver bound that make a GPU unhealthy; 0 never", EnvVars: env("health-fatal-aer"), Destination: &c.FatalAER},
		&cli.Uint64Flag{Name: "health-nonfatal-aer", Value: health.DefaultThresholds.NonfatalAER, Usage: "non-fatal PCIe errors that make a GPU unhealthy; 0 never (they are counted either way)", EnvVars: env("health-nonfatal-aer"), Destination: &c.NonfatalAER},
		&cli.Uint64Flag{Name: "health-hangs", Value: health.DefaultThresholds.Hangs, Usage: "GPU hangs that make a GPU unhealthy; 0 never (a GPU that cannot recover is wedged, which counts)", EnvVars: env("health-hangs"), Destination: &c.Hangs},
	}
}

// monitor builds the health monitor, naming the flag of a bad value.
func (c *healthConfig) monitor(sysfsRoot string, log *slog.Logger) (*health.Monitor, error) {
	sources, err := health.ParseSources(c.Sources)
	if err != nil {
		return nil, fmt.Errorf("--health-sources: %w", err)
	}
	opts := []health.Option{
		health.WithSysfsRoot(sysfsRoot),
		health.WithLogger(log),
		health.WithSources(sources),
		health.WithThresholds(health.Thresholds{FatalAER: c.FatalAER, NonfatalAER: c.NonfatalAER, Hangs: c.Hangs}),
	}
	if c.StateFile != "" {
		opts = append(opts, health.WithStateFile(c.StateFile))
	}
	m, err := health.New(opts...)
	if err != nil {
		if c.StateFile != "" {
			return nil, fmt.Errorf("--health-state-file: %w", err)
		}
		return nil, err
	}
	return m, nil
}
