// Package e2e runs the built intel-gpu-cdi binary against a fake node of
// real char devices and hands its spec to a real podman, which must inject
// exactly the nodes of the GPU asked for. It needs root (mknod, mount
// namespaces), podman, runc, unshare and a static busybox; without them
// the tests skip, or fail when CI is set.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// image is the busybox image the containers run; it is imported from a
// rootfs tar once and reused by later runs.
const image = "localhost/intel-gpu-cdi-e2e-bb"

const busybox = "/bin/busybox"

// hostSpecDirs are the directories podman 4.3 reads CDI specs from. It has
// no option to choose them (containers.conf gained cdi_spec_dirs later), so
// each podman run happens in a private mount namespace in which /run/cdi
// is our spec directory and /etc/cdi, if any, is hidden under a tmpfs: the
// machine's own specs are neither read nor touched.
const (
	runCDI = "/run/cdi"
	etcCDI = "/etc/cdi"
)

func requirePodman(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "podman e2e needs root (mknod, mount namespaces)")
	}
	for _, tool := range []string{"podman", "runc", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, "podman e2e needs %s: %v (apt-get install podman runc util-linux)", tool, err)
		}
	}
	if _, err := os.Stat(busybox); err != nil {
		testenv.Unavailable(t, "podman e2e needs a static busybox at %s (apt-get install busybox-static): %v", busybox, err)
	}
	if !fakenode.CanMknod() {
		testenv.Unavailable(t, "podman e2e needs mknod for real char device nodes")
	}
}

