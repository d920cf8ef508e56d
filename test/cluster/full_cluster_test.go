//go:build e2e

package cluster_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/cluster/rig"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

const (
	pluginImage = "e2e.local/intel-gpu-cdi:e2e"
	// baseImage is the image name the kustomize base deploys; the test
	// overlay swaps it for the locally loaded one.
	baseImage  = "ghcr.io/intel-gpu-cdi/intel-gpu-cdi"
	baseDir    = "../../deployments/kustomize/base"
	nonRootDir = "../../deployments/kustomize/overlays/non-root"
)

// TestFullCluster runs etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and the kubelet, deploys the plugin from the kustomize base
// as a DaemonSet, and shows a scheduled pod getting a GPU.
func TestFullCluster(t *testing.T) {
	if os.Getenv("E2E_FULL_CLUSTER") != "1" {
		t.Skip("set E2E_FULL_CLUSTER=1 to run the full cluster (etcd, API server, scheduler, DaemonSet)")
	}
	binary, bins := prerequisites(t)
	if bins.ControlPlane == "" || bins.Etcd == "" {
		need(t, "control plane not built: run build.sh full")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		need(t, "ip (iproute2) is needed to remove the CNI bridge")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := rig.New(bins)
	if r != nil {
		t.Cleanup(func() {
			teardown(t, r, "plugin", "kubelet", "containerd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "etcd")
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.EnableCNI(); err != nil {
		t.Fatal(err)
	}
	if err := r.StartContainerd(ctx); err != nil {
		t.Fatal(err)
	}
	s := &suite{r: r}
	images := append(s.images(t), pluginImageArchive(t, r.Dir, binary))
	for _, img := range images {
		if err := r.ImportImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	node, err := fakenode.New(filepath.Join(r.Dir, "node"), fakenode.WithMode(fakenode.Mknod))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range nodeGPUs {
		if err := node.AddGPU(g); err != nil {
			t.Fatal(err)
		}
	}
	if s.gpus, err = rig.ReadNodeGPUs(node.Sys); err != nil {
		t.Fatal(err)
	}
	if err := r.StartControlPlane(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.StartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitNode(ctx, r, 120*time.Second, func(n nodeJSON) error {
		if !n.ready() {
			return errors.New("node not Ready")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("one-node cluster up and node Ready in %s", time.Since(start).Round(time.Millisecond))

	t.Run("the plugin deployed from the kustomize base as a DaemonSet advertises the fake node's GPUs", func(t *testing.T) {
		deployed := time.Now()
		manifest := renderDaemonSet(ctx, t, r, node, baseDir)
		if out, err := r.Kubectl(ctx, "apply", "-f", manifest); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		err := waitNode(ctx, r, 120*time.Second, func(n nodeJSON) error {
			if n.Status.Allocatable["gpu.intel.com/i915"] != "3" || n.Status.Allocatable["gpu.intel.com/xe"] != "1" {
				return fmt.Errorf("node allocatable %v", n.Status.Allocatable)
			}
			return nil
		})
		if err != nil {
			out, _ := r.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
			t.Fatalf("%v\n%s", err, out)
		}
		t.Logf("DaemonSet applied -> node allocatable shows 3 i915 and 1 xe in %s", time.Since(deployed).Round(time.Millisecond))
	})

	// The probes need the plugin's --probe-address (INTEL_GPU_CDI_PROBE_ADDRESS,
	// set by the base): a binary without it never turns Ready.
	t.Run("the DaemonSet's pod turns Ready through /readyz and its liveness probe never restarts it", func(t *testing.T) {
		selector := "app.kubernetes.io/name=intel-gpu-cdi"
		if out, err := r.Kubectl(ctx, "-n", "kube-system", "wait", "--for=condition=Ready", "pod", "-l", selector, "--timeout=60s"); err != nil {
			desc, _ := r.Kubectl(ctx, "-n", "kube-system", "describe", "pod", "-l", selector)
			t.Fatalf("%v\n%s\n%s", err, out, desc)
		}
		out, err := r.Kubectl(ctx, "-n", "kube-system", "get", "pod", "-l", selector, "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != "0" {
			t.Errorf("restart count %q, want 0", got)
		}
	})

	t.Run("a pod scheduled by the scheduler gets exactly one i915 GPU", func(t *testing.T) {
		manifest, err := rig.ClusterGPUPod("scheduled", map[string]int{i915: 1})
		if err != nil {
			t.Fatal(err)
		}
		created := time.Now()
		if out, err := kubectlStdin(ctx, r, manifest, "create", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		run, err := r.WaitPodRunning(ctx, "scheduled", 120*time.Second, nil)
		if err != nil {
			out, _ := r.Kubectl(ctx, "describe", "pod", "scheduled")
			t.Fatalf("%v\n%s", err, out)
		}
		t.Logf("pod scheduled: created -> container running in %s", run.StartedAt.Sub(created).Round(time.Millisecond))
		out, err := r.Kubectl(ctx, "get", "pod", "scheduled", "-o", "jsonpath={.spec.nodeName} {.status.conditions[?(@.type==\"PodScheduled\")].status}")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != rig.NodeName+" True" {
			t.Errorf("pod nodeName and PodScheduled = %q, want %q", got, rig.NodeName+" True")
		}
		listing := rig.ParseListing(run.Logs)
		t.Logf("pod scheduled sees /dev/dri: %v, by-path nodes %v", listing.Nodes, listing.ByPathDevs)
		got, err := rig.MatchGPUs(listing, s.gpus)
		if err != nil {
			t.Fatal(err)
		}
		requireDriver(t, got, 1, "i915")
	})

	t.Run("recursiveReadOnly Enabled works here: a pod cannot write a host cgroup through a read-only hostPath of /sys", func(t *testing.T) {
		// The DaemonSet above already mounts /dev/dri (and the fake sysfs)
		// with Enabled and runs; this shows the mode does what it says.
		p := newSysfsProbe(t)
		manifest, err := rig.ClusterScriptPod("rro", p.script("/sys", "9"), p.volume("/sys", "Enabled"))
		if err != nil {
			t.Fatal(err)
		}
		if out, err := kubectlStdin(ctx, r, manifest, "create", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		run, err := r.WaitPodRunning(ctx, "rro", 120*time.Second, nil)
		if err != nil {
			out, _ := r.Kubectl(ctx, "describe", "pod", "rro")
			t.Fatalf("%v\n%s", err, out)
		}
		out := strings.Join(section(run.Logs, "write"), " ")
		t.Logf("container: %q", out)
		if got := p.read(); got != p.original {
			t.Errorf("host %s = %s, want %s untouched", p.target, got, p.original)
			p.reset()
		}
		if !strings.Contains(out, "Read-only file system") {
			t.Errorf("the write gave %q, want Read-only file system", out)
		}
	})

	t.Run("a pod asking for more GPUs than any node has stays Pending as unschedulable", func(t *testing.T) {
		manifest, err := rig.ClusterGPUPod("unschedulable", map[string]int{i915: 4})
		if err != nil {
			t.Fatal(err)
		}
		if out, err := kubectlStdin(ctx, r, manifest, "create", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		err = rig.WaitFor(60*time.Second, 500*time.Millisecond, func() (bool, error) {
			out, err := r.Kubectl(ctx, "get", "pod", "unschedulable", "-o", "jsonpath={.status.phase} {.status.conditions[?(@.type==\"PodScheduled\")].reason} {.status.conditions[?(@.type==\"PodScheduled\")].message}")
			if err != nil {
				return false, err
			}
			got := string(out)
			return strings.HasPrefix(got, "Pending Unschedulable") && strings.Contains(got, "Insufficient gpu.intel.com/i915"), errors.New(got)
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the non-root overlay on a node prepared by the shipped files serves a scheduled pod one GPU", func(t *testing.T) {
		s.nonRootDaemonSet(ctx, t, node)
	})
}

// nonRootDaemonSet replaces the base's DaemonSet by the non-root overlay's,
// on a node prepared as deployments/README.md says: the plugin runs in its
// pod as the overlay's user, registers, and a scheduled pod gets a GPU.
func (s *suite) nonRootDaemonSet(ctx context.Context, t *testing.T, node *fakenode.Node) {
	r := s.r
	for _, tool := range []string{"systemd-tmpfiles", "setfacl", "getfacl"} {
		if _, err := exec.LookPath(tool); err != nil {
			need(t, "%s is not installed (apt-get install systemd acl)", tool)
		}
	}
	uid, gid := overlayUser(t)
	for _, args := range [][]string{
		{"delete", "pod", "--all", "--wait=true"},
		{"-n", "kube-system", "delete", "daemonset", "intel-gpu-cdi", "--wait=true"},
		{"-n", "kube-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=intel-gpu-cdi", "--timeout=60s"},
	} {
		if out, err := r.Kubectl(ctx, args...); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	if err := r.Host().KeepACL(rig.DevicePluginDir); err != nil {
		t.Fatal(err)
	}
	prepareNode(t, r)
	stop := startPathUnit(ctx, t, r)
	defer stop()

	before, _ := r.Registrations(ctx)
	manifest := renderDaemonSet(ctx, t, r, node, nonRootDir)
	if out, err := r.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := r.WaitRegistered(ctx, before, []string{i915, xe}, 120*time.Second); err != nil {
		out, _ := r.Kubectl(ctx, "-n", "kube-system", "logs", "-l", "app.kubernetes.io/name=intel-gpu-cdi", "--tail=20")
		t.Fatalf("the non-root DaemonSet's plugin did not register: %v\n%s", err, out)
	}
	spec := filepath.Join(r.CDISpecDir, "intel.com-gpu.json")
	if owner, group := owner(t, spec); owner != uid || group != gid {
		t.Errorf("%s is owned by %d:%d, want the overlay's %d:%d", spec, owner, group, uid, gid)
	}
	if err := waitNode(ctx, r, 60*time.Second, func(n nodeJSON) error {
		if n.Status.Allocatable[i915] != "3" || n.Status.Allocatable[xe] != "1" {
			return fmt.Errorf("node allocatable %v", n.Status.Allocatable)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	manifestPod, err := rig.ClusterGPUPod("scheduled-non-root", map[string]int{i915: 1})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectlStdin(ctx, r, manifestPod, "create", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	run, err := r.WaitPodRunning(ctx, "scheduled-non-root", 120*time.Second, nil)
	if err != nil {
		out, _ := r.Kubectl(ctx, "describe", "pod", "scheduled-non-root")
		t.Fatalf("%v\n%s", err, out)
	}
	got, err := rig.MatchGPUs(rig.ParseListing(run.Logs), s.gpus)
	if err != nil {
		t.Fatal(err)
	}
	requireDriver(t, got, 1, "i915")
	t.Logf("the non-root plugin (%d:%d, in its pod) registered and served %s", uid, gid, got[0].PCI)
}

// prerequisites returns the binary under test and the built components, or
// skips (fails under CI).
func prerequisites(t *testing.T) (string, rig.Bins) {
	t.Helper()
	if os.Geteuid() != 0 {
		need(t, "needs root (mknod, mounts, cgroups)")
	}
	binary := os.Getenv("E2E_BINARY")
	if binary == "" {
		need(t, "E2E_BINARY (the intel-gpu-cdi binary) is not set")
	}
	if _, err := os.Stat(binary); err != nil {
		need(t, "E2E_BINARY: %v", err)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		need(t, "runc is not installed (apt-get install runc)")
	}
	versions, err := rig.ReadVersions("versions.env")
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("E2E_CACHE_DIR")
	if cache == "" {
		cache = "/var/cache/intel-gpu-cdi-e2e"
	}
	bins, err := rig.FindBins(cache, versions)
	if err != nil {
		need(t, "%v", err)
	}
	return binary, bins
}

// pluginImageArchive builds the image the way deployments/image/Containerfile.scratch
// does: a static binary at /usr/local/bin, no base image. The binary under
// test is used when it is static; otherwise (a cgo build) the same source is
// built again with CGO_ENABLED=0, as the Containerfile requires.
func pluginImageArchive(t *testing.T, dir, binary string) string {
	t.Helper()
	bin := binary
	if !isStatic(t, binary) {
		bin = filepath.Join(dir, "images", "intel-gpu-cdi-static")
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/intel-gpu-cdi")
		build.Dir = "../.."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building a static plugin binary for the image: %v\n%s", err, out)
		}
		t.Logf("%s is dynamically linked: the image holds a CGO_ENABLED=0 build of the same source", binary)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "images", "intel-gpu-cdi.tar")
	err = rig.WriteOCIArchive(archive, rig.Image{
		Ref:        pluginImage,
		Entrypoint: []string{"/usr/local/bin/intel-gpu-cdi"},
		Cmd:        []string{"plugin"},
		Files: []rig.ImageFile{
			{Path: "usr/", Mode: 0o755}, {Path: "usr/local/", Mode: 0o755}, {Path: "usr/local/bin/", Mode: 0o755},
			{Path: "usr/local/bin/intel-gpu-cdi", Mode: 0o755, Data: data},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return archive
}

// renderDaemonSet renders a kustomization of deployments/ (the base, or an
// overlay of it) through an overlay that only swaps the image for the local
// one, then points the DaemonSet's host paths at the fake node and the rig's
// CDI directory. The fake trees are mounted at their host paths, so the
// spec's hostPaths are right on the host too.
func renderDaemonSet(ctx context.Context, t *testing.T, r *rig.Rig, node *fakenode.Node, dir string) string {
	t.Helper()
	base, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "kustomization.yaml")); err != nil {
		need(t, "kustomize base: %v", err)
	}
	overlay := filepath.Join(r.Dir, "overlay-"+filepath.Base(dir))
	if err := os.MkdirAll(overlay, 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(overlay, base)
	if err != nil {
		t.Fatal(err)
	}
	name, tag, _ := strings.Cut(pluginImage, ":")
	kustomization := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\nimages:\n  - name: %s\n    newName: %s\n    newTag: %s\n", rel, baseImage, name, tag)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	rendered, err := r.Kubectl(ctx, "kustomize", overlay)
	if err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	for _, doc := range strings.Split(string(rendered), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("parsing rendered base: %v", err)
		}
		if obj["kind"] == "DaemonSet" {
			if err := pointAtFakeNode(obj, node, r.CDISpecDir); err != nil {
				t.Fatal(err)
			}
		}
		objs = append(objs, obj)
	}
	raw, err := json.MarshalIndent(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.Dir, "deploy-"+filepath.Base(dir)+".json")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pointAtFakeNode rewrites the DaemonSet's node paths: /dev/dri comes from
// the fake node (mounted at the same path inside), the CDI spec goes where
// the rig's containerd reads. The base mounts no sysfs (the plugin reads the
// container's own /sys, which here has no GPU), so the fake node's sysfs is
// added, read-only as the base mounts /dev/dri.
func pointAtFakeNode(ds map[string]any, node *fakenode.Node, cdiDir string) error {
	podSpec, _ := dig(ds, "spec", "template", "spec").(map[string]any)
	if podSpec == nil {
		return errors.New("DaemonSet has no pod template")
	}
	podSpec["volumes"] = append(podSpec["volumes"].([]any),
		map[string]any{"name": "fake-sysfs", "hostPath": map[string]any{"path": node.Sys, "type": "Directory"}})
	hostPaths := map[string]string{"dev-dri": filepath.Join(node.Dev, "dri"), "cdi-specs": cdiDir}
	mountPaths := map[string]string{"dev-dri": filepath.Join(node.Dev, "dri")}
	env := map[string]string{"INTEL_GPU_CDI_SYSFS_ROOT": node.Sys, "INTEL_GPU_CDI_DEV_ROOT": node.Dev, "INTEL_GPU_CDI_LOG_LEVEL": "debug"}
	found := 0
	for _, v := range asList(podSpec["volumes"]) {
		if p, ok := hostPaths[fmt.Sprint(v["name"])]; ok {
			v["hostPath"].(map[string]any)["path"] = p
			found++
		}
	}
	if found != len(hostPaths) {
		return fmt.Errorf("DaemonSet volumes: found %d of %v", found, hostPaths)
	}
	for _, c := range asList(podSpec["containers"]) {
		c["volumeMounts"] = append(c["volumeMounts"].([]any),
			map[string]any{"name": "fake-sysfs", "mountPath": node.Sys, "readOnly": true, "recursiveReadOnly": "Enabled"})
		for _, m := range asList(c["volumeMounts"]) {
			if p, ok := mountPaths[fmt.Sprint(m["name"])]; ok {
				m["mountPath"] = p
			}
		}
		var envs []any
		for _, e := range asList(c["env"]) {
			if _, ok := env[fmt.Sprint(e["name"])]; !ok {
				envs = append(envs, e)
			}
		}
		for k, v := range env {
			envs = append(envs, map[string]any{"name": k, "value": v})
		}
		c["env"] = envs
	}
	return nil
}

// isStatic reports whether an ELF binary needs no dynamic loader.
func isStatic(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

func dig(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func asList(v any) []map[string]any {
	var out []map[string]any
	list, _ := v.([]any)
	for _, item := range list {
		if m, ok := item.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func kubectlStdin(ctx context.Context, r *rig.Rig, stdin []byte, args ...string) ([]byte, error) {
	path := filepath.Join(r.Dir, fmt.Sprintf("stdin-%d.json", time.Now().UnixNano()))
	if err := os.WriteFile(path, stdin, 0o644); err != nil {
		return nil, err
	}
	for i, a := range args {
		if a == "-" {
			args[i] = path
		}
	}
	return r.Kubectl(ctx, args...)
}

type nodeJSON struct {
	Status struct {
		Allocatable map[string]string `json:"allocatable"`
		Conditions  []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func (n nodeJSON) ready() bool {
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func waitNode(ctx context.Context, r *rig.Rig, timeout time.Duration, check func(nodeJSON) error) error {
	return rig.WaitFor(timeout, 500*time.Millisecond, func() (bool, error) {
		out, err := r.Kubectl(ctx, "get", "node", rig.NodeName, "-o", "json")
		if err != nil {
			return false, err
		}
		var n nodeJSON
		if err := json.NewDecoder(bytes.NewReader(out)).Decode(&n); err != nil {
			return false, err
		}
		err = check(n)
		return err == nil, err
	})
}
