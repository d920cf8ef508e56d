//go:build e2e

package cluster_test

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

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
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := startFullCluster(ctx, t, nodeGPUs, "plugin")
	r, api := s.r, s.r.API()
	if err := r.ImportImage(ctx, pluginImageArchive(t, r.Dir, s.binary)); err != nil {
		t.Fatal(err)
	}
	const selector = "app.kubernetes.io/name=intel-gpu-cdi"

	t.Run("the plugin deployed from the kustomize base as a DaemonSet advertises the fake node's GPUs", func(t *testing.T) {
		deployed := time.Now()
		if err := api.Apply(ctx, renderDaemonSet(t, r, s.node, baseDir)...); err != nil {
			t.Fatal(err)
		}
		err := waitNode(ctx, api, 120*time.Second, func(n *corev1.Node) error {
			return allocatable(n, map[string]int64{i915: 3, xe: 1})
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, api.Logs(ctx, "kube-system", selector, 20))
		}
		t.Logf("DaemonSet applied -> node allocatable shows 3 i915 and 1 xe in %s", time.Since(deployed).Round(time.Millisecond))
	})

	// The probes need the plugin's --probe-address (INTEL_GPU_CDI_PROBE_ADDRESS,
	// set by the base): a binary without it never turns Ready.
	t.Run("the DaemonSet's pod turns Ready through /readyz and its liveness probe never restarts it", func(t *testing.T) {
		pod, err := waitDaemonPodReady(ctx, api, selector, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range pod.Status.ContainerStatuses {
			if c.RestartCount != 0 {
				t.Errorf("container %s restarted %d times, want 0", c.Name, c.RestartCount)
			}
		}
	})

	t.Run("a pod scheduled by the scheduler gets exactly one i915 GPU", func(t *testing.T) {
		manifest, err := rig.ClusterGPUPod("scheduled", map[string]int{i915: 1})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := s.runClusterPod(ctx, t, "scheduled", manifest)
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
		if _, _, err := api.CreatePod(ctx, manifest); err != nil {
			t.Fatal(err)
		}
		run, err := r.WaitPodRunning(ctx, "rro", 120*time.Second, nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, api.Describe(ctx, "default", "rro"))
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
		if _, _, err := api.CreatePod(ctx, manifest); err != nil {
			t.Fatal(err)
		}
		if _, err := waitUnschedulable(ctx, api, "unschedulable", "Insufficient gpu.intel.com/i915"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the non-root overlay on a node prepared by the shipped files serves a scheduled pod one GPU", func(t *testing.T) {
		s.nonRootDaemonSet(ctx, t)
	})
}

// startFullCluster brings up a one-node cluster on a fake node of gpus:
// containerd with the pause and busybox images, etcd, the API server, the
// controller manager, the scheduler and the kubelet as a registered node,
// Ready through the bridge CNI. The rig is torn down when the test ends;
// logs names the extra daemons whose logs a failure shows.
func startFullCluster(ctx context.Context, t *testing.T, gpus []fakenode.GPU, logs ...string) *suite {
	t.Helper()
	binary, bins := prerequisites(t)
	if _, err := exec.LookPath("ip"); err != nil {
		need(t, "ip (iproute2) is needed to remove the CNI bridge")
	}
	r, err := rig.New(bins)
	if r != nil {
		t.Cleanup(func() {
			teardown(t, r, append(logs, "kubelet", "containerd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "etcd")...)
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.EnableCNI(); err != nil {
		t.Fatal(err)
	}
	s := &suite{r: r, binary: binary}
	s.startContainerdAndNode(ctx, t, gpus)
	if err := r.StartControlPlane(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.StartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitNode(ctx, r.API(), 120*time.Second, nodeSchedulable); err != nil {
		t.Fatal(err)
	}
	t.Logf("one-node cluster up and node Ready in %s", time.Since(start).Round(time.Millisecond))
	return s
}

// runClusterPod creates a pod through the API server, waits until its
// container runs and has listed /dev/dri, and returns the GPUs it sees,
// checked against the fake node, and how long it took from the create
// request to the container's start.
func (s *suite) runClusterPod(ctx context.Context, t *testing.T, name string, manifest []byte) ([]rig.NodeGPU, time.Duration) {
	t.Helper()
	api := s.r.API()
	_, created, err := api.CreatePod(ctx, manifest)
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.r.WaitPodRunning(ctx, name, 120*time.Second, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, api.Describe(ctx, "default", name))
	}
	took := run.StartedAt.Sub(created)
	pod, err := api.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := rig.PodCondition(pod, corev1.PodScheduled); pod.Spec.NodeName != rig.NodeName || c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("pod %s: nodeName %q, PodScheduled %+v; want %s, True", name, pod.Spec.NodeName, c, rig.NodeName)
	}
	listing := rig.ParseListing(run.Logs)
	t.Logf("pod %s: created -> container running in %s; sees /dev/dri: %v, by-path nodes %v", name, took.Round(time.Millisecond), listing.Nodes, listing.ByPathDevs)
	got, err := rig.MatchGPUs(listing, s.gpus)
	if err != nil {
		t.Fatalf("pod %s: %v\n%s", name, err, run.Logs)
	}
	checkByPath(t, name, listing, got)
	return got, took
}

// waitUnschedulable waits until the pod is Pending with the scheduler's
// verdict Unschedulable and a message that contains want, and returns that
// message.
func waitUnschedulable(ctx context.Context, api *rig.API, name, want string) (string, error) {
	var msg string
	_, err := api.WaitPod(ctx, "default", name, 60*time.Second, func(p *corev1.Pod) error {
		c := rig.PodCondition(p, corev1.PodScheduled)
		if c == nil {
			return fmt.Errorf("phase %s, no PodScheduled condition yet", p.Status.Phase)
		}
		msg = c.Message
		if p.Status.Phase != corev1.PodPending || c.Status != corev1.ConditionFalse || c.Reason != corev1.PodReasonUnschedulable || !strings.Contains(c.Message, want) {
			return fmt.Errorf("phase %s, PodScheduled %s %s %q; want Pending, False Unschedulable with %q", p.Status.Phase, c.Status, c.Reason, c.Message, want)
		}
		return nil
	})
	return msg, err
}

// waitDaemonPodReady waits until the one pod the selector matches in
// kube-system is Ready, and returns it.
func waitDaemonPodReady(ctx context.Context, api *rig.API, selector string, timeout time.Duration) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := rig.WaitFor(timeout, 250*time.Millisecond, func() (bool, error) {
		list, err := api.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		if len(list.Items) != 1 {
			return false, fmt.Errorf("%d pods match %s, want 1", len(list.Items), selector)
		}
		pod = &list.Items[0]
		if c := rig.PodCondition(pod, corev1.PodReady); c == nil || c.Status != corev1.ConditionTrue {
			return false, fmt.Errorf("pod %s not Ready: %+v", pod.Name, c)
		}
		return true, nil
	})
	if err != nil && pod != nil {
		return pod, fmt.Errorf("%w\n%s\n%s", err, api.Describe(ctx, "kube-system", pod.Name), api.Logs(ctx, "kube-system", selector, 20))
	}
	return pod, err
}

// nonRootDaemonSet replaces the base's DaemonSet by the non-root overlay's,
// on a node prepared as deployments/README.md says: the plugin runs in its
// pod as the overlay's user, registers, and a scheduled pod gets a GPU.
func (s *suite) nonRootDaemonSet(ctx context.Context, t *testing.T) {
	r, api := s.r, s.r.API()
	for _, tool := range []string{"systemd-tmpfiles", "setfacl", "getfacl"} {
		if _, err := exec.LookPath(tool); err != nil {
			need(t, "%s is not installed (apt-get install systemd acl)", tool)
		}
	}
	uid, gid := overlayUser(t)
	const selector = "app.kubernetes.io/name=intel-gpu-cdi"
	if err := api.DeletePods(ctx, "default", "", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	ds := &unstructured.Unstructured{}
	ds.SetAPIVersion("apps/v1")
	ds.SetKind("DaemonSet")
	ds.SetNamespace("kube-system")
	ds.SetName("intel-gpu-cdi")
	if err := api.Delete(ctx, 60*time.Second, ds); err != nil {
		t.Fatal(err)
	}
	if err := api.DeletePods(ctx, "kube-system", selector, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// Until the node shows the root plugin's devices gone, its allocatable
	// is stale: a count seen after the new plugin registers could be the
	// old one's, and a pod scheduled on it is refused by the kubelet, whose
	// devices are still those the stopped plugin left unhealthy.
	if err := waitNode(ctx, api, 60*time.Second, func(n *corev1.Node) error {
		return allocatable(n, map[string]int64{i915: 0, xe: 0})
	}); err != nil {
		t.Fatalf("the root plugin stopped, but its devices stay allocatable: %v", err)
	}
	if err := r.Host().KeepACL(rig.DevicePluginDir); err != nil {
		t.Fatal(err)
	}
	prepareNode(t, r)
	stop := startPathUnit(ctx, t, r)
	defer stop()

	before, _ := r.Registrations(ctx)
	if err := api.Apply(ctx, renderDaemonSet(t, r, s.node, nonRootDir)...); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitRegistered(ctx, before, []string{i915, xe}, 120*time.Second); err != nil {
		t.Fatalf("the non-root DaemonSet's plugin did not register: %v\n%s", err, api.Logs(ctx, "kube-system", selector, 20))
	}
	if err := waitNode(ctx, api, 60*time.Second, func(n *corev1.Node) error {
		return allocatable(n, map[string]int64{i915: 3, xe: 1})
	}); err != nil {
		t.Fatal(err)
	}
	manifest, err := rig.ClusterGPUPod("scheduled-non-root", map[string]int{i915: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.runClusterPod(ctx, t, "scheduled-non-root", manifest)
	requireDriver(t, got, 1, "i915")
	t.Logf("the non-root plugin (%d:%d, in its pod) registered and served %s", uid, gid, got[0].PCI)

	// The root plugin's spec is byte-identical to what the non-root one
	// would write, so the non-root one keeps it as it is: its own write
	// shows when the node changes. A GPU comes: the spec must be rewritten
	// by the overlay's user, through the node preparation's ACL.
	spec := filepath.Join(r.CDISpecDir, "intel.com-gpu.json")
	if err := s.node.AddGPU(hotplugGPU); err != nil {
		t.Fatal(err)
	}
	if err := waitNode(ctx, api, 60*time.Second, func(n *corev1.Node) error {
		return allocatable(n, map[string]int64{i915: 4, xe: 1})
	}); err != nil {
		t.Fatalf("after adding GPU %s: %v\n%s", hotplugGPU.PCI, err, api.Logs(ctx, "kube-system", selector, 20))
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), hotplugGPU.PCI) {
		t.Errorf("%s does not list the added GPU %s", spec, hotplugGPU.PCI)
	}
	if owner, group := owner(t, spec); owner != uid || group != gid {
		t.Errorf("%s is owned by %d:%d after the non-root plugin rewrote it, want the overlay's %d:%d", spec, owner, group, uid, gid)
	}
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

// pluginImageArchive builds the device plugin's image the way
// deployments/image/Containerfile.scratch does.
func pluginImageArchive(t *testing.T, dir, binary string) string {
	t.Helper()
	return scratchImage(t, dir, binary, "./cmd/intel-gpu-cdi", pluginImage, "plugin")
}

// scratchImage builds an image as deployments/image/Containerfile.scratch
// does: a static binary at /usr/local/bin, its entrypoint, no base image.
// The binary under test is used when it is static; otherwise (a cgo build)
// the same source, pkg, is built again with CGO_ENABLED=0, as the
// Containerfile requires.
func scratchImage(t *testing.T, dir, binary, pkg, ref string, cmd ...string) string {
	t.Helper()
	name := filepath.Base(pkg)
	bin := binary
	if !isStatic(t, binary) {
		bin = filepath.Join(dir, "images", name+"-static")
		build := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
		build.Dir = "../.."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building a static %s for the image: %v\n%s", name, err, out)
		}
		t.Logf("%s is dynamically linked: the image holds a CGO_ENABLED=0 build of the same source", binary)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "images", name+".tar")
	err = rig.WriteOCIArchive(archive, rig.Image{
		Ref:        ref,
		Entrypoint: []string{"/usr/local/bin/" + name},
		Cmd:        cmd,
		Files: []rig.ImageFile{
			{Path: "usr/", Mode: 0o755}, {Path: "usr/local/", Mode: 0o755}, {Path: "usr/local/bin/", Mode: 0o755},
			{Path: "usr/local/bin/" + name, Mode: 0o755, Data: data},
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
func renderDaemonSet(t *testing.T, r *rig.Rig, node *fakenode.Node, dir string) []*unstructured.Unstructured {
	t.Helper()
	objs := renderWithLocalImage(t, r, dir, baseImage, pluginImage)
	for _, obj := range objs {
		if obj.GetKind() == "DaemonSet" {
			if err := pointAtFakeNode(obj.Object, node, r.CDISpecDir); err != nil {
				t.Fatal(err)
			}
		}
	}
	return objs
}

// renderWithLocalImage renders the kustomization in dir through an overlay
// that only swaps image (as the kustomization names it) for the locally
// loaded local.
func renderWithLocalImage(t *testing.T, r *rig.Rig, dir, image, local string) []*unstructured.Unstructured {
	t.Helper()
	base, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "kustomization.yaml")); err != nil {
		need(t, "kustomization: %v", err)
	}
	overlay := filepath.Join(r.Dir, "overlay-"+filepath.Base(dir))
	if err := os.MkdirAll(overlay, 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(overlay, base)
	if err != nil {
		t.Fatal(err)
	}
	name, tag, _ := strings.Cut(local, ":")
	kustomization := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\nimages:\n  - name: %s\n    newName: %s\n    newTag: %s\n", rel, image, name, tag)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := rig.Kustomize(overlay)
	if err != nil {
		t.Fatal(err)
	}
	return objs
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

// waitNode waits until the node passes check.
func waitNode(ctx context.Context, api *rig.API, timeout time.Duration, check func(*corev1.Node) error) error {
	return rig.WaitFor(timeout, 500*time.Millisecond, func() (bool, error) {
		n, err := api.Client.CoreV1().Nodes().Get(ctx, rig.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		err = check(n)
		return err == nil, err
	})
}

// nodeSchedulable checks that the node is Ready and carries no taint that
// keeps the suite's pods off it (the node lifecycle controller's not-ready
// taint lags behind the condition).
func nodeSchedulable(n *corev1.Node) error {
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		return errors.New("node not Ready")
	}
	for _, taint := range n.Spec.Taints {
		if taint.Effect == corev1.TaintEffectNoSchedule || taint.Effect == corev1.TaintEffectNoExecute {
			return fmt.Errorf("node tainted %s", taint.ToString())
		}
	}
	return nil
}

// allocatable checks the node's allocatable count of each resource.
func allocatable(n *corev1.Node, want map[string]int64) error {
	for res, count := range want {
		q, ok := n.Status.Allocatable[corev1.ResourceName(res)]
		if !ok || q.Value() != count {
			return fmt.Errorf("node allocatable %s = %v, want %d (all: %v)", res, q.String(), count, n.Status.Allocatable)
		}
	}
	return nil
}
