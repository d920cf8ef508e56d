//go:build e2e

package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/cluster/rig"
)

// TestHostMounts checks, on the real kubelet and containerd, the facts the
// DaemonSet's mounts rest on: a container needs no host /sys to see the
// host's PCI devices and DRM entries (its runtime gives it a read-only one);
// a read-only hostPath leaves its submounts writable (the reported escape);
// and, where recursive read-only mounts are unsupported, Enabled keeps the
// container from being created while IfPossible silently falls back.
func TestHostMounts(t *testing.T) {
	_, bins := prerequisites(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := rig.New(bins)
	if r != nil {
		t.Cleanup(func() { teardown(t, r, "kubelet", "containerd") })
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{r: r}
	s.setUpNode(ctx, t)

	steps := []struct {
		name string
		run  func(context.Context, *testing.T)
	}{
		{"a container without a /sys mount sees the host's PCI devices and DRM entries, read-only", s.runtimeSysfs},
		{"a read-only hostPath of /sys leaves the host's cgroups writable; where recursive read-only mounts are unsupported Enabled refuses to start and IfPossible falls back", s.recursiveReadOnly},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) { step.run(ctx, t) })
		if err := r.DeleteAllPods(ctx); err != nil {
			t.Errorf("cleaning up after %q: %v", step.name, err)
		}
	}
}

// section returns the lines of a container's output between the line
// "--- name" and the next marker.
func section(logs, name string) []string {
	var out []string
	in := false
	for _, line := range strings.Split(logs, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "--- "+name:
			in = true
		case strings.HasPrefix(line, "--- ") || line == "=== end":
			in = false
		case in && line != "":
			out = append(out, line)
		}
	}
	return out
}

// runScript runs a ScriptPod and returns what it printed.
func (s *suite) runScript(ctx context.Context, t *testing.T, name, script string, volumes ...rig.HostVolume) string {
	t.Helper()
	manifest, err := rig.ScriptPod(name, script, volumes...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.r.ApplyPod(name, manifest); err != nil {
		t.Fatal(err)
	}
	run, err := s.r.WaitRunning(ctx, name, 90*time.Second)
	if err != nil {
		t.Fatalf("pod %s did not run: %v", name, err)
	}
	return run.Logs
}

func hostEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func (s *suite) runtimeSysfs(ctx context.Context, t *testing.T) {
	logs := s.runScript(ctx, t, "sysfs-view", `echo "--- pci"; ls /sys/bus/pci/devices; `+
		`echo "--- drm"; ls /sys/class/drm 2>/dev/null; `+
		`echo "--- mount"; grep " /sys sysfs " /proc/self/mounts; `+
		`echo "--- write"; touch /sys/igc-e2e-probe 2>&1`)

	pci, hostPCI := section(logs, "pci"), hostEntries(t, "/sys/bus/pci/devices")
	if len(hostPCI) == 0 {
		need(t, "this host has no PCI devices to compare")
	}
	if !slices.Equal(pci, hostPCI) {
		t.Errorf("the container sees PCI devices %v, the host %v", pci, hostPCI)
	}
	if drm, hostDRM := section(logs, "drm"), hostEntries(t, "/sys/class/drm"); !slices.Equal(drm, hostDRM) {
		t.Errorf("the container sees DRM entries %v, the host %v", drm, hostDRM)
	}
	t.Logf("the container's own /sys shows the host's %d PCI devices and %d DRM entries", len(hostPCI), len(hostEntries(t, "/sys/class/drm")))

	mount := section(logs, "mount")
	if len(mount) != 1 || !slices.Contains(strings.Split(strings.Fields(mount[0])[3], ","), "ro") {
		t.Errorf("the container's /sys mount is %q, want one sysfs mounted ro", mount)
	}
	if w := strings.Join(section(logs, "write"), " "); !strings.Contains(w, "Read-only file system") {
		t.Errorf("writing below /sys gave %q, want Read-only file system", w)
	}
}

// probeCgroup makes a cgroup of its own on the host and returns it with a
// file in it that root may write without consequence: pids.max under cgroup
// v1's pids hierarchy, cgroup.max.depth under v2.
func probeCgroup(t *testing.T) (dir, file string) {
	t.Helper()
	var root string
	for _, c := range []struct{ root, file string }{
		{"/sys/fs/cgroup/pids", "pids.max"},    // v1 (and hybrid)
		{"/sys/fs/cgroup", "cgroup.max.depth"}, // v2
	} {
		if _, err := os.Stat(filepath.Join(c.root, "cgroup.procs")); err == nil {
			root, file = c.root, c.file
			break
		}
	}
	if root == "" {
		need(t, "no pids (v1) or unified (v2) cgroup hierarchy under /sys/fs/cgroup")
	}
	dir = filepath.Join(root, fmt.Sprintf("igc-e2e-rro-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Rmdir(dir); err != nil {
			t.Errorf("removing the probe cgroup %s: %v", dir, err)
		}
	})
	if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
		need(t, "the probe cgroup has no %s: %v", file, err)
	}
	return dir, file
}

