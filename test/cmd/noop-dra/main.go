// Command noop-dra is the floor that intel-gpu-cdi's DRA driver
// (intel-gpu-cdi-dra) is measured against (test/bench): a DRA kubelet
// plugin that does only what the protocol needs, through the same helper
// (k8s.io/dynamic-resource-allocation's kubeletplugin). It registers with
// the kubelet, publishes --devices devices in this node's ResourceSlices,
// answers every NodePrepareResources with one constant CDI name for each
// device the claim was allocated, and every NodeUnprepareResources with
// nothing. It reads no sysfs, writes no spec or checkpoint and reports no
// health, so whatever the real driver costs above it is the price of its
// own work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
)

// CDIName is the answer to every prepared device.
const CDIName = "intel.com/gpu=0000:01:00.0"

type config struct {
	kubeconfig   string
	nodeName     string
	driverName   string
	registrarDir string
	pluginsDir   string
	devices      int
	qps          float64
	burst        int
}

func main() {
	var c config
	flag.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file of the API server (required)")
	flag.StringVar(&c.nodeName, "node-name", "", "this node's name, the pool of the published devices (required)")
	flag.StringVar(&c.driverName, "driver-name", "gpu.intel.com", "the DRA driver name")
	flag.StringVar(&c.registrarDir, "kubelet-registrar-dir", "/var/lib/kubelet/plugins_registry", "where the registration socket goes")
	flag.StringVar(&c.pluginsDir, "kubelet-plugins-dir", "/var/lib/kubelet/plugins", "<dir>/<driver> holds the DRA socket")
	flag.IntVar(&c.devices, "devices", 64, "how many devices to publish")
	flag.Float64Var(&c.qps, "kube-api-qps", 50, "requests per second to the API server")
	flag.IntVar(&c.burst, "kube-api-burst", 100, "requests to the API server in a burst")
	flag.Parse()
	switch {
	case c.kubeconfig == "":
		fail(2, errors.New("--kubeconfig: required"))
	case c.nodeName == "":
		fail(2, errors.New("--node-name: required"))
	case c.devices < 1:
		fail(2, fmt.Errorf("--devices %d: want at least 1", c.devices))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, c); err != nil {
		fail(1, err)
	}
}

func fail(code int, err error) {
	fmt.Fprintf(os.Stderr, "noop-dra: %v\n", err)
	os.Exit(code)
}

func run(ctx context.Context, c config) error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = float32(c.qps), c.burst
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	dataDir := filepath.Join(c.pluginsDir, c.driverName)
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return err
	}
	p := &plugin{driver: c.driverName}
	helper, err := kubeletplugin.Start(ctx, p,
		kubeletplugin.DriverName(c.driverName),
		kubeletplugin.NodeName(c.nodeName),
		kubeletplugin.KubeClient(client),
		kubeletplugin.RegistrarDirectoryPath(c.registrarDir),
		kubeletplugin.PluginDataDirectoryPath(dataDir),
	)
	if err != nil {
		return fmt.Errorf("starting the kubelet plugin: %w", err)
	}
	defer helper.Stop()
	// The first publication waits for the helper's informer to sync with
	// the API server; a signal meanwhile is a stop, not a failure.
	if err := helper.PublishResources(ctx, resources(c.nodeName, c.devices)); err != nil && ctx.Err() == nil {
		return fmt.Errorf("publishing ResourceSlices: %w", err)
	}
	<-ctx.Done()
	return nil
}

// resources is one pool of n devices named as intel-gpu-cdi-dra names
// GPUs, 128 to a slice (the API's limit).
func resources(pool string, n int) resourceslice.DriverResources {
	var slices []resourceslice.Slice
	for i := 0; i < n; i += 128 {
		var s resourceslice.Slice
		for j := i; j < min(n, i+128); j++ {
			s.Devices = append(s.Devices, resourceapi.Device{Name: fmt.Sprintf("gpu-0000-%02x-%02x-0", 1+j/32, j%32)})
		}
		slices = append(slices, s)
	}
	return resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{pool: {Slices: slices}}}
}

// plugin answers from what the claim says alone.
type plugin struct{ driver string }

var _ kubeletplugin.DRAPlugin = (*plugin)(nil)

func (p *plugin) PrepareResourceClaims(_ context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	for _, c := range claims {
		var r kubeletplugin.PrepareResult
		if c.Status.Allocation == nil {
			r.Err = fmt.Errorf("claim %s/%s is not allocated", c.Namespace, c.Name)
		} else {
			for _, a := range c.Status.Allocation.Devices.Results {
				if a.Driver != p.driver {
					continue
				}
				r.Devices = append(r.Devices, kubeletplugin.Device{
					Requests: []string{a.Request}, PoolName: a.Pool, DeviceName: a.Device, CDIDeviceIDs: []string{CDIName},
				})
			}
		}
		out[c.UID] = r
	}
	return out, nil
}

func (p *plugin) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := make(map[types.UID]error, len(claims))
	for _, c := range claims {
		out[c.UID] = nil
	}
	return out, nil
}

func (p *plugin) HandleError(_ context.Context, err error, msg string) {
	fmt.Fprintf(os.Stderr, "noop-dra: %s: %v\n", msg, err)
}

func (p *plugin) WatchHealthStatus(context.Context, chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}
