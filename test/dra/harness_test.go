// Package dra_test runs the DRA driver in-process on fake nodes: the node
// model with the driver subscribed, client-go's fake clientset as the API
// server, and test/drakubelet as the kubelet, over the real gRPC APIs.
package dra_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// waitFor bounds every wait in these tests. It is a deadline for a hang,
// not a speed goal: speed is measured by the benchmarks.
const waitFor = 10 * time.Second

func TestMain(m *testing.M) {
	if root := os.Getenv(childEnv); root != "" {
		os.Exit(runChild(root))
	}
	goleak.VerifyTestMain(m,
		// klog starts its flush daemon once, for the life of the process.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

// rig is a running driver on a fake node, with a fake API server.
type rig struct {
	t      testing.TB
	node   *fakenode.Node
	root   string
	client *fake.Clientset
	plugin *dratest.Plugin
	cancel context.CancelFunc
	done   chan error
}

// startRig builds a fake node with the fixtures and starts the driver on
// it with opts; it stops when the test ends.
func startRig(t testing.TB, fixtures []func(*fakenode.Node) error, opts ...dratest.Option) *rig {
	t.Helper()
	n := fakenode.NewT(t)
	n.MustApply(t, fixtures...)
	return startRigOn(t, n, shortTempDir(t), dratest.NewClient(dratest.Node()), opts...)
}

// startRigOn starts the driver on an existing node, kubelet root and API
// server: a restart is another rig on the same three.
func startRigOn(t testing.TB, n *fakenode.Node, root string, client *fake.Clientset, opts ...dratest.Option) *rig {
	t.Helper()
	p, err := dratest.New(root, n.Sys, n.Dev, client, opts...)
	require.NoError(t, err)
	r := &rig{t: t, node: n, root: root, client: client, plugin: p, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// stop ends the driver and checks it returned cleanly.
func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		require.NoError(r.t, err, "driver Run")
	case <-time.After(waitFor):
		r.t.Fatal("driver did not stop")
	}
}

func (r *rig) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	r.t.Cleanup(cancel)
	return ctx
}

func (r *rig) cfg() *dra.Config { return &r.plugin.Config.DRA }

// register plays the kubelet's plugin watcher and returns the registered
// plugin.
func (r *rig) register() *drakubelet.Plugin {
	r.t.Helper()
	k, err := drakubelet.Register(r.ctx(), r.cfg().RegistrationSocket())
	require.NoError(r.t, err)
	r.t.Cleanup(func() { k.Close() })
	return k
}

// devices waits for the node's published devices to satisfy ok.
func (r *rig) devices(what string, ok func([]resourceapi.Device) bool) []resourceapi.Device {
	r.t.Helper()
	devs, err := dratest.WaitDevices(r.ctx(), r.client, r.cfg().DriverName, what, ok)
	require.NoError(r.t, err)
	return devs
}

// create stores claims in the API server, as the scheduler leaves them.
func (r *rig) create(claims ...*resourceapi.ResourceClaim) {
	r.t.Helper()
	for _, c := range claims {
		_, err := r.client.ResourceV1().ResourceClaims(c.Namespace).Create(r.ctx(), c, metav1.CreateOptions{})
		require.NoError(r.t, err)
	}
}

// deleteClaim removes a claim from the API server.
func (r *rig) deleteClaim(c *resourceapi.ResourceClaim) {
	r.t.Helper()
	require.NoError(r.t, r.client.ResourceV1().ResourceClaims(c.Namespace).Delete(r.ctx(), c.Name, metav1.DeleteOptions{}))
}

// prepare asks the driver to prepare the claims and returns its answer per
// claim.
func prepare(t testing.TB, k *drakubelet.Plugin, claims ...*resourceapi.ResourceClaim) map[string]*drapb.NodePrepareResourceResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := k.Prepare(ctx, claims...)
	require.NoError(t, err)
	require.Len(t, resp.Claims, len(claims))
	return resp.Claims
}

func unprepare(t testing.TB, k *drakubelet.Plugin, claims ...*resourceapi.ResourceClaim) map[string]*drapb.NodeUnprepareResourceResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := k.Unprepare(ctx, claims...)
	require.NoError(t, err)
	require.Len(t, resp.Claims, len(claims))
	return resp.Claims
}

// cdiIDs lists the CDI names of a prepared claim's devices.
func cdiIDs(r *drapb.NodePrepareResourceResponse) []string {
	var out []string
	for _, d := range r.Devices {
		out = append(out, d.CdiDeviceIds...)
	}
	return out
}

// checkpointClaims reads the UIDs in the driver's checkpoint file.
func checkpointClaims(t testing.TB, path string) map[string]json.RawMessage {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var f struct {
		Claims map[string]json.RawMessage `json:"claims"`
	}
	require.NoError(t, json.Unmarshal(data, &f), "checkpoint %s", data)
	return f.Claims
}

// shortTempDir returns a directory with a path short enough for unix
// sockets (108 bytes), removed when the test ends.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dra")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// specDevices lists the device names in the node's CDI spec on disk.
func specDevices(t testing.TB, root string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "cdi", "intel.com-gpu.json"))
	require.NoError(t, err)
	var s struct {
		Devices []struct {
			Name string `json:"name"`
		} `json:"devices"`
	}
	require.NoError(t, json.Unmarshal(data, &s))
	out := map[string]bool{}
	for _, d := range s.Devices {
		out[d.Name] = true
	}
	return out
}

func byName(devs []resourceapi.Device) map[string]resourceapi.Device {
	out := map[string]resourceapi.Device{}
	for _, d := range devs {
		out[d.Name] = d
	}
	return out
}

var listAll = metav1.ListOptions{}
