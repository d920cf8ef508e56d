// Package dratest runs the DRA driver as its command wires it (a node model
// with the driver subscribed) inside a test process, against client-go's
// fake clientset and the fake kubelet of test/drakubelet, and builds the
// API objects the tests need: the Node, allocated ResourceClaims.
package dratest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// NodeName is the node the rig's driver runs on.
const NodeName = "gpu-node-1"

// NewClient returns a fake clientset that behaves as the API server does
// where the driver's ResourceSlice controller depends on it: a slice
// created with generateName gets a name, and every create and update gets
// a new resourceVersion (the controller's cache compares them). objects
// are there from the start.
func NewClient(objects ...runtime.Object) *fake.Clientset {
	c := fake.NewSimpleClientset(objects...)
	var (
		mu sync.Mutex
		rv int
	)
	next := func() string {
		mu.Lock()
		defer mu.Unlock()
		rv++
		return strconv.Itoa(rv)
	}
	c.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj, ok := a.(k8stesting.CreateAction).GetObject().(metav1.Object)
		if !ok {
			return false, nil, nil
		}
		if obj.GetName() == "" && obj.GetGenerateName() != "" {
			obj.SetName(obj.GetGenerateName() + next())
		}
		if obj.GetUID() == "" {
			obj.SetUID(types.UID("uid-" + next()))
		}
		obj.SetResourceVersion(next())
		return false, nil, nil
	})
	c.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if obj, ok := a.(k8stesting.UpdateAction).GetObject().(metav1.Object); ok {
			obj.SetResourceVersion(next())
		}
		return false, nil, nil
	})
	return c
}

// Node is the Node object of NodeName.
func Node() *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName, UID: "node-uid-1"}}
}

// Config is the node's and the driver's configuration.
type Config struct {
	Node node.Config
	DRA  dra.Config
}

// Option changes a Config.
type Option func(*Config)

func WithSharedDevNum(n int) Option           { return func(c *Config) { c.DRA.SharedDevNum = n } }
func WithHealthResend(d time.Duration) Option { return func(c *Config) { c.DRA.HealthResend = d } }

// Plugin is a node and its DRA driver.
type Plugin struct {
	Node   *node.Node
	Driver *dra.Driver
	Config Config
}

// New builds both for a fake node rooted at sys and dev, with client as
// the API server. The kubelet directories are root/plugins_registry and
// root/plugins (root must be short enough for socket paths), the spec
// directory root/cdi.
func New(root, sys, dev string, client *fake.Clientset, opts ...Option) (*Plugin, error) {
	b, err := spec.NewBuilder()
	if err != nil {
		return nil, err
	}
	c := Config{Node: node.DefaultConfig(), DRA: dra.DefaultConfig()}
	c.Node.Scanner = discovery.New(discovery.WithSysfsRoot(sys), discovery.WithDevRoot(dev))
	c.Node.Builder = b
	c.Node.CDISpecDir = filepath.Join(root, "cdi")
	c.DRA.NodeName, c.DRA.SysfsRoot, c.DRA.Client = NodeName, sys, client
	c.DRA.RegistrarDir = filepath.Join(root, "plugins_registry")
	c.DRA.PluginsDir = filepath.Join(root, "plugins")
	for _, o := range opts {
		o(&c)
	}
	if err := os.MkdirAll(c.DRA.RegistrarDir, 0o755); err != nil {
		return nil, err
	}
	n, err := node.New(c.Node)
	if err != nil {
		return nil, err
	}
	d, err := dra.New(c.DRA)
	if err != nil {
		return nil, err
	}
	n.Subscribe(d)
	return &Plugin{Node: n, Driver: d, Config: c}, nil
}

// Run runs both until ctx ends, as the command does.
func (p *Plugin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	drvErr := make(chan error, 1)
	go func() {
		err := p.Driver.Run(ctx)
		if err != nil {
			cancel()
		}
		drvErr <- err
	}()
	err := p.Node.Run(ctx)
	cancel()
	return errors.Join(err, <-drvErr)
}

// Result is one allocated device of a claim, for Claim.
type Result = resourceapi.DeviceRequestAllocationResult

// Exclusive allocates device of the node's pool to request.
func Exclusive(request, device string) Result {
	return Result{Request: request, Driver: dra.DefaultDriverName, Pool: NodeName, Device: device}
}

// Shared allocates one share of device, as the scheduler does for a device
// with allowMultipleAllocations.
func Shared(request, device, shareID string, shares int64) Result {
	r := Exclusive(request, device)
	r.ShareID = ptr.To(types.UID(shareID))
	r.ConsumedCapacity = map[resourceapi.QualifiedName]resource.Quantity{dra.CapacityShares: *resource.NewQuantity(shares, resource.DecimalSI)}
	return r
}

// Admin allocates device under admin access, as for a monitoring claim.
func Admin(request, device string) Result {
	r := Exclusive(request, device)
	r.AdminAccess = ptr.To(true)
	return r
}

// Claim is an allocated ResourceClaim, as the scheduler leaves it.
func Claim(namespace, name, uid string, results ...Result) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID(uid)},
		Status: resourceapi.ResourceClaimStatus{
			Allocation: &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: results}},
		},
	}
}

// Devices returns the devices of the node's ResourceSlices of the driver,
// in slice order.
func Devices(ctx context.Context, c *fake.Clientset, driver string) ([]resourceapi.Device, error) {
	l, err := c.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return devicesOf(l.Items, driver), nil
}

func devicesOf(items []resourceapi.ResourceSlice, driver string) []resourceapi.Device {
	items = slices.Clone(items)
	slices.SortFunc(items, func(a, b resourceapi.ResourceSlice) int { return strings.Compare(a.Name, b.Name) })
	var out []resourceapi.Device
	for _, s := range items {
		if s.Spec.Driver == driver && s.Spec.NodeName != nil && *s.Spec.NodeName == NodeName {
			out = append(out, s.Spec.Devices...)
		}
	}
	return out
}

// WaitDevices waits until the node's devices of the driver satisfy ok,
// watching the API server (no polling), and returns them. what names the
// wait in the error when ctx ends first.
func WaitDevices(ctx context.Context, c *fake.Clientset, driver, what string, ok func([]resourceapi.Device) bool) ([]resourceapi.Device, error) {
	w, err := c.ResourceV1().ResourceSlices().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	// The watch starts before the list, so no change between them is missed.
	devs, err := Devices(ctx, c, driver)
	if err != nil {
		return nil, err
	}
	for !ok(devs) {
		select {
		case <-ctx.Done():
			return devs, fmt.Errorf("waiting for ResourceSlices where %s: %w (last: %d devices)", what, ctx.Err(), len(devs))
		case ev, open := <-w.ResultChan():
			if !open {
				return devs, errors.New("ResourceSlice watch closed")
			}
			if ev.Type == watch.Error {
				return devs, fmt.Errorf("ResourceSlice watch: %v", ev.Object)
			}
		}
		if devs, err = Devices(ctx, c, driver); err != nil {
			return nil, err
		}
	}
	return devs, nil
}
