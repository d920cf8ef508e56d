//go:build e2e

package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/cluster/rig"
)

// What the non-root deployment ships: the overlay that sets the user, and
// the node preparation that lets that user's group do what the plugin does.
const (
	nonRootPatch       = "../../deployments/kustomize/overlays/non-root/non-root.yaml"
	nodePrepTmpfiles   = "../../deployments/tmpfiles.d/intel-gpu-cdi-non-root.conf"
	kubeletSockPath    = "../../deployments/systemd/intel-gpu-cdi-kubelet-sock.path"
	kubeletSockService = "../../deployments/systemd/intel-gpu-cdi-kubelet-sock.service"
	// tmpfilesCDIDir is the CDI spec dir as the tmpfiles file names it.
	tmpfilesCDIDir = "/run/cdi"
)

// TestNonRootPlugin runs the plugin as the user the non-root overlay sets,
// on a node prepared by the shipped files, against the real kubelet: it
// registers, a pod gets exactly one GPU, and a kubelet restart (a new
// kubelet.sock) is survived. Without the preparation it cannot register.
func TestNonRootPlugin(t *testing.T) {
	binary, bins := prerequisites(t)
	for _, tool := range []string{"systemd-tmpfiles", "setfacl", "getfacl"} {
		if _, err := exec.LookPath(tool); err != nil {
			need(t, "%s is not installed (apt-get install systemd acl)", tool)
		}
	}
	uid, gid := overlayUser(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := rig.New(bins)
	if r != nil {
		t.Cleanup(func() { teardown(t, r, "plugin", "kubelet", "containerd") })
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{r: r, cred: &syscall.Credential{Uid: uid, Gid: gid}}
	s.setUpNode(ctx, t)
	s.binary = reachableAs(t, r, uid, binary)

	steps := []struct {
		name string
		run  func(context.Context, *testing.T)
	}{
		{"without the node preparation the non-root plugin cannot register", s.unprepared},
		{"on a node prepared by the shipped files it registers as its own user and writes the spec", s.prepared},
		{"a pod asking for one i915 GPU sees exactly that GPU's card and render nodes", s.oneI915},
		{"after a kubelet restart the non-root plugin reaches the new kubelet.sock and registers again", s.nonRootKubeletRestart},
	}
	for _, step := range steps {
		if !t.Run(step.name, func(t *testing.T) { step.run(ctx, t) }) {
			break // each step builds on the one before
		}
		if err := r.DeleteAllPods(ctx); err != nil {
			t.Errorf("cleaning up after %q: %v", step.name, err)
		}
	}
	// No s.report: $E2E_RESULTS_FILE holds TestKubeletWithCDI's timings.
}

// overlayUser reads the UID and GID the non-root overlay runs the plugin as.
func overlayUser(t *testing.T) (uid, gid uint32) {
	t.Helper()
	raw, err := os.ReadFile(nonRootPatch)
	if err != nil {
		t.Fatal(err)
	}
	var patch map[string]any
	if err := yaml.Unmarshal(raw, &patch); err != nil {
		t.Fatalf("%s: %v", nonRootPatch, err)
	}
	containers, _ := dig(patch, "spec", "template", "spec", "containers").([]any)
	if len(containers) != 1 {
		t.Fatalf("%s: want one container, got %d", nonRootPatch, len(containers))
	}
	sc, _ := containers[0].(map[string]any)["securityContext"].(map[string]any)
	id := func(key string) uint32 {
		n, ok := sc[key].(float64)
		if !ok || n <= 0 {
			t.Fatalf("%s: securityContext.%s = %v, want a non-root ID", nonRootPatch, key, sc[key])
		}
		return uint32(n)
	}
	return id("runAsUser"), id("runAsGroup")
}

// reachableAs copies the binary where the plugin's user can run it, and lets
// that user reach what a pod would have mounted for it. In a pod the runtime
// bind-mounts the device-plugin dir itself, so its parent is never
// traversed; on the host it is /var/lib/kubelet (0750, the kubelet's), which
// the node preparation rightly leaves closed, so the test opens it (search
// only) for this user alone. The rig's own directory is 0700.
func reachableAs(t *testing.T, r *rig.Rig, uid uint32, binary string) string {
	t.Helper()
	if err := os.Chmod(r.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	kubeletDir := filepath.Dir(rig.DevicePluginDir)
	if err := r.Host().KeepACL(kubeletDir, rig.DevicePluginDir); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("setfacl", "-m", fmt.Sprintf("user:%d:x", uid), kubeletDir).CombinedOutput(); err != nil {
		t.Fatalf("setfacl on %s: %v\n%s", kubeletDir, err, out)
	}
	dir := filepath.Join(r.Dir, "bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "intel-gpu-cdi")
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func (s *suite) unprepared(ctx context.Context, t *testing.T) {
	logPath := filepath.Join(s.r.LogDir, "plugin.log")
	offset := fileSize(logPath)
	before, _ := s.r.Registrations(ctx)
	if err := s.r.StartPluginAs(s.cred, s.binary, s.pluginArgs(1)...); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.r.StopPlugin(); err != nil {
			t.Error(err)
		}
	}()
	err := rig.WaitFor(30*time.Second, 100*time.Millisecond, func() (bool, error) {
		return strings.Contains(strings.ToLower(readFrom(logPath, offset)), "permission denied"), nil
	})
	if err != nil {
		t.Fatalf("the unprepared plugin logged no permission error: %v\n%s", err, readFrom(logPath, offset))
	}
	after, _ := s.r.Registrations(ctx)
	if after[i915] > before[i915] || after[xe] > before[xe] {
		t.Fatalf("the plugin registered without the node preparation (%v, was %v): this test cannot tell what the preparation does", after, before)
	}
	t.Logf("as expected, unprepared: %s", firstLineWith(readFrom(logPath, offset), "permission denied"))
}

func (s *suite) prepared(ctx context.Context, t *testing.T) {
	prepareNode(t, s.r)
	s.startPlugin(ctx, t, 1)

	pid := s.r.Plugin().PID()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Uid":    strings.Repeat(fmt.Sprintf("%d\t", s.cred.Uid), 3) + fmt.Sprint(s.cred.Uid),
		"Gid":    strings.Repeat(fmt.Sprintf("%d\t", s.cred.Gid), 3) + fmt.Sprint(s.cred.Gid),
		"Groups": "",
		"CapEff": "0000000000000000",
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if w, ok := want[k]; ok && strings.TrimSpace(v) != w {
			t.Errorf("plugin %s: %q, want %q", k, strings.TrimSpace(v), w)
		}
	}
	spec := filepath.Join(s.r.CDISpecDir, "intel.com-gpu.json")
	if uid, gid := owner(t, spec); uid != s.cred.Uid || gid != s.cred.Gid {
		t.Errorf("%s is owned by %d:%d, want the plugin's %d:%d", spec, uid, gid, s.cred.Uid, s.cred.Gid)
	}
	sockets, _ := filepath.Glob(filepath.Join(rig.DevicePluginDir, "*.sock"))
	own := 0
	for _, sock := range sockets {
		if uid, _ := owner(t, sock); uid == s.cred.Uid {
			own++
		}
	}
	if own == 0 {
		t.Errorf("no socket in %s is owned by %d: %v", rig.DevicePluginDir, s.cred.Uid, sockets)
	}
	t.Logf("plugin pid %d runs as %d:%d with no capability; it owns %s and %d socket(s)", pid, s.cred.Uid, s.cred.Gid, filepath.Base(spec), own)
}

// Without the path unit, the kubelet.sock of a restarted kubelet is out of
// the plugin's reach; once the unit has run, the same plugin process, still
// retrying, registers. Then the suite's usual restart step, with the unit
// running throughout.
func (s *suite) nonRootKubeletRestart(ctx context.Context, t *testing.T) {
	pid := s.r.Plugin().PID()
	logPath := filepath.Join(s.r.LogDir, "plugin.log")
	t.Run("without the path unit the plugin cannot reach the new kubelet.sock", func(t *testing.T) {
		if err := s.r.StopKubelet(); err != nil {
			t.Fatal(err)
		}
		offset := fileSize(logPath)
		if err := s.r.StartKubelet(ctx); err != nil {
			t.Fatal(err)
		}
		err := rig.WaitFor(30*time.Second, 100*time.Millisecond, func() (bool, error) {
			return strings.Contains(readFrom(logPath, offset), "kubelet.sock: connect: permission denied"), nil
		})
		if err != nil {
			t.Fatalf("the plugin logged no refused connection to the new kubelet.sock: %v", err)
		}
		if regs, _ := s.r.Registrations(ctx); regs[i915] > 0 || regs[xe] > 0 {
			t.Fatalf("the plugin registered with the new kubelet (%v) without the path unit: this test cannot tell what the unit does", regs)
		}
	})
	if t.Failed() {
		return
	}
	stop := startPathUnit(ctx, t, s.r)
	defer stop()
	t.Run("once the path unit has run, the same plugin registers", func(t *testing.T) {
		started := time.Now()
		if err := s.r.WaitRegistered(ctx, nil, []string{i915, xe}, 30*time.Second); err != nil {
			t.Fatalf("the plugin did not register after the path unit ran: %v", err)
		}
		t.Logf("registered %s after the path unit started", time.Since(started).Round(time.Millisecond))
		if s.r.Plugin().PID() != pid {
			t.Fatal("the plugin process was replaced")
		}
	})
	t.Run("the path unit running, a kubelet restart is survived", func(t *testing.T) {
		s.kubeletRestart(ctx, t)
		if t.Failed() {
			return
		}
		acl, err := exec.Command("getfacl", "--absolute-names", "--omit-header", rig.KubeletSock()).Output()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("group:%d:rw-", s.cred.Gid); !strings.Contains(string(acl), want) {
			t.Errorf("the new kubelet.sock has no %s entry:\n%s", want, acl)
		}
		if s.r.Plugin().PID() != pid {
			t.Fatal("the plugin process was replaced")
		}
	})
}

// prepareNode applies the shipped tmpfiles file with the real
// systemd-tmpfiles, its CDI dir moved to the rig's (the device-plugin dir is
// the real one: kubelet.sock is always there).
func prepareNode(t *testing.T, r *rig.Rig) {
	t.Helper()
	raw, err := os.ReadFile(nodePrepTmpfiles)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if !strings.Contains(text, " "+tmpfilesCDIDir+" ") || !strings.Contains(text, " "+rig.DevicePluginDir+" ") {
		t.Fatalf("%s names neither %s nor %s as this test expects", nodePrepTmpfiles, tmpfilesCDIDir, rig.DevicePluginDir)
	}
	conf := filepath.Join(r.Dir, "intel-gpu-cdi-non-root.conf")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(text, " "+tmpfilesCDIDir+" ", " "+r.CDISpecDir+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-tmpfiles", "--create", conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles --create %s: %v\n%s", conf, err, out)
	}
}

// startPathUnit does what systemd does with intel-gpu-cdi-kubelet-sock.path
// (no systemd runs this machine): whenever the watched path appears or
// changes, it runs the service's ExecStart lines. systemd reacts to
// inotify; polling every 20 ms is close enough for a kubelet restart. A
// re-created socket may get the old inode number back, so a change is told
// by the inode and its ctime, taken again after the service's own change.
// It returns a func that stops it.
func startPathUnit(ctx context.Context, t *testing.T, r *rig.Rig) (stop func()) {
	t.Helper()
	watched := unitValues(t, kubeletSockPath, "PathChanged")
	commands := unitValues(t, kubeletSockService, "ExecStart")
	if len(watched) != 1 || watched[0] != rig.KubeletSock() {
		t.Fatalf("%s watches %v, want %s", kubeletSockPath, watched, rig.KubeletSock())
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	runs := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		type seen struct {
			ino  uint64
			ctim syscall.Timespec
		}
		var last seen
		look := func() (seen, bool) {
			var st syscall.Stat_t
			if err := syscall.Stat(watched[0], &st); err != nil {
				return seen{}, false
			}
			return seen{st.Ino, st.Ctim}, true
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if now, ok := look(); !ok {
				last = seen{}
			} else if now != last {
				for _, c := range commands {
					argv := strings.Fields(c)
					if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil && ctx.Err() == nil {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s: %v: %s", c, err, out))
						mu.Unlock()
					}
				}
				last, _ = look()
				mu.Lock()
				runs++
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			for _, f := range failures {
				t.Errorf("the path unit's service failed: %s", f)
			}
			t.Logf("the path unit's service ran %d time(s)", runs)
		})
	}
	t.Cleanup(stop)
	return stop
}

// unitValues returns the values of key in a systemd unit file.
func unitValues(t *testing.T, file, key string) []string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == key {
			out = append(out, v)
		}
	}
	return out
}

func owner(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readFrom(path string, offset int64) string {
	raw, err := os.ReadFile(path)
	if err != nil || int64(len(raw)) < offset {
		return ""
	}
	return string(raw[offset:])
}

func firstLineWith(text, sub string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(strings.ToLower(line), sub) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}
