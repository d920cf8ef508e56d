package plugin_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// demoI915 are the i915 GPUs of fakenode.Demo.
var demoI915 = []string{"0000:00:02.0", "0000:03:00.0"}

func healthOf(ids []string, health string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id + "/" + health
	}
	return out
}

// TestRemovingAndRecreatingDevDRIIsSeenEachTimeWithoutAResync removes the
// whole <dev-root>/dri directory, as devtmpfs does when the last DRM node
// goes (a driver reload), and creates it again, five times, with the
// resync off: only events can tell the plugin, and the list must follow
// each removal and each re-creation.
func TestRemovingAndRecreatingDevDRIIsSeenEachTimeWithoutAResync(t *testing.T) {
	r := startRig(t, demo, plugintest.WithResyncPeriod(0))
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "both healthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), healthOf(demoI915, "Healthy"))
	})
	dri := filepath.Join(r.node.Dev, "dri")
	for round := range 5 {
		start := time.Now()
		require.NoError(t, os.RemoveAll(dri))
		r.nextList(ch, "every GPU unhealthy once dri is gone", func(l []*pluginapi.Device) bool {
			return slices.Equal(ids(l), healthOf(demoI915, "Unhealthy"))
		})
		gone := time.Since(start)

		start = time.Now()
		for _, pci := range append(slices.Clone(demoI915), "0000:07:00.0") {
			require.NoError(t, r.node.AddDevNodes(pci))
		}
		r.nextList(ch, "every GPU healthy once dri is back", func(l []*pluginapi.Device) bool {
			return slices.Equal(ids(l), healthOf(demoI915, "Healthy"))
		})
		t.Logf("round %d: dri removed -> list %s, re-created -> list %s", round, gone.Round(time.Microsecond), time.Since(start).Round(time.Microsecond))
	}
}

// TestRemovingAndRecreatingTheKubeletSocketDirIsSeen removes the kubelet's
// device-plugin directory with the kubelet stopped and creates it again
// with a new kubelet: the plugin must serve and register again, without a
// resync.
func TestRemovingAndRecreatingTheKubeletSocketDirIsSeen(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU}, plugintest.WithResyncPeriod(0))
	r.registered(deviceplugin.ResourceI915, 1)
	dir := r.kubelet.Dir()
	for round := range 3 {
		r.kubelet.Stop()
		require.NoError(t, os.RemoveAll(dir))
		require.NoError(t, os.Mkdir(dir, 0o750))
		k, err := fakekubelet.Start(dir)
		require.NoError(t, err)
		t.Cleanup(k.Stop)
		r.kubelet = k
		_, c := r.registered(deviceplugin.ResourceI915, 1)
		l := r.nextList(r.watch(c), "the iGPU", func(l []*pluginapi.Device) bool { return len(l) == 1 })
		assert.Equal(t, "0000:00:02.0", l[0].ID, "round %d", round)
	}
}

// TestTheKubeletSocketDirNeedNotExistAtStart starts the plugin before the
// kubelet has made its directory: the plugin waits for it instead of
// creating it or failing, and registers once the kubelet is there.
func TestTheKubeletSocketDirNeedNotExistAtStart(t *testing.T) {
	parent := testenv.SocketDir(t)
	dir := filepath.Join(parent, "dp")
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.IGPU)
	p, err := plugintest.New(
		plugintest.WithScanner(scannerOf(n)),
		plugintest.WithKubeletSocketDir(dir),
		plugintest.WithCDISpecDir(specDir(t)),
		plugintest.WithResyncPeriod(0),
	)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	require.Eventually(t, func() bool { return p.Node.Ready() == nil }, waitFor, time.Millisecond, "the spec written while there is no kubelet")
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "the plugin does not make the kubelet's directory")
	assert.Error(t, p.DevicePlugin.Ready(), "not ready without a kubelet")

	require.NoError(t, os.Mkdir(dir, 0o750))
	k, err := fakekubelet.Start(dir)
	require.NoError(t, err)
	t.Cleanup(k.Stop)
	req, err := k.WaitRegistration(ctxWithin(t, waitFor), deviceplugin.ResourceI915, 1)
	require.NoError(t, err)
	assert.Equal(t, "intel-gpu-cdi-i915.sock", req.Endpoint)
	require.Eventually(t, func() bool { return p.DevicePlugin.Ready() == nil }, waitFor, time.Millisecond, "ready once registered")
}

// specWitness is a subscriber placed after the device plugin: it sees each
// snapshot at the moment the device plugin has just published it, and
// records which of the snapshot's GPUs the spec on disk holds then.
type specWitness struct {
	path string
	mu   sync.Mutex
	seen []witnessed
}

type witnessed struct {
	healthy []string // healthy GPUs listed
	inSpec  []string // device names in the spec on disk
}