// sysfsProbe is a host cgroup file a container may try to rewrite through a
// read-only hostPath of the host's /sys: mounted at /sys, as the DaemonSet
// did before the mount was removed, or at /host/sys, as the chart did for
// sysfsRoot=/host/sys.
type sysfsProbe struct {
	t        *testing.T
	target   string // on the host
	original string
}

func newSysfsProbe(t *testing.T) *sysfsProbe {
	dir, file := probeCgroup(t)
	p := &sysfsProbe{t: t, target: filepath.Join(dir, file)}
	p.original = p.read()
	return p
}

func (p *sysfsProbe) read() string {
	raw, err := os.ReadFile(p.target)
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

// script is what the container runs: write value, through the host's /sys
// mounted at mountPath.
func (p *sysfsProbe) script(mountPath, value string) string {
	inContainer := filepath.Join(mountPath, strings.TrimPrefix(p.target, "/sys/"))
	return fmt.Sprintf(`echo "--- write"; if echo %s > %s; then echo wrote; fi 2>&1`, value, inContainer)
}

func (p *sysfsProbe) volume(mountPath, rro string) rig.HostVolume {
	return rig.HostVolume{Name: "sys", HostPath: "/sys", MountPath: mountPath, ReadOnly: true, RecursiveReadOnly: rro}
}

// reset puts the original value back after a write went through.
func (p *sysfsProbe) reset() {
	if err := os.WriteFile(p.target, []byte(p.original), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// On this kubelet (no API server) there is no RuntimeClass manager, and the
// kubelet then treats the runtime as unable to make recursive read-only
// mounts, whatever containerd reports: the same as a runtime that cannot.
// So the two modes show here what they do on an old runtime; that Enabled
// works where supported is shown by TestFullCluster.
func (s *suite) recursiveReadOnly(ctx context.Context, t *testing.T) {
	p := newSysfsProbe(t)

	for i, at := range []string{"/sys", "/host/sys"} {
		t.Run("readOnly alone, at "+at+": the container rewrites a host cgroup", func(t *testing.T) {
			value := fmt.Sprint(6 + i)
			logs := s.runScript(ctx, t, fmt.Sprintf("sys-ro-%d", i), p.script(at, value), p.volume(at, ""))
			got := p.read()
			t.Logf("container: %q; host %s is now %s (was %s)", section(logs, "write"), p.target, got, p.original)
			if got != value {
				t.Errorf("host %s = %s: the non-recursive mount did not let the write through, so this rig cannot show what recursiveReadOnly prevents", p.target, got)
			}
			p.reset()
		})
	}

	t.Run("IfPossible where unsupported: silently non-recursive, the write goes through", func(t *testing.T) {
		logs := s.runScript(ctx, t, "sys-rro-ifpossible", p.script("/sys", "8"), p.volume("/sys", "IfPossible"))
		got := p.read()
		t.Logf("container: %q; host %s is now %s", section(logs, "write"), p.target, got)
		if got != "8" {
			t.Errorf("host %s = %s, want 8: IfPossible was expected to fall back to a plain read-only mount here", p.target, got)
		}
		p.reset()
	})

	t.Run("Enabled where unsupported: the container is never created", func(t *testing.T) {
		manifest, err := rig.ScriptPod("sys-rro-enabled", p.script("/sys", "9"), p.volume("/sys", "Enabled"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.r.ApplyPod("sys-rro-enabled", manifest); err != nil {
			t.Fatal(err)
		}
		var waiting string
		err = rig.WaitFor(60*time.Second, 250*time.Millisecond, func() (bool, error) {
			st, err := s.r.KubeletPodStatus(ctx, "sys-rro-enabled")
			if err != nil {
				return false, err
			}
			for _, c := range st.Status.ContainerStatuses {
				if w := c.State.Waiting; w != nil && w.Reason == "CreateContainerConfigError" {
					waiting = w.Message
					return true, nil
				}
			}
			return false, fmt.Errorf("status %+v", st.Status)
		})
		if err != nil {
			t.Fatalf("the pod did not fail with CreateContainerConfigError: %v", err)
		}
		t.Logf("kubelet: CreateContainerConfigError: %s", waiting)
		if !strings.Contains(waiting, "recursive read-only") {
			t.Errorf("the error %q does not name recursive read-only mounts", waiting)
		}
		if ctrs, err := s.r.Containers(ctx, "sys-rro-enabled"); err != nil || len(ctrs) != 0 {
			t.Errorf("containers %v (err %v), want none", ctrs, err)
		}
		if got := p.read(); got != p.original {
			t.Errorf("host %s = %s, want %s untouched", p.target, got, p.original)
		}
	})
}
