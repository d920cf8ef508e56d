package app

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

// The spec encodings, for --format's check and completion.
var specFormats = []string{string(spec.FormatJSON), string(spec.FormatYAML)}

// The --by-path modes, for completion.
var byPathModes = []string{string(spec.ByPathSingle), string(spec.ByPathNone)}

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
			"A file is written atomically and left 0644, and only where nothing is or a spec of the same kind is: " +
			"anything else at --output (a directory, a device, a symlink, another file) is refused and left alone. " +
			"With no ready GPU no spec is written and a stale spec of ours at --output is removed.",
		Flags: append(append(common.flags(), specCfg.flags()...),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", Usage: "spec file to write, named .json or .yaml (what runtimes read); - or /dev/stdout for standard output", EnvVars: env("output"), Destination: &output},
			&cli.StringFlag{Name: "format", Usage: "json or yaml; for a file it must agree with the extension (default: the extension's, yaml on standard output)", EnvVars: env("format"), Destination: &format},
		),
		Action: func(c *cli.Context) error {
			log, err := common.logger(c.App.ErrWriter)
			if err != nil {
				return err
			}
			// Every flag is checked before anything is read or written.
			b, err := specCfg.builder()
			if err != nil {
				return err
			}
			path, f, err := outputFormat(output, format, b.Kind())
			if err != nil {
				return err
			}
			scanner, err := common.nodeScanner()
			if err != nil {
				return err
			}
			res, err := scanner.Scan()
			if err != nil {
				return err
			}
			logScan(log, res)

			s, err := b.Build(res.Devices)
			if errors.Is(err, spec.ErrNoDevices) {
				return noDevices(c, b, path)
			}
			if err != nil {
				return err
			}
			if path == "" {
				data, err := spec.Marshal(s, f)
				if err != nil {
					return err
				}
				_, err = c.App.Writer.Write(data)
				return err
			}
			if err := spec.Write(path, s, f); err != nil {
				if errors.Is(err, spec.ErrNotOwned) {
					return fmt.Errorf("--output: %w", err)
				}
				return err
			}
			log.Info("wrote CDI spec", "path", path, "kind", b.Kind(), "cdiVersion", s.Version, "devices", len(s.Devices))
			return nil
		},
	}
}

// outputFormat reads --output and --format: the file to write ("" for
// standard output) and its encoding. A file must be ours to replace (see
// spec.CheckOwner) and named as runtimes read it: they pick a spec file's
// encoding by its extension and skip any other name, so the extension
// decides and --format may only agree with it.
func outputFormat(output, format, kind string) (path string, f spec.Format, err error) {
	if format != "" {
		if f, err = spec.ParseFormat(format); err != nil {
			return "", "", fmt.Errorf("--format: %w", err)
		}
	}
	if output == "-" || output == "/dev/stdout" {
		if f == "" {
			f = spec.FormatYAML
		}
		return "", f, nil
	}
	if output == "" {
		return "", "", fmt.Errorf("--output: must not be empty (- is standard output)")
	}
	// What is at the path first: "-o /dev/null" is refused as the device
	// it is, not for its name.
	if _, err := spec.CheckOwner(output, kind); err != nil {
		return "", "", fmt.Errorf("--output: %w", err)
	}
	byExt, err := spec.FormatOf(output)
	if err != nil {
		return "", "", fmt.Errorf("--output: %w", err)
	}
	if f != "" && f != byExt {
		return "", "", fmt.Errorf("--format %s contradicts --output %s: runtimes read a %s file as %s", format, output, filepath.Ext(output), byExt)
	}
	return output, byExt, nil
}

// noDevices handles a node with no ready GPU: a spec needs a device, so
// none is written, and a spec of ours left from before is removed so that
// runtimes stop offering GPUs that are gone. The node's roots were checked
// before the scan: a wrong root never gets here.
func noDevices(c *cli.Context, b *spec.Builder, path string) error {
	fmt.Fprintln(c.App.ErrWriter, "intel-gpu-cdi: no ready Intel GPU found; no CDI spec written")
	if path == "" {
		return nil
	}
	removed, err := spec.RemoveStale(path, b.Kind())
	if err != nil {
		if errors.Is(err, spec.ErrNotOwned) {
			return fmt.Errorf("--output: %w", err)
		}
		return err
	}
	if removed {
		fmt.Fprintf(c.App.ErrWriter, "intel-gpu-cdi: removed the stale CDI spec %s\n", path)
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
