package app

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

func generateCommand() *cli.Command {
	var (
		common  commonConfig
		specCfg specConfig
		output  string
		format  string
	)
	return &cli.Command{
		Name:  "generate",
		Usage: "write the CDI spec of this node's Intel GPUs",
		Description: "Writes a spec with two devices per ready GPU (cardN and its PCI address) and \"all\". " +
			"A file is written atomically and left 0644. With no ready GPU no spec is written and a stale " +
			"spec of ours at --output is removed.",
		Flags: append(append(common.flags(), specCfg.flags()...),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", Usage: "spec file to write, - for stdout", EnvVars: env("output"), Destination: &output},
			&cli.StringFlag{Name: "format", Usage: "json or yaml (default: from the --output extension, else yaml)", EnvVars: env("format"), Destination: &format},
		),
		Action: func(c *cli.Context) error {
			log, err := common.logger(c.App.ErrWriter)
			if err != nil {
				return err
			}
			if err := common.checkRoots(); err != nil {
				return err
			}
			// Every flag is checked before anything is read or written.
			b, err := specCfg.builder()
			if err != nil {
				return err
			}
			f := spec.FormatYAML
			if format != "" {
				if f, err = spec.ParseFormat(format); err != nil {
					return fmt.Errorf("--format: %w", err)
				}
			}
			if output != "-" {
				ext, err := spec.FormatOf(output)
				if err != nil {
					return fmt.Errorf("--output: %w", err)
				}
				if format != "" && f != ext {
					return fmt.Errorf("--format %s contradicts --output %s", format, output)
				}
				f = ext
			}
			res, err := common.scanner().Scan()
			if err != nil {
				return err
			}
			logScan(log, res)

			s, err := b.Build(res.Devices)
			if errors.Is(err, spec.ErrNoDevices) {
				return noDevices(c, log, b, output)
			}
			if err != nil {
				return err
			}
			if output == "-" {
				data, err := spec.Marshal(s, f)
				if err != nil {
					return err
				}
				if err := spec.Validate(data); err != nil {
					return err
				}
				_, err = c.App.Writer.Write(data)
				return err
			}
			if err := spec.Write(output, s, f); err != nil {
				return err
			}
			log.Info("wrote CDI spec", "path", output, "kind", b.Kind(), "cdiVersion", s.Version, "devices", len(s.Devices))
			return nil
		},
	}
}

// noDevices handles a node with no ready GPU: a spec needs a device, so
// none is written, and a spec of ours left from before is removed so that
// runtimes stop offering GPUs that are gone.
func noDevices(c *cli.Context, log *slog.Logger, b *spec.Builder, output string) error {
	fmt.Fprintln(c.App.ErrWriter, "intel-gpu-cdi: no ready Intel GPU found; no CDI spec written")
	if output == "-" {
		return nil
	}
	removed, err := spec.RemoveStale(output, b.Kind())
	if err != nil {
		return err
	}
	if removed {
		log.Info("removed stale CDI spec", "path", output)
	}
	return nil
}

func (c *specConfig) builder() (*spec.Builder, error) {
	byPath, err := spec.ParseByPath(c.ByPath)
	if err != nil {
		return nil, fmt.Errorf("--by-path: %w", err)
	}
	b, err := spec.NewBuilder(spec.WithVendor(c.Vendor), spec.WithClass(c.Class), spec.WithByPath(byPath))
	if err != nil {
		return nil, fmt.Errorf("--vendor/--class: %w", err)
	}
	return b, nil
}

// logScan reports what the scan left out: skipped cards at warn (something
// is wrong on the node), ignored ones at debug (not ours).
func logScan(log *slog.Logger, res *discovery.Result) {
	for _, s := range res.Skipped {
		log.Warn("skipped DRM card", "card", s.Name, "reason", s.Reason)
	}
	for _, s := range res.Ignored {
		log.Debug("not an Intel GPU", "card", s.Name, "reason", s.Reason)
	}
	for i := range res.Devices {
		if d := &res.Devices[i]; !d.Usable() {
			log.Info("GPU not handed out", "card", d.Card, "pci", d.PCIAddress, "reason", d.Reason)
		}
	}
}