func (w *specWitness) Update(_ context.Context, s *node.Snapshot) error {
	var seen witnessed
	for _, g := range s.Healthy() {
		seen.healthy = append(seen.healthy, g.PCIAddress())
	}
	if spec, err := cdiapi.ReadSpec(w.path, 0); err == nil {
		for _, d := range spec.Devices {
			seen.inSpec = append(seen.inSpec, d.Name)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, seen)
	return nil
}

func (w *specWitness) all() []witnessed {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

// TestHotplugAddsTheSpecBeforeTheListAndRemovesTheListBeforeTheSpec checks
// the order itself: whenever the device plugin publishes a list with a
// healthy GPU, the spec on disk already holds it; when it publishes the
// list without a removed GPU, the spec still holds the removed one (a
// container being started with it can still be injected), and the spec
// drops it only after.
func TestHotplugAddsTheSpecBeforeTheListAndRemovesTheListBeforeTheSpec(t *testing.T) {
	dir := specDir(t)
	w := &specWitness{path: filepath.Join(dir, "intel.com-gpu.json")}
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU}, plugintest.WithCDISpecDir(dir), plugintest.WithSubscriber(w))
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "the iGPU", func(l []*pluginapi.Device) bool { return len(l) == 1 })

	const added = "0000:0a:00.0"
	r.node.MustAddGPU(t, fakenode.GPU{Card: 1, PCI: added, Device: "0x56a0"})
	r.nextList(ch, "the added GPU healthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", added + "/Healthy"})
	})
	// The witness hears of each snapshot just after the device plugin.
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(w.all(), func(s witnessed) bool { return slices.Contains(s.healthy, added) })
	}, waitFor, time.Millisecond, "the witness saw the added GPU")
	addedAt := -1
	for i, seen := range w.all() {
		for _, pci := range seen.healthy {
			assert.Contains(t, seen.inSpec, pci, "publication %d listed %s healthy before the spec held it", i, pci)
		}
		if addedAt < 0 && slices.Contains(seen.healthy, added) {
			addedAt = i
			assert.Contains(t, seen.inSpec, "card1", "the card name came with it")
		}
	}
	require.GreaterOrEqual(t, addedAt, 0, "a publication listed the added GPU")

	require.NoError(t, r.node.RemoveGPU(added))
	r.nextList(ch, "the GPU gone", func(l []*pluginapi.Device) bool { return len(l) == 1 })
	var seen []witnessed
	removedAt := -1
	require.Eventually(t, func() bool {
		seen = w.all()
		removedAt = slices.IndexFunc(seen[addedAt:], func(s witnessed) bool { return !slices.Contains(s.healthy, added) })
		return removedAt >= 0
	}, waitFor, time.Millisecond, "the witness saw the GPU dropped")
	assert.Contains(t, seen[addedAt+removedAt].inSpec, added,
		"the spec still held the removed GPU when the list without it was published")
	require.Eventually(t, func() bool {
		spec, err := cdiapi.ReadSpec(w.path, 0)
		return err == nil && spec.GetDevice(added) == nil
	}, waitFor, 5*time.Millisecond, "the removed GPU leaves the spec after the list")
}

// TestThePluginRefusesASpecPathHoldingSomethingElse: the plugin replaces
// its spec by renaming over it, so a spec path that holds a FIFO, a
// directory, a link or another owner's spec stops start-up, naming the
// path, and is left as it was.
func TestThePluginRefusesASpecPathHoldingSomethingElse(t *testing.T) {
	for _, tc := range []struct {
		name, says string
		make       func(path string) error
	}{
		{"a FIFO", "named pipe", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"a directory", "is a directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"a symbolic link", "symbolic link", func(p string) error { return os.Symlink("/etc/hostname", p) }},
		{"another kind's spec", `kind "nvidia.com/gpu"`, func(p string) error {
			return os.WriteFile(p, []byte(`{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}]}`), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			n.MustApply(t, fakenode.IGPU)
			dir := t.TempDir()
			path := filepath.Join(dir, "intel.com-gpu.json")
			require.NoError(t, tc.make(path))
			before, err := os.Lstat(path)
			require.NoError(t, err)
			p, err := plugintest.New(plugintest.WithScanner(scannerOf(n)), plugintest.WithCDISpecDir(dir), plugintest.WithKubeletSocketDir(testenv.SocketDir(t)))
			require.NoError(t, err)
			err = p.Run(ctxWithin(t, waitFor))
			require.Error(t, err)
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), tc.says)
			after, err := os.Lstat(path)
			require.NoError(t, err)
			assert.True(t, os.SameFile(before, after) && before.Mode() == after.Mode(), "the path was left as it was")
		})
	}
}
