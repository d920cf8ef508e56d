//go:build e2e

// The cluster end-to-end suite: a real kubelet (static pods, no API server)
// and a real containerd 2 with CDI, driven against `intel-gpu-cdi plugin` on a
// fake node (fake sysfs, real 226:N char nodes). Run it through run.sh, which
// builds the pinned components first; it needs root.
package cluster_test

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/cluster/rig"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

const (
	i915 = "gpu.intel.com/i915"
	xe   = "gpu.intel.com/xe"
)

// The fake node: three i915 GPUs and one xe GPU.
var nodeGPUs = []fakenode.GPU{
	{Card: 0, PCI: "0000:00:02.0", Driver: "i915", Device: "0x46a6"},
	{Card: 1, PCI: "0000:03:00.0", Driver: "xe", Device: "0xe20b"},
	{Card: 2, PCI: "0000:04:00.0", Driver: "i915", Device: "0x56a0"},
	{Card: 3, PCI: "0000:05:00.0", Driver: "i915", Device: "0x56a0"},
}

// suite is the state the ordered steps share.
type suite struct {
	r      *rig.Rig
	binary string
	// cred is the user the plugin runs as; nil is the rig's (root).
	cred    *syscall.Credential
	node    *fakenode.Node
	gpus    []rig.NodeGPU
	timings []timing
}

type timing struct {
	Pod     string        `json:"pod"`
	Running time.Duration `json:"createToRunningNs"`
}

// need fails under CI and skips elsewhere: in CI nothing may be silently
// missing. It is the product's testenv.Unavailable, so that every module
// agrees on what "running in CI" is (CI=false is not).
var need = testenv.Unavailable

