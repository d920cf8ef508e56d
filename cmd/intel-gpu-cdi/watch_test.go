package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/bench"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// fsnotify reads each watcher on a goroutine with a 64 KiB buffer on its
// stack: the node (/dev/dri) and the device plugin (the kubelet's
// directory) follow their directories through one (kubeplugin/dirwatch),
// which shows as one inotify instance in the running plugin.
func TestThePluginFollowsItsDirectoriesThroughOneInotifyInstance(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "intel-gpu-cdi")
	if out, err := exec.Command("go", "build", "-tags", bench.ProductTags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.IGPU)
	sockDir, err := os.MkdirTemp("", "watch")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	k, err := fakekubelet.Start(filepath.Join(sockDir, "dp"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()

	cmd := exec.Command(bin, "plugin", "--sysfs-root", n.Sys, "--dev-root", n.Dev, "--kubelet-socket-dir", k.Dir(),
		"--cdi-spec-dir", filepath.Join(t.TempDir(), "cdi"), "--log-level", "warn")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := k.WaitRegistration(ctx, "gpu.intel.com/i915", 1); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}

	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "fd"))
	if err != nil {
		t.Fatal(err)
	}
	inotify := 0
	for _, fd := range fds {
		target, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "fd", fd.Name()))
		if target == "anon_inode:inotify" {
			inotify++
		}
	}
	if inotify != 1 {
		t.Errorf("the plugin has %d inotify instances, want 1", inotify)
	}
}
