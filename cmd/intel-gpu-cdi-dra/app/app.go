// Package app builds the command line of the DRA driver: the node flags it
// shares with `intel-gpu-cdi plugin`, its own, and the wiring of the node
// model, the DRA driver and the optional endpoints. It is its own binary,
// intel-gpu-cdi-dra, so that the device plugin's binary does not link
// client-go (see BENCHMARKS.md, "One binary or two").
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/go-logr/logr"
	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	cdiapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// Name is the binary's name.
const Name = "intel-gpu-cdi-dra"

const (
	usage       = "serve the node's Intel GPUs to the kubelet through Dynamic Resource Allocation (resource.k8s.io/v1)"
	description = "Writes the node's CDI spec to --cdi-spec-dir, publishes one device per GPU in this node's " +
		"ResourceSlices, registers with the kubelet in --kubelet-registrar-dir and answers NodePrepareResources " +
		"with CDI device names. Keeps prepared claims in a checkpoint in --kubelet-plugins-dir/<driver>. " +
		"Watches /dev/dri for GPUs coming and going. Refuses to start where the device plugin serves the same " +
		"GPUs (a live socket of ours in --kubelet-socket-dir). Stops on SIGTERM or SIGINT, leaving the spec in place."
)

// config holds the flags.
type config struct {
	cdiapp.NodeFlags
	DRA              dra.Config
	KubeletSocketDir string
	Kubeconfig       string
	KubeAPIQPS       float64
	KubeAPIBurst     int
}

// Client-side rate limits of the API client. Every Prepare reads its claim
// from the API server: client-go's own default of 5 requests per second
// makes the pods that start together on a node wait 200 ms each for the
// one before.
const (
	defaultKubeAPIQPS   = 50
	defaultKubeAPIBurst = 100
)

// fieldFlags maps the DRA driver's configuration fields to their flags.
var fieldFlags = map[string]string{
	"DriverName":   "--driver-name",
	"NodeName":     "--node-name",
	"RegistrarDir": "--kubelet-registrar-dir",
	"PluginsDir":   "--kubelet-plugins-dir",
	"SharedDevNum": "--shared-dev-num",
	"SysfsRoot":    "--sysfs-root",
}

func (c *config) flags() []cli.Flag {
	c.DRA = dra.DefaultConfig()
	env := cdiapp.EnvVars
	return append(c.NodeFlags.Flags(),
		&cli.StringFlag{Name: "node-name", Usage: "this node's name (in a DaemonSet, from the downward API: spec.nodeName)", EnvVars: env("node-name"), Destination: &c.DRA.NodeName},
		&cli.StringFlag{Name: "driver-name", Value: c.DRA.DriverName, Usage: "the DRA driver name that DeviceClasses select on", EnvVars: env("driver-name"), Destination: &c.DRA.DriverName},
		cdiapp.KubeletRegistrarDirFlag(&c.DRA.RegistrarDir, c.DRA.RegistrarDir, "the kubelet's plugins_registry directory, where the registration socket <driver>-reg.sock goes; the same path inside and outside the container"),
		&cli.StringFlag{Name: "kubelet-plugins-dir", Value: c.DRA.PluginsDir, Usage: "the kubelet's plugins directory; <dir>/<driver> holds dra.sock and the checkpoint; the same path inside and outside the container", EnvVars: env("kubelet-plugins-dir"), Destination: &c.DRA.PluginsDir},
		cdiapp.KubeletSocketDirFlag(&c.KubeletSocketDir),
		cdiapp.SharedDevNumFlag(&c.DRA.SharedDevNum, "how many claims may share one GPU (consumable capacity \"shares\"); 1 makes every GPU exclusive"),
		&cli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig file to reach the API server with; empty uses the pod's service account", EnvVars: env("kubeconfig"), Destination: &c.Kubeconfig},
		&cli.Float64Flag{Name: "kube-api-qps", Value: defaultKubeAPIQPS, Usage: "requests per second to the API server, sustained (each Prepare reads its claim)", EnvVars: env("kube-api-qps"), Destination: &c.KubeAPIQPS},
		&cli.IntFlag{Name: "kube-api-burst", Value: defaultKubeAPIBurst, Usage: "requests to the API server in a burst above --kube-api-qps", EnvVars: env("kube-api-burst"), Destination: &c.KubeAPIBurst},
	)
}

// Command is the DRA driver as a subcommand, for a build of intel-gpu-cdi
// that holds both (only measured: see BENCHMARKS.md).
func Command() *cli.Command {
	var c config
	return &cli.Command{
		Name: "dra", Usage: usage, Description: description, Flags: c.flags(),
		Action: func(ctx *cli.Context) error { return c.run(ctx.Context, ctx.App.ErrWriter) },
	}
}

