package plugin_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// probeGet returns a probe's status and body.
func probeGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitFor}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func eventuallyProbe(t *testing.T, url string, code int, what string) string {
	t.Helper()
	var body string
	require.Eventually(t, func() bool {
		var got int
		got, body = probeGet(t, url)
		return got == code
	}, waitFor, 5*time.Millisecond, "%s: last answer %q", what, body)
	return body
}

// TestReadinessWaitsForTheKubeletAndLivenessForTheLoop runs the CLI with
// --probe-address against a kubelet that refuses registration: the plugin
// is alive but not ready, and turns ready once the kubelet accepts.
func TestReadinessWaitsForTheKubeletAndLivenessForTheLoop(t *testing.T) {
	node := fakenode.NewT(t)
	node.MustApply(t, fakenode.IGPU)
	sockDir := testenv.SocketDir(t)
	k, err := fakekubelet.Start(sockDir)
	require.NoError(t, err)
	t.Cleanup(k.Stop)
	k.SetReject(status.Error(codes.Unavailable, "kubelet busy"))
	addr := freePort(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, log := runCLI(t, ctx,
		"--sysfs-root", node.Sys, "--dev-root", node.Dev,
		"--kubelet-socket-dir", sockDir, "--cdi-spec-dir", filepath.Join(t.TempDir(), "cdi"),
		"--probe-address", addr)
	base := "http://" + addr
	require.NoError(t, k.WaitRejected(ctxWithin(t, waitFor), 1), "log:\n%s", log)

	body := eventuallyProbe(t, base+"/readyz", http.StatusServiceUnavailable, "not ready while the kubelet refuses")
	assert.Contains(t, body, "gpu.intel.com/i915 is not registered with the kubelet")
	code, body := probeGet(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code, "alive while it retries: %s", body)

	k.SetReject(nil)
	_, err = k.WaitRegistration(ctxWithin(t, waitFor), deviceplugin.ResourceI915, 1)
	require.NoError(t, err)
	eventuallyProbe(t, base+"/readyz", http.StatusOK, "ready once registered")

	stopCLI(t, cancel, done, log)
}

// TestLivenessFailsOnceTheMountedDevDRIIsDetached mounts a file system on
// the fake node's dev/dri, as a container mounts the host's /dev/dri, and
// detaches it as the kernel does when the host removes that directory:
// the process then sees an empty directory for ever, and only a restart
// brings the host's back, so liveness must fail and say why.
func TestLivenessFailsOnceTheMountedDevDRIIsDetached(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "mounting a file system on dev/dri needs root")
	}
	node := fakenode.NewT(t)
	dri := filepath.Join(node.Dev, "dri")
	require.NoError(t, os.MkdirAll(dri, 0o755))
	if err := unix.Mount("tmpfs", dri, "tmpfs", 0, "mode=0755"); err != nil {
		testenv.Unavailable(t, "mounting tmpfs on %s: %v", dri, err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			_ = unix.Unmount(dri, unix.MNT_DETACH)
		}
	})
	node.MustApply(t, fakenode.IGPU)
	sockDir := testenv.SocketDir(t)
	k, err := fakekubelet.Start(sockDir)
	require.NoError(t, err)
	t.Cleanup(k.Stop)
	addr := freePort(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, log := runCLI(t, ctx,
		"--sysfs-root", node.Sys, "--dev-root", node.Dev,
		"--kubelet-socket-dir", sockDir, "--cdi-spec-dir", filepath.Join(t.TempDir(), "cdi"),
		"--probe-address", addr)
	_, err = k.WaitRegistration(ctxWithin(t, waitFor), deviceplugin.ResourceI915, 1)
	require.NoError(t, err, "log:\n%s", log)
	base := "http://" + addr
	eventuallyProbe(t, base+"/healthz", http.StatusOK, "alive while dri is the mounted one")

	require.NoError(t, unix.Unmount(dri, unix.MNT_DETACH))
	mounted = false
	body := eventuallyProbe(t, base+"/healthz", http.StatusServiceUnavailable, "dead once the mount is gone")
	assert.True(t, strings.Contains(body, dri) && strings.Contains(body, "restarted"), "the answer names the directory and the remedy: %q", body)

	stopCLI(t, cancel, done, log)
}
