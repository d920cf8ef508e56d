package plugin_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// waitFor bounds every wait in these tests. It is a deadline for a hang,
// not a speed goal: speed is measured by the benchmarks.
const waitFor = 10 * time.Second

// rig is a running plugin on a fake node, with a fake kubelet.
type rig struct {
	t       testing.TB
	node    *fakenode.Node
	kubelet *fakekubelet.Kubelet
	specDir string
	plugin  *plugintest.Plugin
	cancel  context.CancelFunc
	done    chan error
}

// startRig builds a fake node with the fixtures, starts a fake kubelet and
// the plugin with opts, and stops both when the test ends.
func startRig(t testing.TB, fixtures []func(*fakenode.Node) error, opts ...plugintest.Option) *rig {
	t.Helper()
	node := fakenode.NewT(t)
	node.MustApply(t, fixtures...)
	return startRigOn(t, node, opts...)
}

// startRigOn starts a fake kubelet and the plugin on an existing node.
func startRigOn(t testing.TB, node *fakenode.Node, opts ...plugintest.Option) *rig {
	t.Helper()
	sockDir := testenv.SocketDir(t)
	k, err := fakekubelet.Start(sockDir)
	require.NoError(t, err)
	t.Cleanup(k.Stop)

	r := &rig{t: t, node: node, kubelet: k, specDir: specDir(t)}
	all := append([]plugintest.Option{
		plugintest.WithScanner(scannerOf(node)),
		plugintest.WithKubeletSocketDir(sockDir),
		plugintest.WithCDISpecDir(r.specDir),
	}, opts...)
	r.plugin, err = plugintest.New(all...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan error, 1)
	go func() { r.done <- r.plugin.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// stop ends the plugin and checks it returned cleanly.
func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		require.NoError(r.t, err, "plugin Run")
	case <-time.After(waitFor):
		r.t.Fatal("plugin did not stop")
	}
}

func (r *rig) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	r.t.Cleanup(cancel)
	return ctx
}

// registered waits for the n-th registration of resource and dials it.
func (r *rig) registered(resource string, n int) (*pluginapi.RegisterRequest, *fakekubelet.Client) {
	r.t.Helper()
	req, err := r.kubelet.WaitRegistration(r.ctx(), resource, n)
	require.NoError(r.t, err)
	c, err := r.kubelet.Dial(req.Endpoint)
	require.NoError(r.t, err)
	r.t.Cleanup(func() { c.Close() })
	return req, c
}

// watch opens ListAndWatch on c.
func (r *rig) watch(c *fakekubelet.Client) <-chan []*pluginapi.Device {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(cancel)
	ch, err := c.Watch(ctx)
	require.NoError(r.t, err)
	return ch
}

// nextList waits for a list that satisfies ok and returns it.
func (r *rig) nextList(ch <-chan []*pluginapi.Device, what string, ok func([]*pluginapi.Device) bool) []*pluginapi.Device {
	r.t.Helper()
	return fakekubelet.NextList(r.t, ch, waitFor, what, ok, nil)
}

var (
	ids      = fakekubelet.IDs
	cdiNames = fakekubelet.CDINames
)

func allocate(ctx context.Context, c *fakekubelet.Client, idsPerContainer ...[]string) (*pluginapi.AllocateResponse, error) {
	return c.AllocateIDs(ctx, idsPerContainer...)
}

// specDir returns a spec directory on tmpfs where there is one, as
// /var/run/cdi is on most distributions, so fsync costs what it costs there.
func specDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "intel-gpu-cdi-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return filepath.Join(d, "cdi")
		}
	}
	return filepath.Join(t.TempDir(), "cdi")
}

// scannerOf reads a fake node.
func scannerOf(n *fakenode.Node) *discovery.Scanner {
	return discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev))
}

// ctxWithin returns a context that ends after d or with the test.
func ctxWithin(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// debounce is how long the node collects a burst of events.
func (r *rig) debounce() time.Duration { return node.DefaultDebounce }
