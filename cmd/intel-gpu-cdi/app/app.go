// Package app builds the intel-gpu-cdi command line: flags, environment
// variables and the wiring of each subcommand. The work itself lives in the
// cdi and kubeplugin packages.
package app

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

// Version is set at build time with
// -ldflags "-X github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app.Version=…".
var Version = "dev"

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "INTEL_GPU_CDI_"

// env returns the environment variable that sets a flag: --sysfs-root is
// INTEL_GPU_CDI_SYSFS_ROOT.
func env(flag string) []string {
	return []string{EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

func init() {
	// urfave/cli's own --version has the alias -v, which is --verbose here.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version and exit"}
	cli.VersionPrinter = func(c *cli.Context) { _ = PrintVersion(c.App.Writer, c.App.Name) }
}

// New returns the intel-gpu-cdi application. Run it with Main, which maps
// its errors to exit statuses; running it directly (in tests) returns them.
// extra commands come after the built-in ones (a build variant adds the
// DRA driver so).
func New(extra ...*cli.Command) *cli.App {
	// global receives the common flags given before the command; each
	// command's own copy of them starts from it (see Conventions).
	var global commonConfig
	a := &cli.App{
		Name:    "intel-gpu-cdi",
		Usage:   "make Intel GPUs (i915, xe) usable from containers through CDI",
		Version: Version,
		Description: "list finds the Intel GPUs of this node, generate writes their CDI spec, " +
			"plugin serves them to the kubelet as gpu.intel.com/i915 and gpu.intel.com/xe.",
		Flags: global.flags(),
		Commands: append([]*cli.Command{
			listCommand(),
			generateCommand(),
			pluginCommand(),
			versionCommand(),
			completionCommand(),
			completeCommand(),
		}, extra...),
		// With no command: the help, on stdout, as asked for.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErrorf(c, "unknown command %q", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		OnUsageError: onUsageError,
		// Errors go back to Main, which alone decides the exit status:
		// the default handler calls os.Exit from inside the library.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	Conventions(a)
	return a
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			return PrintVersion(c.App.Writer, "intel-gpu-cdi")
		},
	}
}

// PrintVersion prints a binary's name, the version, the Go version and the
// platform.
func PrintVersion(w io.Writer, name string) error {
	_, err := fmt.Fprintf(w, "%s %s (%s, %s/%s)\n", name, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// commonConfig holds the flags every subcommand takes: where to read the
// node from and how to log.
type commonConfig struct {
	SysfsRoot string
	DevRoot   string
	LogLevel  string
	LogFormat string
	Verbose   bool
}

func (c *commonConfig) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "sysfs-root", Value: "/sys", Usage: "where sysfs is mounted", EnvVars: env("sysfs-root"), Destination: &c.SysfsRoot},
		&cli.StringFlag{Name: "dev-root", Value: "/dev", Usage: "where the device nodes are (the spec's hostPaths start here)", EnvVars: env("dev-root"), Destination: &c.DevRoot},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: env("log-level"), Destination: &c.LogLevel},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: env("log-format"), Destination: &c.LogFormat},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log at debug level (same as --log-level debug)", EnvVars: env("verbose"), Destination: &c.Verbose},
	}
}

// checkRoots makes --sysfs-root and --dev-root absolute and checks that
// they are directories. Every path read and every hostPath written starts
// there: a relative dev root would put relative hostPaths in the spec, and
// a mistyped root would read as a node without GPUs.
func (c *commonConfig) checkRoots() error {
	for _, r := range []struct {
		flag string
		path *string
	}{{"--sysfs-root", &c.SysfsRoot}, {"--dev-root", &c.DevRoot}} {
		if *r.path == "" {
			return fmt.Errorf("%s: must not be empty", r.flag)
		}
		abs, err := filepath.Abs(*r.path)
		if err != nil {
			return fmt.Errorf("%s: %w", r.flag, err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return fmt.Errorf("%s: %w", r.flag, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: %s is not a directory", r.flag, abs)
		}
		*r.path = abs
	}
	return nil
}

// nodeScanner checks the root flags (checkRoots, then
// discovery.CheckRoots) and returns the scanner of that node. A root that
// is not a node is an error naming its flag: a scan of it would find no
// GPU, and list and generate would report, or act on, a node without any.
func (c *commonConfig) nodeScanner() (*discovery.Scanner, error) {
	if err := c.checkRoots(); err != nil {
		return nil, err
	}
	s := c.scanner()
	if err := s.CheckRoots(); err != nil {
		return nil, rootFlagError(err)
	}
	return s, nil
}

// rootFlagError names the flag of the root discovery.CheckRoots refused.
func rootFlagError(err error) error {
	var re *discovery.RootError
	if !errors.As(err, &re) {
		return err
	}
	flag := "--sysfs-root"
	if re.Root == discovery.RootDev {
		flag = "--dev-root"
	}
	return fmt.Errorf("%s %s: %w", flag, re.Path, re.Err)
}

// scanner reads the node below the roots the flags give.
func (c *commonConfig) scanner() *discovery.Scanner {
	return discovery.New(discovery.WithSysfsRoot(c.SysfsRoot), discovery.WithDevRoot(c.DevRoot))
}

// The values of the logging flags, for their checks and for completion.
var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

// logger builds the process logger from the logging flags.
func (c *commonConfig) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if !slices.Contains(logLevels, strings.ToLower(c.LogLevel)) || level.UnmarshalText([]byte(c.LogLevel)) != nil {
		return nil, fmt.Errorf("--log-level: invalid level %q: want %s", c.LogLevel, strings.Join(logLevels, ", "))
	}
	if c.Verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: invalid format %q: want %s", c.LogFormat, strings.Join(logFormats, " or "))
}

// specConfig holds the flags that shape the CDI spec.
type specConfig struct {
	Vendor string
	Class  string
	ByPath string
}

func (c *specConfig) flags() []cli.Flag {
	return append(c.kindFlags(),
		&cli.StringFlag{Name: "by-path", Value: "single", Usage: "by-path links in the spec: single (each GPU's own links) or none", EnvVars: env("by-path"), Destination: &c.ByPath},
	)
}

// kindFlags are the flags that make the CDI kind, which list needs too to
// show the names generate gives.
func (c *specConfig) kindFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "vendor", Value: "intel.com", Usage: "vendor part of the CDI kind", EnvVars: env("vendor"), Destination: &c.Vendor},
		&cli.StringFlag{Name: "class", Value: "gpu", Usage: "class part of the CDI kind", EnvVars: env("class"), Destination: &c.Class},
	}
}
