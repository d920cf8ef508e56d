package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// TestPluginAllocationsReachRealPodman runs the plugin binary on a fake
// node of real char devices, allocates through a fake kubelet as the
// kubelet's device manager would, and passes the CDI names the plugin
// answers with to real podman, reading the spec the plugin keeps: the
// container must see exactly the allocated GPU's nodes.
func TestPluginAllocationsReachRealPodman(t *testing.T) {
	requirePodman(t)
	bin := buildBinary(t)
	ensureImage(t)
	useRunCDI(t)

	// Demo: i915 card0 at 0000:00:02.0, i915 card1 at 0000:03:00.0, xe card2 at 0000:07:00.0.
	n := fakenode.NewT(t, fakenode.WithMode(fakenode.Mknod))
	n.MustApply(t, fakenode.Demo)
	sockDir := testenv.SocketDir(t)
	kubelet, err := fakekubelet.Start(sockDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kubelet.Stop)
	specDir := filepath.Join(t.TempDir(), "cdi")

	plugin := exec.Command(bin, "plugin", "--sysfs-root", n.Sys, "--dev-root", n.Dev,
		"--kubelet-socket-dir", sockDir, "--cdi-spec-dir", specDir, "--log-level", "debug")
	logFile, err := os.Create(filepath.Join(t.TempDir(), "plugin.log"))
	if err != nil {
		t.Fatal(err)
	}
	plugin.Stdout, plugin.Stderr = logFile, logFile
	if err := plugin.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- plugin.Wait() }()
	t.Cleanup(func() {
		_ = plugin.Process.Kill()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("plugin log:\n%s", log)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name     string
		resource string
		id       string
		want     map[string]entry
	}{
		{"an i915 GPU the kubelet allocates is the one in the container", "gpu.intel.com/i915", "0000:03:00.0", nodesOf(1, 129, "0000:03:00.0")},
		{"the xe GPU the kubelet allocates is the one in the container", "gpu.intel.com/xe", "0000:07:00.0", nodesOf(2, 130, "0000:07:00.0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := kubelet.WaitRegistration(ctx, tt.resource, 1)
			if err != nil {
				t.Fatal(err)
			}
			c, err := kubelet.Dial(reg.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			resp, err := c.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{tt.id}}}})
			if err != nil {
				t.Fatalf("Allocate %s: %v", tt.id, err)
			}
			var names []string
			for _, d := range resp.ContainerResponses[0].CdiDevices {
				names = append(names, d.Name)
			}
			if len(names) != 1 || names[0] != "intel.com/gpu="+tt.id {
				t.Fatalf("Allocate %s answered CDI devices %v", tt.id, names)
			}

			got, out := containerView(t, specDir, names...)
			assertExactly(t, got, tt.want)
			if t.Failed() {
				t.Logf("ls -lR /dev/dri:\n%s", out)
			}
		})
	}

	t.Run("SIGTERM stops the plugin cleanly, removing its sockets and keeping the spec", func(t *testing.T) {
		if err := plugin.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("plugin exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("plugin did not stop on SIGTERM")
		}
		for _, r := range kubelet.Registrations() {
			if _, err := os.Stat(filepath.Join(sockDir, r.Endpoint)); err == nil {
				t.Errorf("socket %s left behind", r.Endpoint)
			}
		}
		if _, err := os.Stat(filepath.Join(specDir, "intel.com-gpu.json")); err != nil {
			t.Errorf("the spec is gone after stop: %v", err)
		}
	})
}