// command runs name with args and returns stdout, failing the test with
// both outputs on error.
func command(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, errOut, err := tryCommand(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func tryCommand(timeout time.Duration, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// buildBinary builds intel-gpu-cdi as `make build` does, with a version.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "intel-gpu-cdi")
	command(t, 5*time.Minute, goTool, "build", "-o", bin,
		"-ldflags", "-X github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app.Version=e2e",
		"../../cmd/intel-gpu-cdi")
	return bin
}

// ensureImage imports a busybox rootfs as image unless it is there.
func ensureImage(t *testing.T) {
	t.Helper()
	if _, _, err := tryCommand(time.Minute, "podman", "image", "exists", image); err == nil {
		return
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "ls"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	tar := filepath.Join(t.TempDir(), "rootfs.tar")
	command(t, time.Minute, "tar", "-C", root, "-cf", tar, ".")
	command(t, 2*time.Minute, "podman", "import", tar, image)
}

// useRunCDI makes sure /run/cdi exists as a mount point for the private
// namespaces, and removes it again afterwards if this test created it.
func useRunCDI(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(runCDI); err == nil {
		return
	}
	if err := os.Mkdir(runCDI, 0o755); err != nil {
		t.Fatalf("creating %s as a mount point: %v", runCDI, err)
	}
	t.Cleanup(func() { os.Remove(runCDI) }) // only if still empty
}

// namespaceScript runs "$@" with specDir as /run/cdi and /etc/cdi hidden,
// in the mount namespace `unshare -m` gave it.
const namespaceScript = `set -eu
spec_dir=$1; shift
if [ -d ` + etcCDI + ` ]; then mount -t tmpfs -o mode=0755 tmpfs ` + etcCDI + `; fi
mount --bind "$spec_dir" ` + runCDI + `
exec "$@"
`

// podmanRun runs `ls -lR /dev/dri` in a container that gets the given CDI
// devices, with specDir as the only CDI spec directory.
func podmanRun(specDir string, devices ...string) (string, string, error) {
	args := []string{"--mount", "--propagation", "private", "--", "sh", "-c", namespaceScript, "sh", specDir,
		"podman", "--runtime", "runc", "run", "--rm", "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
	for _, d := range devices {
		args = append(args, "--device", d)
	}
	args = append(args, image, "ls", "-lR", "/dev/dri")
	return tryCommand(2*time.Minute, "unshare", args...)
}

// entry is one line of `ls -l` in the container.
type entry struct {
	kind         byte // 'c' char device, 'd' directory, '-' file, 'l' link
	major, minor int
}

// parseLsR reads busybox `ls -lR` output into path -> entry.
func parseLsR(out string) (map[string]entry, error) {
	entries := map[string]entry{}
	dir := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasSuffix(line, ":") && strings.HasPrefix(line, "/"):
			dir = strings.TrimSuffix(line, ":")
			continue
		case line == "" || strings.HasPrefix(line, "total "):
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			return nil, fmt.Errorf("unexpected ls line %q", line)
		}
		name := f[len(f)-1]
		if i := slices.Index(f, "->"); i > 0 {
			name = f[i-1]
		}
		e := entry{kind: line[0]}
		if e.kind == 'c' {
			var err1, err2 error
			e.major, err1 = strconv.Atoi(strings.TrimSuffix(f[4], ","))
			e.minor, err2 = strconv.Atoi(f[5])
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("ls line %q: %w", line, err)
			}
		}
		entries[filepath.Join(dir, name)] = e
	}
	return entries, nil
}

func charDev(major, minor int) entry { return entry{kind: 'c', major: major, minor: minor} }

// nodesOf lists the /dev/dri entries one GPU of the node brings: its two
// nodes and its two by-path links, each a char device of the GPU's numbers
// (the links are bind mounts of the nodes).
func nodesOf(card, render int, pci string) map[string]entry {
	c, r := charDev(226, card), charDev(226, render)
	return map[string]entry{
		fmt.Sprintf("/dev/dri/card%d", card):      c,
		fmt.Sprintf("/dev/dri/renderD%d", render): r,
		"/dev/dri/by-path/pci-" + pci + "-card":   c,
		"/dev/dri/by-path/pci-" + pci + "-render": r,
	}
}

// containerView runs a container with the CDI devices and returns what it
// sees in /dev/dri, and the raw listing.
func containerView(t *testing.T, specDir string, devices ...string) (map[string]entry, string) {
	t.Helper()
	out, errOut, err := podmanRun(specDir, devices...)
	if err != nil {
		t.Fatalf("podman run with %v failed: %v\n%s\n%s\n"+
			"(podman on this machine needs /etc/containers/containers.conf with [engine] cgroup_manager=\"cgroupfs\"; .ci/run writes it)",
			devices, err, out, errOut)
	}
	got, err := parseLsR(out)
	if err != nil {
		t.Fatal(err)
	}
	return got, out
}

// assertExactly checks that the container sees every wanted entry with its
// numbers and nothing but directories besides.
func assertExactly(t *testing.T, got, want map[string]entry) {
	t.Helper()
	for p, w := range want {
		if g, ok := got[p]; !ok || g != w {
			t.Errorf("%s in the container is %+v (present %v), want char device %d:%d", p, g, ok, w.major, w.minor)
		}
	}
	for p, e := range got {
		if _, wanted := want[p]; !wanted && e.kind != 'd' {
			t.Errorf("%s is in the container but belongs to no GPU asked for", p)
		}
	}
}

func union(ms ...map[string]entry) map[string]entry {
	out := map[string]entry{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestPodmanInjectsTheNodesOfTheGPUAskedFor(t *testing.T) {
	requirePodman(t)
	bin := buildBinary(t)
	ensureImage(t)
	useRunCDI(t)

	// IGPU (card0 at 0000:00:02.0) and SRIOV (PF card1, VFs card2 and
	// card3 at 0000:03:00.1 and .2): five cards, of which the PF is held back.
	n := fakenode.NewT(t, fakenode.WithMode(fakenode.Mknod))
	n.MustApply(t, fakenode.IGPU, fakenode.SRIOV)
	specDir := filepath.Join(t.TempDir(), "cdi")
	command(t, time.Minute, bin, "generate", "--sysfs-root", n.Sys, "--dev-root", n.Dev,
		"--output", filepath.Join(specDir, "intel.com-gpu.yaml"))

	igpu := nodesOf(0, 128, "0000:00:02.0")
	vf1 := nodesOf(2, 130, "0000:03:00.1")
	vf2 := nodesOf(3, 131, "0000:03:00.2")
	pf := nodesOf(1, 129, "0000:03:00.0")
	tests := []struct {
		name    string
		devices []string
		want    map[string]entry
	}{
		{name: "a GPU asked for by card name gets its nodes and links only", devices: []string{"intel.com/gpu=card0"}, want: igpu},
		{name: "a GPU asked for by PCI address gets its nodes and links only", devices: []string{"intel.com/gpu=0000:00:02.0"}, want: igpu},
		{name: "a VF asked for by PCI address gets its own nodes only", devices: []string{"intel.com/gpu=0000:03:00.2"}, want: vf2},
		{name: "a VF asked for by card name gets its own nodes only", devices: []string{"intel.com/gpu=card2"}, want: vf1},
		{name: "two GPUs asked for together get both", devices: []string{"intel.com/gpu=card0", "intel.com/gpu=0000:03:00.1"}, want: union(igpu, vf1)},
		{name: "all gets every GPU handed out but not the PF", devices: []string{"intel.com/gpu=all"}, want: union(igpu, vf1, vf2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, out := containerView(t, specDir, tt.devices...)
			assertExactly(t, got, tt.want)
			for p := range pf {
				if _, ok := got[p]; ok {
					t.Errorf("the PF's %s is in the container", p)
				}
			}
			if t.Failed() {
				t.Logf("ls -lR /dev/dri:\n%s", out)
			}
		})
	}
	t.Run("the PF whose VFs are handed out is not a CDI device", func(t *testing.T) {
		out, errOut, err := podmanRun(specDir, "intel.com/gpu=card1")
		if err == nil {
			t.Fatalf("podman run with the PF succeeded:\n%s", out)
		}
		if !strings.Contains(errOut, "intel.com/gpu=card1") {
			t.Errorf("podman's error does not name the device:\n%s", errOut)
		}
	})
}

func TestBinaryExitCodes(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil && runtime.GOROOT() == "" {
		testenv.Unavailable(t, "building the binary needs the go tool")
	}
	bin := buildBinary(t)
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.IGPU)
	empty := fakenode.NewT(t)
	spec := filepath.Join(t.TempDir(), "intel.com-gpu.yaml")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "version prints the version built in", args: []string{"version"}, wantStdout: "intel-gpu-cdi e2e ("},
		{name: "generate with GPUs exits 0", args: []string{"generate", "--sysfs-root", n.Sys, "--dev-root", n.Dev, "--output", spec}},
		{name: "generate without a ready GPU exits 0 and says so", args: []string{"generate", "--sysfs-root", empty.Sys, "--dev-root", empty.Dev},
			wantStderr: "no ready Intel GPU found"},
		{name: "an unknown format exits 1 with the reason", args: []string{"generate", "--format", "toml", "--sysfs-root", n.Sys, "--dev-root", n.Dev},
			wantCode: 1, wantStderr: `intel-gpu-cdi: --format: invalid spec format "toml"`},
		{name: "an unknown flag is a usage error: exit 2", args: []string{"generate", "--no-such-flag"}, wantCode: 2, wantStderr: "unknown flag --no-such-flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := tryCommand(time.Minute, bin, tt.args...)
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || !strings.Contains(out, tt.wantStdout) || !strings.Contains(errOut, tt.wantStderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, out, errOut, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}
