package plugin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/nfd"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// header is the comment that opens the feature file.
const header = "# Intel GPU labels from intel-gpu-cdi. Rewritten whenever the node's GPUs change; do not edit.\n"

// demoLabels is the feature file for fakenode.Demo.
const demoLabels = header +
	"gpu.intel.com/count=3\n" +
	"gpu.intel.com/device-id.0x46a6.count=1\n" +
	"gpu.intel.com/device-id.0x56a0.count=1\n" +
	"gpu.intel.com/device-id.0xe20b.count=1\n" +
	"gpu.intel.com/drivers=i915.xe\n" +
	"gpu.intel.com/numa-nodes=0\n"

// iGPULabels is the feature file for fakenode.IGPU.
const iGPULabels = header +
	"gpu.intel.com/count=1\n" +
	"gpu.intel.com/device-id.0x46a6.count=1\n" +
	"gpu.intel.com/drivers=i915\n"

// waitForFile waits until path reads want; want "" means no file.
func waitForFile(t *testing.T, path, want string) {
	t.Helper()
	var got string
	deadline := time.Now().Add(waitFor)
	for {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			got = ""
		case err != nil:
			t.Fatalf("reading %s: %v", path, err)
		default:
			got = string(b)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n got: %q\nwant: %q", path, got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startLabels runs a feature-file writer in a fresh features directory
// until the test ends; stop ends it earlier.
func startLabels(t *testing.T) (w *nfd.Writer, stop func()) {
	t.Helper()
	w, err := nfd.New(filepath.Join(t.TempDir(), "features.d"))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Fatal("the feature-file writer did not stop")
		}
	}
	t.Cleanup(stop)
	return w, stop
}

func TestNFDLabelsFollowGPUsComingAndGoing(t *testing.T) {
	w, stop := startLabels(t)
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU}, plugintest.WithSubscriber(w.Subscriber()))
	waitForFile(t, w.Path(), iGPULabels)
	st, err := os.Stat(w.Path())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())

	r.node.MustAddGPU(t, fakenode.GPU{Card: 1, PCI: "0000:03:00.0", Device: "0xe20b", Driver: "xe", NUMA: "0"})
	waitForFile(t, w.Path(), header+
		"gpu.intel.com/count=2\n"+
		"gpu.intel.com/device-id.0x46a6.count=1\n"+
		"gpu.intel.com/device-id.0xe20b.count=1\n"+
		"gpu.intel.com/drivers=i915.xe\n"+
		"gpu.intel.com/numa-nodes=0\n")

	// A GPU without its nodes is listed unhealthy and counted apart.
	require.NoError(t, r.node.RemoveDevNodes("0000:03:00.0"))
	waitForFile(t, w.Path(), iGPULabels+
		"gpu.intel.com/unhealthy.count=1\n"+
		"gpu.intel.com/unhealthy.reasons=not-ready\n")
	require.NoError(t, r.node.AddDevNodes("0000:03:00.0"))
	waitForFile(t, w.Path(), header+
		"gpu.intel.com/count=2\n"+
		"gpu.intel.com/device-id.0x46a6.count=1\n"+
		"gpu.intel.com/device-id.0xe20b.count=1\n"+
		"gpu.intel.com/drivers=i915.xe\n"+
		"gpu.intel.com/numa-nodes=0\n")

	require.NoError(t, r.node.RemoveGPU("0000:03:00.0"))
	waitForFile(t, w.Path(), iGPULabels)

	r.stop()
	stop()
	assert.NoFileExists(t, w.Path(), "the labels go when the plugin stops")
}

func TestNFDLabelsOfSRIOVCountTheVFsNotThePF(t *testing.T) {
	w, _ := startLabels(t)
	startRig(t, []func(*fakenode.Node) error{fakenode.SRIOV}, plugintest.WithSubscriber(w.Subscriber()))
	waitForFile(t, w.Path(), header+
		"gpu.intel.com/count=2\n"+
		"gpu.intel.com/device-id.0x56c0.count=2\n"+
		"gpu.intel.com/drivers=i915\n"+
		"gpu.intel.com/numa-nodes=1\n"+
		"gpu.intel.com/sriov-vfs=2\n")
}

func TestNFDLabelsOnANodeWithoutGPUsAreNoFileAndAStaleOneGoes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "features.d")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	stale := filepath.Join(dir, nfd.FileName)
	require.NoError(t, os.WriteFile(stale, []byte("gpu.intel.com/count=4\n"), 0o644))
	w, err := nfd.New(dir)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	defer func() { cancel(); <-done }()

	r := startRig(t, nil, plugintest.WithSubscriber(w.Subscriber()))
	waitForFile(t, stale, "")

	r.node.MustAddGPU(t, fakenode.GPU{Card: 0, PCI: "0000:00:02.0", Device: "0x46a6"})
	waitForFile(t, stale, iGPULabels)
	require.NoError(t, r.node.RemoveGPU("0000:00:02.0"))
	waitForFile(t, stale, "")
}

func TestABadNFDFeaturesDirStopsStartUpNamingTheFlag(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	require.NoError(t, os.WriteFile(file, nil, 0o644))

	for name, set := range map[string]func(t *testing.T) []string{
		"from the flag": func(*testing.T) []string { return []string{"--nfd-features-dir", file} },
		"from the environment": func(t *testing.T) []string {
			t.Setenv("INTEL_GPU_CDI_NFD_FEATURES_DIR", filepath.Join(file, "sub"))
			return nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"--kubelet-socket-dir", testenv.SocketDir(t), "--cdi-spec-dir", t.TempDir()}, set(t)...)
			done, log := runCLI(t, context.Background(), args...)
			select {
			case err := <-done:
				require.Error(t, err, "log:\n%s", log)
				assert.Contains(t, err.Error(), "--nfd-features-dir")
			case <-time.After(waitFor):
				t.Fatal("start-up did not fail")
			}
		})
	}
}