func TestKubeletWithCDI(t *testing.T) {
	binary, bins := prerequisites(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := rig.New(bins)
	if r != nil {
		t.Cleanup(func() { teardown(t, r, "plugin", "kubelet", "containerd") })
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{r: r, binary: binary}
	s.setUp(ctx, t)

	steps := []struct {
		name string
		run  func(context.Context, *testing.T)
	}{
		{"a pod asking for one i915 GPU sees exactly that GPU's card and render nodes", s.oneI915},
		{"a pod asking for two i915 GPUs sees two distinct GPUs", s.twoI915},
		{"a pod asking for the xe GPU sees the xe GPU", s.oneXe},
		{"a pod asking for more GPUs than the node has is rejected and nothing else breaks", s.tooMany},
		{"after a kubelet restart the plugin registers again by itself and a new pod gets a GPU", s.kubeletRestart},
		{"with --shared-dev-num 2 two pods get the same GPU", s.shared},
		{"with --device-list-strategy cdi-annotations alone containerd still injects the nodes", s.annotations},
	}
	for _, step := range steps {
		ok := t.Run(step.name, func(t *testing.T) { step.run(ctx, t) })
		// Whatever a step left running must not leak into the next one.
		cleanStart := time.Now()
		if err := r.DeleteAllPods(ctx); err != nil {
			t.Errorf("cleaning up after %q: %v", step.name, err)
		}
		t.Logf("pods of %q removed in %s", step.name, time.Since(cleanStart).Round(time.Millisecond))
		if !ok && !s.pluginAlive() {
			t.Logf("the plugin died during %q; restarting it with defaults", step.name)
			s.restartPlugin(ctx, t, 1)
		}
	}
	s.report(t)
}

// teardown stops everything and checks that the host is as it was. On
// failure it shows the end of each named daemon's log.
func teardown(t *testing.T, r *rig.Rig, logs ...string) {
	if t.Failed() {
		for _, name := range logs {
			raw, _ := os.ReadFile(filepath.Join(r.LogDir, name+".log"))
			lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
			t.Logf("---- last lines of %s.log ----\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	}
	dir := r.Dir
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Errorf("tearing the rig down: %v", err)
	}
	t.Logf("rig torn down and host restored in %s", time.Since(start).Round(time.Millisecond))
	if changes := r.Host().Changes(); len(changes) > 0 {
		t.Errorf("the host differs from before the run: %v", changes)
	}
	if pids := rig.ProcessesWithArg(dir); len(pids) > 0 {
		t.Errorf("processes of the rig are still alive: %v", pids)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s was not removed", dir)
	}
}

func (s *suite) setUp(ctx context.Context, t *testing.T) {
	t.Helper()
	start := time.Now()
	s.setUpNode(ctx, t)
	s.startPlugin(ctx, t, 1)
	t.Logf("rig up in %s: containerd, images, kubelet, plugin registered", time.Since(start).Round(time.Millisecond))
}

// setUpNode starts containerd with the images, lays out the fake node and
// starts the kubelet: everything but the plugin.
func (s *suite) setUpNode(ctx context.Context, t *testing.T) {
	t.Helper()
	s.startContainerdAndNode(ctx, t, nodeGPUs)
	if err := s.r.StartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
}

// startContainerdAndNode starts containerd, imports the images and lays
// out the fake node of gpus.
func (s *suite) startContainerdAndNode(ctx context.Context, t *testing.T, gpus []fakenode.GPU) {
	t.Helper()
	r := s.r
	if err := r.StartContainerd(ctx); err != nil {
		t.Fatal(err)
	}
	for _, img := range s.images(t) {
		if err := r.ImportImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	node, err := fakenode.New(filepath.Join(r.Dir, "node"), fakenode.WithMode(fakenode.Mknod))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gpus {
		if err := node.AddGPU(g); err != nil {
			t.Fatal(err)
		}
	}
	s.node = node
	if s.gpus, err = rig.ReadNodeGPUs(node.Sys); err != nil {
		t.Fatal(err)
	}
	if len(s.gpus) != len(gpus) {
		t.Fatalf("fake node has %d GPUs in sysfs, want %d", len(s.gpus), len(gpus))
	}
}

// images builds the pause and busybox images as OCI archives.
func (s *suite) images(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(s.r.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pause := filepath.Join(dir, "pause")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pause, "./internal/pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building pause: %v\n%s", err, out)
	}
	pauseBin, err := os.ReadFile(pause)
	if err != nil {
		t.Fatal(err)
	}

	bb, err := exec.LookPath("busybox")
	if err != nil {
		need(t, "busybox is not installed (apt-get install busybox-static)")
	}
	if f, err := elf.Open(bb); err == nil {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				f.Close()
				need(t, "%s is dynamically linked; install busybox-static", bb)
			}
		}
		f.Close()
	}
	bbBin, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	files := []rig.ImageFile{
		{Path: "bin/", Mode: 0o755}, {Path: "tmp/", Mode: 0o1777},
		{Path: "bin/busybox", Mode: 0o755, Data: bbBin},
	}
	for _, app := range []string{"sh", "ls", "sleep", "cat", "echo"} {
		files = append(files, rig.ImageFile{Path: "bin/" + app, Mode: 0o777, Link: "busybox"})
	}
	images := map[string]rig.Image{
		"pause.tar": {Ref: rig.PauseImage, Entrypoint: []string{"/pause"},
			Files: []rig.ImageFile{{Path: "pause", Mode: 0o755, Data: pauseBin}}},
		"busybox.tar": {Ref: rig.BusyboxImage, Entrypoint: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}, Files: files},
	}
	var out []string
	for name, img := range images {
		p := filepath.Join(dir, name)
		if err := rig.WriteOCIArchive(p, img); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func (s *suite) pluginAlive() bool { p := s.r.Plugin(); return p != nil && !p.Exited() }

// startPlugin starts the plugin on the fake node and waits until the kubelet
// offers all its devices.
func (s *suite) startPlugin(ctx context.Context, t *testing.T, shared int, extra ...string) {
	t.Helper()
	before, _ := s.r.Registrations(ctx)
	if err := s.r.StartPluginAs(s.cred, s.binary, s.pluginArgs(shared, extra...)...); err != nil {
		t.Fatal(err)
	}
	if err := s.r.WaitRegistered(ctx, before, []string{i915, xe}, 30*time.Second); err != nil {
		t.Fatalf("plugin did not register: %v", err)
	}
	want := map[string]int{i915: 3 * shared, xe: 1 * shared}
	if err := s.r.WaitAllocatable(ctx, want, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(s.r.CDISpecDir, "intel.com-gpu.json")
	if _, err := os.Stat(spec); err != nil {
		t.Fatalf("the plugin registered but wrote no CDI spec: %v", err)
	}
}

// pluginArgs are the plugin's flags on the fake node.
func (s *suite) pluginArgs(shared int, extra ...string) []string {
	return append([]string{
		"--sysfs-root", s.node.Sys,
		"--dev-root", s.node.Dev,
		"--shared-dev-num", fmt.Sprint(shared),
		"--log-level", "debug",
	}, extra...)
}

func (s *suite) restartPlugin(ctx context.Context, t *testing.T, shared int, extra ...string) {
	t.Helper()
	if err := s.r.StopPlugin(); err != nil {
		t.Fatal(err)
	}
	s.startPlugin(ctx, t, shared, extra...)
}

// backToDefaults removes the step's pods, then restarts the plugin with its
// default flags.
func (s *suite) backToDefaults(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := s.r.DeleteAllPods(ctx); err != nil {
		t.Error(err)
	}
	s.restartPlugin(ctx, t, 1)
}

// runPod creates a GPU pod and returns the GPUs its container sees, checked
// against the fake node; it records the time from creation to running.
func (s *suite) runPod(ctx context.Context, t *testing.T, name string, limits map[string]int) ([]rig.NodeGPU, *rig.Running) {
	t.Helper()
	manifest, err := rig.GPUPod(name, limits)
	if err != nil {
		t.Fatal(err)
	}
	created, err := s.r.ApplyPod(name, manifest)
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.r.WaitRunning(ctx, name, 90*time.Second)
	if err != nil {
		if st, serr := s.r.KubeletPodStatus(ctx, name); serr == nil {
			t.Logf("kubelet status of %s: %+v", name, st.Status)
		}
		t.Fatalf("pod %s did not run: %v", name, err)
	}
	if !run.StartedAt.IsZero() {
		d := run.StartedAt.Sub(created)
		s.timings = append(s.timings, timing{Pod: name, Running: d})
		t.Logf("pod %s: created -> container running in %s", name, d.Round(time.Millisecond))
	}
	listing := rig.ParseListing(run.Logs)
	t.Logf("pod %s sees /dev/dri: %v, by-path links %v, by-path nodes %v", name, listing.Nodes, listing.ByPath, listing.ByPathDevs)
	got, err := rig.MatchGPUs(listing, s.gpus)
	if err != nil {
		t.Fatalf("pod %s: %v\n%s", name, err, run.Logs)
	}
	checkByPath(t, name, listing, got)
	return got, run
}

// checkByPath: by-path entries, when the spec injects them, must only name
// the pod's own GPUs and lead to their nodes.
func checkByPath(t *testing.T, pod string, l rig.Listing, gpus []rig.NodeGPU) {
	t.Helper()
	owner := func(link string) *rig.NodeGPU {
		for i := range gpus {
			if strings.HasPrefix(link, "pci-"+gpus[i].PCI+"-") {
				return &gpus[i]
			}
		}
		return nil
	}
	for link, target := range l.ByPath {
		g := owner(link)
		ok := g != nil && slices.ContainsFunc(g.Nodes, func(n rig.DevNode) bool { return n.Name == filepath.Base(target) })
		if !ok {
			t.Errorf("pod %s: by-path link %s -> %s is not one of its GPUs' nodes", pod, link, target)
		}
	}
	for link, dev := range l.ByPathDevs {
		g := owner(link)
		ok := g != nil && slices.ContainsFunc(g.Nodes, func(n rig.DevNode) bool { return n.Dev == dev })
		if !ok {
			t.Errorf("pod %s: by-path entry %s (%s) is not one of its GPUs' nodes", pod, link, dev)
		}
	}
}

func pcis(gpus []rig.NodeGPU) []string {
	var out []string
	for _, g := range gpus {
		out = append(out, g.PCI)
	}
	sort.Strings(out)
	return out
}

func requireDriver(t *testing.T, gpus []rig.NodeGPU, n int, driver string) {
	t.Helper()
	if len(gpus) != n {
		t.Fatalf("container sees %d GPUs (%v), want %d", len(gpus), pcis(gpus), n)
	}
	for _, g := range gpus {
		if g.Driver != driver {
			t.Fatalf("container sees GPU %s driven by %s, want %s", g.PCI, g.Driver, driver)
		}
	}
}

// cdiRequest returns what the kubelet asked containerd to inject: CDI names
// from the CRI field and from cdi.k8s.io annotations.
func cdiRequest(run *rig.Running) (cri []string, annotations map[string]string) {
	annotations = map[string]string{}
	info, _ := run.Inspect["info"].(map[string]any)
	cfg, _ := info["config"].(map[string]any)
	for _, key := range []string{"CDI_devices", "cdi_devices", "CDIDevices"} {
		if list, ok := cfg[key].([]any); ok {
			for _, d := range list {
				if m, ok := d.(map[string]any); ok {
					cri = append(cri, fmt.Sprint(m["name"]))
				}
			}
		}
	}
	if ann, ok := cfg["annotations"].(map[string]any); ok {
		for k, v := range ann {
			if strings.HasPrefix(k, "cdi.k8s.io/") {
				annotations[k] = fmt.Sprint(v)
			}
		}
	}
	return cri, annotations
}

func (s *suite) oneI915(ctx context.Context, t *testing.T) {
	got, run := s.runPod(ctx, t, "one-i915", map[string]int{i915: 1})
	requireDriver(t, got, 1, "i915")
	cri, ann := cdiRequest(run)
	if len(cri) != 1 || len(ann) != 0 {
		t.Errorf("with the default strategy the kubelet should pass 1 CDI device in the CRI field and no annotation; got CDI %v, annotations %v", cri, ann)
	}
	assigned, err := s.r.AssignedDevices(ctx, "one-i915")
	if err != nil {
		t.Fatal(err)
	}
	if len(assigned[i915]) != 1 {
		t.Errorf("kubelet assigned %v, want one %s device", assigned, i915)
	}
}

func (s *suite) twoI915(ctx context.Context, t *testing.T) {
	got, _ := s.runPod(ctx, t, "two-i915", map[string]int{i915: 2})
	requireDriver(t, got, 2, "i915")
	if got[0].PCI == got[1].PCI {
		t.Fatalf("both GPUs are %s", got[0].PCI)
	}
}

func (s *suite) oneXe(ctx context.Context, t *testing.T) {
	got, _ := s.runPod(ctx, t, "one-xe", map[string]int{xe: 1})
	requireDriver(t, got, 1, "xe")
}

func (s *suite) tooMany(ctx context.Context, t *testing.T) {
	first, _ := s.runPod(ctx, t, "holder", map[string]int{i915: 1})
	manifest, err := rig.GPUPod("too-many", map[string]int{i915: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.r.ApplyPod("too-many", manifest); err != nil {
		t.Fatal(err)
	}
	var st *rig.KubeletPod
	err = rig.WaitFor(30*time.Second, 200*time.Millisecond, func() (bool, error) {
		var err error
		st, err = s.r.KubeletPodStatus(ctx, "too-many")
		return err == nil && st.Status.Phase == "Failed", err
	})
	if err != nil {
		t.Fatalf("pod asking for 4 of 3 i915 GPUs was not rejected: %v", err)
	}
	t.Logf("kubelet rejected too-many: %s: %s", st.Status.Reason, st.Status.Message)
	if st.Status.Reason != "UnexpectedAdmissionError" {
		t.Errorf("rejection reason %q, want UnexpectedAdmissionError", st.Status.Reason)
	}
	if ctrs, err := s.r.Containers(ctx, "too-many"); err != nil || len(ctrs) != 0 {
		t.Errorf("rejected pod has containers %v (err %v)", ctrs, err)
	}
	// Nothing else broke: the holder still runs, the plugin lives, and a new
	// pod gets one of the two GPUs left.
	if ctrs, err := s.r.Containers(ctx, "holder"); err != nil || len(ctrs) != 1 || ctrs[0].State != "CONTAINER_RUNNING" {
		t.Errorf("holder pod is no longer running: %v (err %v)", ctrs, err)
	}
	if !s.pluginAlive() {
		t.Fatal("the plugin died")
	}
	after, _ := s.runPod(ctx, t, "after-reject", map[string]int{i915: 1})
	requireDriver(t, after, 1, "i915")
	if after[0].PCI == first[0].PCI {
		t.Errorf("new pod got %s, which the holder pod already has", after[0].PCI)
	}
}

func (s *suite) kubeletRestart(ctx context.Context, t *testing.T) {
	before, _ := s.runPod(ctx, t, "before-restart", map[string]int{i915: 1})
	pid := s.r.Plugin().PID()
	if err := s.r.StopKubelet(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := s.r.StartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.r.WaitRegistered(ctx, nil, []string{i915, xe}, 30*time.Second); err != nil {
		t.Fatalf("plugin did not register again after the kubelet restart: %v", err)
	}
	t.Logf("plugin registered again %s after the kubelet was started again", time.Since(restarted).Round(time.Millisecond))
	if err := s.r.WaitAllocatable(ctx, map[string]int{i915: 3, xe: 1}, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if s.r.Plugin().PID() != pid || !s.pluginAlive() {
		t.Fatal("the plugin process was replaced; it must re-register by itself")
	}
	after, _ := s.runPod(ctx, t, "after-restart", map[string]int{i915: 1})
	requireDriver(t, after, 1, "i915")
	if after[0].PCI == before[0].PCI {
		t.Errorf("pod after restart got %s, which the pod from before the restart still holds", after[0].PCI)
	}
}

func (s *suite) shared(ctx context.Context, t *testing.T) {
	s.restartPlugin(ctx, t, 2)
	t.Cleanup(func() { s.backToDefaults(ctx, t) })
	// The node has one xe GPU: with two slots on it, both pods must land there.
	a, _ := s.runPod(ctx, t, "shared-a", map[string]int{xe: 1})
	b, _ := s.runPod(ctx, t, "shared-b", map[string]int{xe: 1})
	requireDriver(t, a, 1, "xe")
	requireDriver(t, b, 1, "xe")
	if a[0].PCI != b[0].PCI {
		t.Fatalf("shared pods got %s and %s", a[0].PCI, b[0].PCI)
	}
	ida, _ := s.r.AssignedDevices(ctx, "shared-a")
	idb, _ := s.r.AssignedDevices(ctx, "shared-b")
	if len(ida[xe]) != 1 || len(idb[xe]) != 1 || ida[xe][0] == idb[xe][0] {
		t.Errorf("shared pods should hold two distinct device IDs of the same GPU; got %v and %v", ida, idb)
	}
}

func (s *suite) annotations(ctx context.Context, t *testing.T) {
	s.restartPlugin(ctx, t, 1, "--device-list-strategy", "cdi-annotations")
	t.Cleanup(func() { s.backToDefaults(ctx, t) })
	got, run := s.runPod(ctx, t, "annotated", map[string]int{i915: 1})
	requireDriver(t, got, 1, "i915")
	cri, ann := cdiRequest(run)
	if len(cri) != 0 || len(ann) == 0 {
		t.Errorf("with cdi-annotations the request should be in cdi.k8s.io annotations only; got CDI %v, annotations %v", cri, ann)
	}
	t.Logf("annotations passed to containerd: %v", ann)
}

// report logs the create->running times and writes them to
// $E2E_RESULTS_FILE (JSON) for run.sh.
func (s *suite) report(t *testing.T) {
	if len(s.timings) == 0 {
		return
	}
	ds := make([]time.Duration, 0, len(s.timings))
	for _, tm := range s.timings {
		ds = append(ds, tm.Running)
	}
	slices.Sort(ds)
	summary := map[string]any{
		"pods":     len(ds),
		"minMs":    ds[0].Milliseconds(),
		"medianMs": ds[len(ds)/2].Milliseconds(),
		"maxMs":    ds[len(ds)-1].Milliseconds(),
		"each":     s.timings,
	}
	t.Logf("pod created -> container running with a GPU: min %s, median %s, max %s over %d pods",
		ds[0].Round(time.Millisecond), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), len(ds))
	writeResults(t, t.Name(), summary)
}

// writeResults adds a test's figures to $E2E_RESULTS_FILE, a JSON object
// with one entry per test, for run.sh.
func writeResults(t *testing.T, test string, figures any) {
	out := os.Getenv("E2E_RESULTS_FILE")
	if out == "" {
		return
	}
	all := map[string]json.RawMessage{}
	if raw, err := os.ReadFile(out); err == nil {
		if err := json.Unmarshal(raw, &all); err != nil {
			all = map[string]json.RawMessage{} // an older flat file: start again
		}
	}
	raw, err := json.Marshal(figures)
	if err != nil {
		t.Errorf("encoding results: %v", err)
		return
	}
	all[test] = raw
	raw, _ = json.MarshalIndent(all, "", "  ")
	if err := os.WriteFile(out, raw, 0o644); err != nil {
		t.Errorf("writing results: %v", err)
	}
}