// New returns the intel-gpu-cdi-dra application: the driver runs without
// a subcommand; `version` prints the version.
// It follows the command line conventions of intel-gpu-cdi (run it with
// cdiapp.Run): usage errors exit 2 with nothing on stdout, an empty
// variable is no setting, arguments are refused, --version is global.
func New() *cli.App {
	var c config
	a := &cli.App{
		Name: Name, Usage: usage, Description: description, Version: cdiapp.Version,
		Flags:  c.flags(),
		Action: cdiapp.NoArgs(func(ctx *cli.Context) error { return c.run(ctx.Context, ctx.App.ErrWriter) }),
		Commands: []*cli.Command{{
			Name:   "version",
			Usage:  "print the version",
			Action: func(ctx *cli.Context) error { return cdiapp.PrintVersion(ctx.App.Writer, Name) },
		}},
	}
	cdiapp.Conventions(a)
	return a
}

// complete checks every flag, so that a bad value stops start-up with an
// error naming its flag before anything is written or served.
func (c *config) complete(errw io.Writer) (*slog.Logger, error) {
	log, err := c.NodeFlags.Complete(errw)
	if err != nil {
		return nil, err
	}
	c.DRA.SysfsRoot, c.DRA.Logger = c.NodeFlags.SysfsRoot(), log
	if err := c.DRA.Validate(); err != nil {
		return nil, cdiapp.FieldFlagError(err, fieldFlags)
	}
	// The kubelet makes its registry directory; a missing one means the
	// kubelet's directory is not mounted where the flag says.
	if fi, err := os.Stat(c.DRA.RegistrarDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("--kubelet-registrar-dir: %s is not a directory (is the kubelet's plugins_registry mounted there?)", c.DRA.RegistrarDir)
	}
	if fi, err := os.Stat(c.DRA.PluginsDir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("--kubelet-plugins-dir: %s is not a directory", c.DRA.PluginsDir)
	}
	if c.KubeletSocketDir == "" {
		return nil, fmt.Errorf("--kubelet-socket-dir: must not be empty")
	}
	if !filepath.IsAbs(c.KubeletSocketDir) {
		return nil, fmt.Errorf("--kubelet-socket-dir: %q is not an absolute path", c.KubeletSocketDir)
	}
	// A test brings its own API server.
	if c.DRA.Client == nil {
		rc, err := c.restConfig()
		if err != nil {
			return nil, err
		}
		if c.DRA.Client, err = kubernetes.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
	}
	return log, nil
}

// restConfig reaches the API server through --kubeconfig, or else as the
// pod's service account.
func (c *config) restConfig() (*rest.Config, error) {
	if c.KubeAPIQPS <= 0 {
		return nil, fmt.Errorf("--kube-api-qps: %v is not positive", c.KubeAPIQPS)
	}
	if c.KubeAPIBurst < 1 {
		return nil, fmt.Errorf("--kube-api-burst: %d is below 1", c.KubeAPIBurst)
	}
	var rc *rest.Config
	var err error
	if c.Kubeconfig != "" {
		if rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
	} else if rc, err = rest.InClusterConfig(); err != nil {
		return nil, fmt.Errorf("--kubeconfig: none given, and not in a pod: %w", err)
	}
	rc.QPS, rc.Burst = float32(c.KubeAPIQPS), c.KubeAPIBurst
	rc.UserAgent = Name + "/" + cdiapp.Version
	return rc, nil
}

// refuseBesideDevicePlugin stops the driver where our device plugin serves
// the node's GPUs: one of its sockets accepts connections.
func (c *config) refuseBesideDevicePlugin() error {
	return conflict.Check(c.KubeletSocketDir, "the device plugin (intel-gpu-cdi plugin)", deviceplugin.SocketNames()...)
}

// run wires the node, the DRA driver and the optional endpoints, and
// serves until a signal or ctx ends it.
func (c *config) run(parent context.Context, errw io.Writer) error {
	log, err := c.complete(errw)
	if err != nil {
		return err
	}
	if err := c.refuseBesideDevicePlugin(); err != nil {
		return err
	}
	// client-go and the kubelet plugin helper log through klog.
	klog.SetLogger(logr.FromSlogHandler(log.Handler()))

	var obs *metrics.Metrics
	if c.MetricsAddress != "" {
		obs = metrics.New()
		c.Node.Observer = obs
	}
	n, err := node.New(c.Node)
	if err != nil {
		return err
	}
	d, err := dra.New(c.DRA)
	if err != nil {
		return cdiapp.FieldFlagError(err, fieldFlags)
	}
	n.Subscribe(d)

	return c.Serve(parent, log, n, obs, cdiapp.KubeletPlugin{Name: "DRA driver", Ready: d.Ready, Run: d.Run},
		"starting DRA driver", "version", cdiapp.Version, "driver", c.DRA.DriverName, "node", c.DRA.NodeName,
		"sysfs", c.Node.Scanner.SysfsRoot(), "dev", c.Node.Scanner.DevRoot(), "spec", n.SpecPath(),
		"registration", c.DRA.RegistrationSocket(), "dra", c.DRA.DRASocket())
}
