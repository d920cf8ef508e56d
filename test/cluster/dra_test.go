//go:build e2e

package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/cluster/rig"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// What the DRA driver ships: its kustomization (the DaemonSet, a
// ServiceAccount with its least RBAC, the policy that keeps each node's
// driver to its own slices, the DeviceClasses), and the examples' claims.
const (
	draKustomization = "../../deployments/kustomize/dra"
	draExamples      = "../../deployments/examples/dra"
	// draShippedImage is the image the kustomization deploys; the test
	// overlay swaps it for draImage, loaded locally.
	draShippedImage = "ghcr.io/intel-gpu-cdi/intel-gpu-cdi-dra"
	draImage        = "e2e.local/intel-gpu-cdi-dra:e2e"
	// kubeletPluginLabel chooses the device plugin or the DRA driver for a
	// node.
	kubeletPluginLabel = "gpu.intel.com/kubelet-plugin"
)

const (
	draDriver = "gpu.intel.com"
	// draTaintKey is the taint an unhealthy GPU's device gets.
	draTaintKey = draDriver + "/unhealthy"
	// draCheckpoint is where the driver keeps its prepared claims with the
	// default --kubelet-plugins-dir.
	draCheckpoint = rig.PluginsDir + "/" + draDriver + "/checkpoint.json"
	// draTimedPods is how many pods each path (DRA, device plugin) starts
	// for the claim -> running figures.
	draTimedPods = 7
	// draHotplugCycles is how many times a GPU is added and removed for the
	// hotplug -> ResourceSlice figures.
	draHotplugCycles = 7
)

// draNodeGPUs is the device-plugin suite's node with NUMA nodes, so that
// the driver's numaNode attribute and the examples that select on it are
// exercised.
var draNodeGPUs = func() []fakenode.GPU {
	gpus := slices.Clone(nodeGPUs)
	for i, numa := range []string{"0", "0", "1", "1"} {
		gpus[i].NUMA = numa
	}
	return gpus
}()

// hotplugGPU is the GPU the hotplug figures add and remove: not one of the
// node's own, so no claim ever holds it.
var hotplugGPU = fakenode.GPU{Card: 4, PCI: "0000:06:00.0", Driver: "i915", Device: "0x56a0", NUMA: "1"}

// draSuite is the state the ordered DRA steps share.
type draSuite struct {
	*suite
	api       *rig.API
	draBinary string
	// kubeconfig acts as the driver's ServiceAccount from draRBAC, with a
	// token bound to the node as a pod's would be.
	kubeconfig string
	driver     *rig.Proc
	probe      string
	// daemonSet is the shipped DaemonSet, rendered for the rig; account
	// the shipped ServiceAccount.
	daemonSet *unstructured.Unstructured
	account   string
	results   map[string]any
}

// TestDRA runs intel-gpu-cdi-dra against the one-node cluster of
// TestFullCluster and checks each scenario against the container's own
// view of /dev/dri. First as the shipped DaemonSet, beside the device
// plugin's, on a node whose label chooses DRA; then, for the scenarios, as
// a host process with the credentials of the same ServiceAccount (see
// README.md): the steps kill it, restart it with other flags and read its
// memory.
func TestDRA(t *testing.T) {
	draBinary := os.Getenv("E2E_DRA_BINARY")
	if draBinary == "" {
		need(t, "E2E_DRA_BINARY (the intel-gpu-cdi-dra binary) is not set")
	}
	if _, err := os.Stat(draBinary); err != nil {
		need(t, "E2E_DRA_BINARY: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := startFullCluster(ctx, t, draNodeGPUs, "dra", "plugin")
	d := &draSuite{suite: s, api: s.r.API(), draBinary: draBinary, results: map[string]any{}}
	d.setUp(ctx, t)
	if !t.Run("deployed from the kustomization as a DaemonSet on a node labelled dra, with only its RBAC, it serves a claim and the device plugin's DaemonSet stays off the node", func(t *testing.T) { d.deployed(ctx, t) }) {
		t.FailNow()
	}
	d.startDriver(ctx, t)

	steps := []struct {
		name string
		run  func(context.Context, *testing.T)
	}{
		{"with only the shipped RBAC the driver publishes the fake node's GPUs in its ResourceSlice, and no other node's", d.resourceSlice},
		{"a pod with a claim from a template gets exactly the one GPU allocated to it", d.claimTemplate},
		{"CEL selectors pick the device: PCI ID 0x56a0, driver xe, driver xe on NUMA node 0", d.celSelectors},
		{"two pods that reference one ResourceClaim share its GPU", d.sharedClaim},
		{"a claim for more GPUs than the node has stays Pending with the scheduler's reason", d.overAsk},
		{"a deleted pod's claim is unprepared and its GPU goes to the next pod", d.unprepareReuse},
		{"a pod keeps its GPU through a SIGKILL of the driver and a kubelet restart, and no claim is left behind", d.restarts},
		{"a GPU whose nodes vanish is tainted and unhealthy in its pod's status, and recovers; an unplugged one leaves the slice", d.unhealthy},
		{"an unchanged pod asking gpu.intel.com/i915: 1 is served by DRA through extendedResourceName", d.extendedResource},
		{"with --shared-dev-num 2 two claims share the xe GPU and a third waits", d.sharedDevNum},
		{"claim -> pod running, several pods", d.timeClaims},
		{"hotplug -> ResourceSlice updated on the API server", d.timeHotplug},
		{"the driver's idle RSS in the cluster fits its DaemonSet's memory request", d.idleRSS},
		{"the device plugin refuses to start while the DRA driver serves the node", d.pluginRefusesBesideDRA},
		{"the DRA driver refuses to start while the device plugin serves the node; device-plugin pods timed beside DRA's", d.draRefusesBesidePlugin},
	}
	for _, step := range steps {
		ok := t.Run(step.name, func(t *testing.T) { step.run(ctx, t) })
		if err := d.api.DeletePods(ctx, "default", "", 90*time.Second); err != nil {
			t.Errorf("cleaning up after %q: %v", step.name, err)
		}
		// A step that failed with the driver down must not fail the next.
		if !ok && d.driver.Exited() && d.r.Plugin() == nil {
			t.Logf("the driver is down after %q; starting it again with defaults", step.name)
			d.startDriver(ctx, t)
		}
	}
	writeResults(t, "TestDRA", d.results)
}

// setUp applies the shipped RBAC, policy, DeviceClasses and example
// claims, loads the images and makes the credentials the host-process
// driver uses.
func (d *draSuite) setUp(ctx context.Context, t *testing.T) {
	t.Helper()
	r := d.r
	for _, img := range []string{
		pluginImageArchive(t, r.Dir, d.binary),
		scratchImage(t, r.Dir, d.draBinary, "./cmd/intel-gpu-cdi-dra", draImage),
	} {
		if err := r.ImportImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	var objs []*unstructured.Unstructured
	saNamespace, saName := "", ""
	for _, o := range renderWithLocalImage(t, r, draKustomization, draShippedImage, draImage) {
		switch o.GetKind() {
		case "DaemonSet":
			if err := pointAtFakeNode(o.Object, d.node, r.CDISpecDir); err != nil {
				t.Fatal(err)
			}
			if err := onHostNetwork(o.Object, d.api.Config.Host); err != nil {
				t.Fatal(err)
			}
			d.daemonSet = o
			continue
		case "ServiceAccount":
			saNamespace, saName = o.GetNamespace(), o.GetName()
		}
		objs = append(objs, o)
	}
	if saName == "" || d.daemonSet == nil {
		t.Fatalf("%s renders no ServiceAccount or no DaemonSet", draKustomization)
	}
	examples, err := filepath.Glob(filepath.Join(draExamples, "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples in %s (%v)", draExamples, err)
	}
	for _, f := range examples {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		list, err := rig.ParseObjects(raw)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range list {
			// Written for a cluster with a registry: the steps make their own.
			if o.GetKind() != "Pod" {
				objs = append(objs, o)
			}
		}
	}
	if err := d.api.Apply(ctx, objs...); err != nil {
		t.Fatal(err)
	}
	// A claim template of this suite: more i915 GPUs than the node has.
	overAsk := &resourceapi.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "four-i915", Namespace: "default"},
		Spec: resourceapi.ResourceClaimTemplateSpec{Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{
			Requests: []resourceapi.DeviceRequest{{Name: "gpus", Exactly: &resourceapi.ExactDeviceRequest{
				DeviceClassName: "i915.gpu.intel.com", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 4,
			}}},
		}}},
	}
	if _, err := d.api.Client.ResourceV1().ResourceClaimTemplates("default").Create(ctx, overAsk, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d.account = saName
	if d.kubeconfig, err = r.ServiceAccountKubeconfig(ctx, saNamespace, saName); err != nil {
		t.Fatal(err)
	}
}

// onHostNetwork lets the DaemonSet's pod reach the rig's API server, which
// listens on loopback only and has no kube-proxy in front of its service
// address: the pod gets the host's network and the server's address for
// its in-cluster configuration. Its probes stay on loopback, on a free port.
func onHostNetwork(ds map[string]any, server string) error {
	u, err := url.Parse(server)
	if err != nil {
		return err
	}
	port, err := rig.FreePort()
	if err != nil {
		return err
	}
	podSpec, _ := dig(ds, "spec", "template", "spec").(map[string]any)
	if podSpec == nil {
		return errors.New("DaemonSet has no pod template")
	}
	podSpec["hostNetwork"] = true
	for _, c := range asList(podSpec["containers"]) {
		setEnv(c, map[string]string{
			"KUBERNETES_SERVICE_HOST":     u.Hostname(),
			"KUBERNETES_SERVICE_PORT":     u.Port(),
			"INTEL_GPU_CDI_PROBE_ADDRESS": "127.0.0.1:" + strconv.Itoa(port),
		})
		for _, p := range asList(c["ports"]) {
			p["containerPort"] = int64(port) // JSON numbers of an unstructured object are int64
		}
		for _, probe := range []string{"livenessProbe", "readinessProbe"} {
			if get, ok := dig(c, probe, "httpGet").(map[string]any); ok {
				get["host"] = "127.0.0.1"
			}
		}
	}
	return nil
}

// setEnv sets a container's environment variables, replacing any of the
// same names.
func setEnv(c map[string]any, env map[string]string) {
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

// deployed runs both DaemonSets as a cluster whose nodes choose by label
// does, on a node labelled dra: the driver's pod turns Ready (registered),
// publishes the node's GPUs and serves a claim; the device plugin's
// DaemonSet schedules nothing there. Then both go, and the steps after run
// the driver themselves.
func (d *draSuite) deployed(ctx context.Context, t *testing.T) {
	api := d.api
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"dra"}}}`, kubeletPluginLabel)
	if _, err := api.Client.CoreV1().Nodes().Patch(ctx, rig.NodeName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pluginObjs := renderDaemonSet(t, d.r, d.node, baseDir)
	start := time.Now()
	if err := api.Apply(ctx, append(pluginObjs, d.daemonSet)...); err != nil {
		t.Fatal(err)
	}
	const selector = "app.kubernetes.io/name=intel-gpu-cdi-dra"
	pod, err := waitDaemonPodReady(ctx, api, selector, 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("DaemonSets applied -> the driver's pod %s Ready (registered) in %s", pod.Name, time.Since(start).Round(time.Millisecond))
	if pod.Spec.ServiceAccountName != d.account {
		t.Errorf("the driver's pod runs as %q, not as the kustomization's ServiceAccount %q", pod.Spec.ServiceAccountName, d.account)
	}
	if _, err := d.waitDevices(ctx, 30*time.Second, func(devs map[string]resourceapi.Device) error {
		if len(devs) != len(d.gpus) {
			return fmt.Errorf("%d devices published, want %d", len(devs), len(d.gpus))
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, api.Logs(ctx, "kube-system", selector, 30))
	}
	t.Logf("-> the node's %d GPUs in its ResourceSlice %s after the apply", len(d.gpus), time.Since(start).Round(time.Millisecond))
	err = rig.WaitFor(30*time.Second, 250*time.Millisecond, func() (bool, error) {
		ds, err := api.Client.AppsV1().DaemonSets("kube-system").Get(ctx, "intel-gpu-cdi", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if ds.Status.ObservedGeneration < ds.Generation {
			return false, errors.New("the device plugin's DaemonSet is not observed yet")
		}
		return ds.Status.DesiredNumberScheduled == 0, fmt.Errorf("the device plugin's DaemonSet wants %d pods on a node labelled dra", ds.Status.DesiredNumberScheduled)
	})
	if err != nil {
		t.Error(err)
	}
	got, _, _ := d.runClaimPod(ctx, t, "ds-one-gpu", rig.PodClaim{Name: "gpu", Template: "one-gpu"})
	if len(got) != 1 {
		t.Errorf("the pod sees %v, want one GPU", pcis(got))
	}
	if err := api.DeletePods(ctx, "default", "", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := api.Delete(ctx, 90*time.Second, append(pluginObjs, d.daemonSet)...); err != nil {
		t.Fatal(err)
	}
	if err := api.DeletePods(ctx, "kube-system", selector, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, func(cs map[string]json.RawMessage) error {
		if len(cs) != 0 {
			return fmt.Errorf("claims %v left by the DaemonSet's driver", keys(cs))
		}
		return nil
	})
}

// driverArgs are the driver's flags on the fake node: every kubelet path
// is its default.
func (d *draSuite) driverArgs(extra ...string) []string {
	return append([]string{
		"--node-name", rig.NodeName,
		"--sysfs-root", d.node.Sys,
		"--dev-root", d.node.Dev,
		"--kubeconfig", d.kubeconfig,
		"--probe-address", d.probe,
		"--log-level", "debug",
	}, extra...)
}

// startDriver starts the driver and waits until it is ready (registered
// with the kubelet) and its slice lists every GPU of the node.
func (d *draSuite) startDriver(ctx context.Context, t *testing.T, extra ...string) {
	t.Helper()
	port, err := rig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	d.probe = "127.0.0.1:" + strconv.Itoa(port)
	start := time.Now()
	if d.driver, err = d.r.StartDRA(d.draBinary, d.driverArgs(extra...)...); err != nil {
		t.Fatal(err)
	}
	if err := d.waitReady(ctx); err != nil {
		t.Fatalf("the DRA driver did not turn ready: %v", err)
	}
	ready := time.Since(start)
	want := len(d.gpus)
	if _, err := d.waitDevices(ctx, 30*time.Second, func(devs map[string]resourceapi.Device) error {
		if len(devs) != want {
			return fmt.Errorf("%d devices published, want %d", len(devs), want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("DRA driver (pid %d, %v): start -> ready (registered) %s, -> %d devices in the API server %s",
		d.driver.PID(), extra, ready.Round(time.Millisecond), want, time.Since(start).Round(time.Millisecond))
}

func (d *draSuite) stopDriver(t *testing.T) {
	t.Helper()
	if err := d.driver.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits for the driver's /readyz: the spec is written and the
// kubelet accepted its registration.
func (d *draSuite) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return rig.WaitFor(60*time.Second, 100*time.Millisecond, func() (bool, error) {
		if d.driver.Exited() {
			return false, fmt.Errorf("the driver %w; see %s", rig.ErrExited, d.driver.Log)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.probe+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("/readyz: %s", resp.Status)
	})
}

// nodeSlices lists this node's ResourceSlices of the driver.
func (d *draSuite) nodeSlices(ctx context.Context) ([]resourceapi.ResourceSlice, error) {
	list, err := d.api.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: sliceSelector()})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

func sliceSelector() string {
	return fields.AndSelectors(
		fields.OneTermEqualSelector("spec.nodeName", rig.NodeName),
		fields.OneTermEqualSelector("spec.driver", draDriver),
	).String()
}

// waitDevices waits until the devices of the node's slices pass ok, and
// returns them by name.
func (d *draSuite) waitDevices(ctx context.Context, timeout time.Duration, ok func(map[string]resourceapi.Device) error) (map[string]resourceapi.Device, error) {
	var devs map[string]resourceapi.Device
	err := rig.WaitFor(timeout, 100*time.Millisecond, func() (bool, error) {
		list, err := d.nodeSlices(ctx)
		if err != nil {
			return false, err
		}
		devs = map[string]resourceapi.Device{}
		for _, s := range list {
			for _, dev := range s.Spec.Devices {
				devs[dev.Name] = dev
			}
		}
		err = ok(devs)
		return err == nil, err
	})
	return devs, err
}

// deviceName is the driver's name of the device for the GPU at pci
// (README, "How it works").
func deviceName(pci string) string {
	return "gpu-" + strings.NewReplacer(":", "-", ".", "-").Replace(pci)
}

func (d *draSuite) gpuByDevice(name string) (rig.NodeGPU, bool) {
	for _, g := range d.gpus {
		if deviceName(g.PCI) == name {
			return g, true
		}
	}
	return rig.NodeGPU{}, false
}

// attr returns a device attribute by its name in the driver's domain or
// a qualified one; a bare name may also be published qualified.
func attr(dev resourceapi.Device, name string) (resourceapi.DeviceAttribute, bool) {
	if a, ok := dev.Attributes[resourceapi.QualifiedName(name)]; ok {
		return a, true
	}
	a, ok := dev.Attributes[resourceapi.QualifiedName(draDriver+"/"+name)]
	return a, ok
}

func attrString(a resourceapi.DeviceAttribute) string {
	switch {
	case a.StringValue != nil:
		return *a.StringValue
	case a.IntValue != nil:
		return strconv.FormatInt(*a.IntValue, 10)
	case a.BoolValue != nil:
		return strconv.FormatBool(*a.BoolValue)
	case a.VersionValue != nil:
		return *a.VersionValue
	}
	return "<unset>"
}

// sysfsFacts reads what the node's sysfs says of a GPU, independently of
// the driver: the ground truth its attributes are checked against.
func sysfsFacts(t *testing.T, sys string, g rig.NodeGPU) map[string]string {
	t.Helper()
	fn := filepath.Join(sys, "bus", "pci", "devices", g.PCI)
	read := func(name string) string {
		raw, err := os.ReadFile(filepath.Join(fn, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(raw))
	}
	link, err := os.Readlink(fn)
	if err != nil {
		t.Fatal(err)
	}
	// ../../../devices/pci0000:00/0000:00:01.0/0000:03:00.0: the root
	// complex is the first element under devices.
	_, under, _ := strings.Cut(filepath.ToSlash(link), "devices/")
	root, _, _ := strings.Cut(under, "/")
	facts := map[string]string{
		"driver": g.Driver, "pciId": read("device"), "type": "gpu", "sriov": "false",
		"card": g.Nodes[0].Name, "render": g.Nodes[1].Name,
		"resource.kubernetes.io/pciBusID": g.PCI, "resource.kubernetes.io/pcieRoot": root,
	}
	if numa := read("numa_node"); numa != "-1" {
		facts["resource.kubernetes.io/numaNode"] = numa
	}
	return facts
}

func (d *draSuite) resourceSlice(ctx context.Context, t *testing.T) {
	list, err := d.nodeSlices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node, err := d.api.Client.CoreV1().Nodes().Get(ctx, rig.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("%d slices of %s for node %s, want 1 (4 devices fit one)", len(list), draDriver, rig.NodeName)
	}
	sl := list[0]
	t.Logf("slice %s: driver %s, node %s, pool %s (generation %d, %d slice(s)), %d devices",
		sl.Name, sl.Spec.Driver, ptrString(sl.Spec.NodeName), sl.Spec.Pool.Name, sl.Spec.Pool.Generation, sl.Spec.Pool.ResourceSliceCount, len(sl.Spec.Devices))
	if sl.Spec.Pool.Name != rig.NodeName || sl.Spec.Pool.ResourceSliceCount != 1 {
		t.Errorf("pool %q of %d slices, want %q of 1", sl.Spec.Pool.Name, sl.Spec.Pool.ResourceSliceCount, rig.NodeName)
	}
	if own := sl.OwnerReferences; len(own) != 1 || own[0].Kind != "Node" || own[0].UID != node.UID {
		t.Errorf("slice owners %+v, want the node %s (UID %s): the slice must go with the node", own, node.Name, node.UID)
	}
	byName := map[string]resourceapi.Device{}
	for _, dev := range sl.Spec.Devices {
		byName[dev.Name] = dev
	}
	if len(byName) != len(d.gpus) {
		t.Errorf("%d devices, want one per GPU of the node (%d)", len(byName), len(d.gpus))
	}
	for _, g := range d.gpus {
		dev, ok := byName[deviceName(g.PCI)]
		if !ok {
			t.Errorf("GPU %s has no device %s", g.PCI, deviceName(g.PCI))
			continue
		}
		for name, want := range sysfsFacts(t, d.node.Sys, g) {
			a, ok := attr(dev, name)
			if !ok {
				t.Errorf("device %s has no attribute %s (want %s)", dev.Name, name, want)
			} else if got := attrString(a); got != want {
				t.Errorf("device %s: %s = %s, sysfs says %s", dev.Name, name, got, want)
			}
		}
		if _, ok := attr(dev, "resource.kubernetes.io/numaNode"); !ok {
			t.Errorf("device %s: no numaNode though sysfs has one", dev.Name)
		}
		if len(dev.Taints) != 0 || dev.AllowMultipleAllocations != nil && *dev.AllowMultipleAllocations {
			t.Errorf("device %s: taints %v, allowMultipleAllocations %v; want neither on a healthy node with sharing off", dev.Name, dev.Taints, dev.AllowMultipleAllocations)
		}
	}

	// The driver's own credentials cannot write another node's slice: the
	// shipped policy reads the node from the token.
	cfg, err := clientcmd.BuildConfigFromFlags("", d.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	asDriver, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	other := sl.DeepCopy()
	other.ObjectMeta = metav1.ObjectMeta{GenerateName: "other-node-"}
	other.Spec.NodeName = ptrTo("other-node")
	other.Spec.Pool.Name = "other-node"
	_, err = asDriver.ResourceV1().ResourceSlices().Create(ctx, other, metav1.CreateOptions{})
	if err == nil || !(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) || !strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
		t.Errorf("the driver's account wrote a slice of another node, or was stopped by something else than the shipped policy: %v", err)
	} else {
		t.Logf("as expected, the driver's account may not write another node's slice: %v", err)
	}
	// Nor read a claim it has no use for beyond get, nor list them.
	if _, err := asDriver.ResourceV1().ResourceClaims("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the driver's account lists every ResourceClaim (%v): more than the least RBAC", err)
	}
}

// runClaimPod runs a pod with claims, checks that its container sees
// exactly the GPUs allocated to those claims, and returns them, the time
// from creation to the container's start, and the claims by their name in
// the pod.
func (d *draSuite) runClaimPod(ctx context.Context, t *testing.T, name string, claims ...rig.PodClaim) ([]rig.NodeGPU, time.Duration, map[string]*resourceapi.ResourceClaim) {
	t.Helper()
	manifest, err := rig.ClusterClaimPod(name, claims...)
	if err != nil {
		t.Fatal(err)
	}
	got, took := d.runClusterPod(ctx, t, name, manifest)
	pod, err := d.api.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byPodName := map[string]*resourceapi.ResourceClaim{}
	for _, c := range claims {
		claimName := c.Claim
		for _, st := range pod.Status.ResourceClaimStatuses {
			if st.Name == c.Name && st.ResourceClaimName != nil {
				claimName = *st.ResourceClaimName
			}
		}
		if claimName == "" {
			t.Fatalf("pod %s: no ResourceClaim for %s in its status %+v", name, c.Name, pod.Status.ResourceClaimStatuses)
		}
		byPodName[c.Name] = d.claim(ctx, t, claimName)
	}
	d.requireAllocated(t, name, got, byPodName)
	return got, took, byPodName
}

func (d *draSuite) claim(ctx context.Context, t *testing.T, name string) *resourceapi.ResourceClaim {
	t.Helper()
	c, err := d.api.Client.ResourceV1().ResourceClaims("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// requireAllocated checks that a container sees exactly the GPUs of the
// devices allocated to its claims by this driver on this node.
func (d *draSuite) requireAllocated(t *testing.T, pod string, seen []rig.NodeGPU, claims map[string]*resourceapi.ResourceClaim) {
	t.Helper()
	var want []string
	for _, c := range claims {
		want = append(want, d.allocatedPCIs(t, c)...)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if got := pcis(seen); !slices.Equal(got, want) {
		t.Fatalf("pod %s sees GPUs %v, its claims were allocated %v", pod, got, want)
	}
}

// allocatedPCIs maps a claim's allocated devices back to the node's GPUs.
func (d *draSuite) allocatedPCIs(t *testing.T, c *resourceapi.ResourceClaim) []string {
	t.Helper()
	if c.Status.Allocation == nil {
		t.Fatalf("claim %s is not allocated", c.Name)
	}
	var out []string
	for _, r := range c.Status.Allocation.Devices.Results {
		if r.Driver != draDriver || r.Pool != rig.NodeName {
			t.Fatalf("claim %s: device %s from driver %s pool %s, want %s pool %s", c.Name, r.Device, r.Driver, r.Pool, draDriver, rig.NodeName)
		}
		g, ok := d.gpuByDevice(r.Device)
		if !ok {
			t.Fatalf("claim %s: allocated device %s is no GPU of the node", c.Name, r.Device)
		}
		out = append(out, g.PCI)
	}
	return out
}

// checkpointClaims reads the UIDs of the claims in the driver's checkpoint.
func checkpointClaims(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile(draCheckpoint)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Claims map[string]json.RawMessage `json:"claims"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", draCheckpoint, err)
	}
	return f.Claims
}

// waitCheckpoint waits until the checkpoint passes ok.
func waitCheckpoint(t *testing.T, ok func(map[string]json.RawMessage) error) {
	t.Helper()
	err := rig.WaitFor(60*time.Second, 100*time.Millisecond, func() (bool, error) {
		err := ok(checkpointClaims(t))
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("checkpoint %s: %v", draCheckpoint, err)
	}
}

func (d *draSuite) claimTemplate(ctx context.Context, t *testing.T) {
	got, _, claims := d.runClaimPod(ctx, t, "one-gpu", rig.PodClaim{Name: "gpu", Template: "one-gpu"})
	if len(got) != 1 {
		t.Fatalf("the pod sees %d GPUs (%v), want exactly 1", len(got), pcis(got))
	}
	c := claims["gpu"]
	if owner := metav1.GetControllerOf(c); owner == nil || owner.Kind != "Pod" || owner.Name != "one-gpu" {
		t.Errorf("claim %s is controlled by %+v, want the pod: it was not made from the template for it", c.Name, owner)
	}
	waitCheckpoint(t, func(cs map[string]json.RawMessage) error {
		if _, ok := cs[string(c.UID)]; !ok || len(cs) != 1 {
			return fmt.Errorf("claims %v, want exactly %s", keys(cs), c.UID)
		}
		return nil
	})
}

func (d *draSuite) celSelectors(ctx context.Context, t *testing.T) {
	arc, _, _ := d.runClaimPod(ctx, t, "arc-a770", rig.PodClaim{Name: "gpu", Template: "arc-a770"})
	if len(arc) != 1 {
		t.Fatalf("sees %v, want one GPU", pcis(arc))
	}
	if id := sysfsFacts(t, d.node.Sys, arc[0])["pciId"]; id != "0x56a0" {
		t.Errorf("the pciId selector gave GPU %s, whose PCI ID is %s", arc[0].PCI, id)
	}
	xeGPUs, _, _ := d.runClaimPod(ctx, t, "xe-gpu", rig.PodClaim{Name: "gpu", Template: "xe-gpu"})
	requireDriver(t, xeGPUs, 1, "xe")
	// The node's one xe GPU again, by driver and NUMA node.
	if err := d.api.DeletePod(ctx, "default", "xe-gpu", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	numa0, _, _ := d.runClaimPod(ctx, t, "xe-numa0", rig.PodClaim{Name: "gpu", Template: "xe-numa0"})
	requireDriver(t, numa0, 1, "xe")
	if numa := sysfsFacts(t, d.node.Sys, numa0[0])["resource.kubernetes.io/numaNode"]; numa != "0" {
		t.Errorf("the NUMA selector gave GPU %s on NUMA node %q", numa0[0].PCI, numa)
	}
}

func (d *draSuite) sharedClaim(ctx context.Context, t *testing.T) {
	a, _, ca := d.runClaimPod(ctx, t, "sharer-1", rig.PodClaim{Name: "gpu", Claim: "shared-gpu"})
	b, _, _ := d.runClaimPod(ctx, t, "sharer-2", rig.PodClaim{Name: "gpu", Claim: "shared-gpu"})
	if len(a) != 1 || len(b) != 1 || a[0].PCI != b[0].PCI {
		t.Fatalf("the pods sharing claim shared-gpu see %v and %v, want the same one GPU", pcis(a), pcis(b))
	}
	c := d.claim(ctx, t, "shared-gpu")
	if len(c.Status.ReservedFor) != 2 {
		t.Errorf("claim shared-gpu is reserved for %+v, want both pods", c.Status.ReservedFor)
	}
	waitCheckpoint(t, func(cs map[string]json.RawMessage) error {
		if _, ok := cs[string(ca["gpu"].UID)]; !ok || len(cs) != 1 {
			return fmt.Errorf("claims %v, want the shared claim once", keys(cs))
		}
		return nil
	})
	t.Logf("sharer-1 and sharer-2 both see %s through claim shared-gpu", a[0].PCI)
	// The claim outlives its pods; it goes, so that no later step finds its
	// GPU allocated.
	if err := d.api.DeletePods(ctx, "default", "", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.api.Client.ResourceV1().ResourceClaims("default").Delete(ctx, "shared-gpu", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (d *draSuite) overAsk(ctx context.Context, t *testing.T) {
	manifest, err := rig.ClusterClaimPod("over-ask", rig.PodClaim{Name: "gpus", Template: "four-i915"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.api.CreatePod(ctx, manifest); err != nil {
		t.Fatal(err)
	}
	msg, err := waitUnschedulable(ctx, d.api, "over-ask", "cannot allocate all claims")
	if err != nil {
		t.Fatalf("%v\n%s", err, d.api.Describe(ctx, "default", "over-ask"))
	}
	t.Logf("the scheduler: %s", msg)
	// The running holder of the rest is unaffected, and nothing was
	// prepared for the pending pod.
	if cs := checkpointClaims(t); len(cs) != 0 {
		t.Errorf("claims %v are prepared while no pod runs", keys(cs))
	}
}

func (d *draSuite) unprepareReuse(ctx context.Context, t *testing.T) {
	first, _, claims := d.runClaimPod(ctx, t, "first-xe", rig.PodClaim{Name: "gpu", Template: "xe-gpu"})
	requireDriver(t, first, 1, "xe")
	uid := string(claims["gpu"].UID)
	waitCheckpoint(t, func(cs map[string]json.RawMessage) error {
		if _, ok := cs[uid]; !ok {
			return fmt.Errorf("claims %v lack %s", keys(cs), uid)
		}
		return nil
	})
	if err := d.api.DeletePod(ctx, "default", "first-xe", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, func(cs map[string]json.RawMessage) error {
		if _, ok := cs[uid]; ok {
			return fmt.Errorf("claim %s is still prepared after its pod was deleted", uid)
		}
		return nil
	})
	// The node has one xe GPU: the next pod runs only if it was released.
	second, _, _ := d.runClaimPod(ctx, t, "second-xe", rig.PodClaim{Name: "gpu", Template: "xe-gpu"})
	requireDriver(t, second, 1, "xe")
}

// containerID returns the ID of the pod's running container.
func (d *draSuite) containerID(ctx context.Context, t *testing.T, pod string) string {
	t.Helper()
	ctrs, err := d.r.PodContainers(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrs {
		if c.State == "CONTAINER_RUNNING" {
			return c.ID
		}
	}
	t.Fatalf("pod %s has no running container: %+v", pod, ctrs)
	return ""
}

func (d *draSuite) registrations() int {
	raw, _ := os.ReadFile(d.driver.Log)
	return strings.Count(string(raw), "registered with the kubelet")
}

func (d *draSuite) restarts(ctx context.Context, t *testing.T) {
	keeper, _, kc := d.runClaimPod(ctx, t, "keeper", rig.PodClaim{Name: "gpu", Template: "one-gpu"})
	keeperCtr := d.containerID(ctx, t, "keeper")
	_, _, oc := d.runClaimPod(ctx, t, "orphan", rig.PodClaim{Name: "gpu", Template: "one-gpu"})
	keeperUID, orphanUID := string(kc["gpu"].UID), string(oc["gpu"].UID)

	if err := d.driver.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("driver SIGKILLed; deleting pod orphan while it is down")
	if err := d.api.Client.CoreV1().Pods("default").Delete(ctx, "orphan", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The kubelet stops the orphan's container, then cannot unprepare its
	// claim: the pod stays in the API server until the driver is back.
	if err := rig.WaitFor(60*time.Second, 200*time.Millisecond, func() (bool, error) {
		ctrs, err := d.r.PodContainers(ctx, "orphan")
		if err != nil {
			return false, err
		}
		for _, c := range ctrs {
			if c.State == "CONTAINER_RUNNING" {
				return false, fmt.Errorf("container %s still runs", c.ID)
			}
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.api.Client.CoreV1().Pods("default").Get(ctx, "orphan", metav1.GetOptions{}); err != nil {
		t.Logf("pod orphan is already gone while the driver is down (%v): the kubelet did not wait for the unprepare", err)
	}
	if cs := checkpointClaims(t); cs[orphanUID] == nil || cs[keeperUID] == nil {
		t.Fatalf("the checkpoint after SIGKILL holds %v, want both prepared claims (%s, %s)", keys(cs), keeperUID, orphanUID)
	}
	d.startDriver(ctx, t)
	if err := d.api.DeletePod(ctx, "default", "orphan", 90*time.Second); err != nil {
		t.Fatalf("the pod deleted while the driver was down is not gone after it came back: %v", err)
	}
	waitCheckpoint(t, func(cs map[string]json.RawMessage) error {
		if _, ok := cs[orphanUID]; ok {
			return fmt.Errorf("the orphan's claim %s is still prepared", orphanUID)
		}
		if _, ok := cs[keeperUID]; !ok {
			return fmt.Errorf("the keeper's claim %s was dropped while its pod runs", keeperUID)
		}
		return nil
	})
	if id := d.containerID(ctx, t, "keeper"); id != keeperCtr {
		t.Fatalf("keeper's container is %s, was %s", id, keeperCtr)
	}
	afterKill, _, _ := d.runClaimPod(ctx, t, "after-kill", rig.PodClaim{Name: "gpu", Template: "one-gpu"})
	if afterKill[0].PCI == keeper[0].PCI {
		t.Errorf("the pod after the SIGKILL got %s, which keeper holds", keeper[0].PCI)
	}

	regs := d.registrations()
	if err := d.r.StopKubelet(); err != nil {
		t.Fatal(err)
	}
	if err := d.r.StartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rig.WaitFor(60*time.Second, 200*time.Millisecond, func() (bool, error) {
		n := d.registrations()
		return n > regs, fmt.Errorf("the driver registered %d times, %d before the kubelet restart", n, regs)
	}); err != nil {
		t.Fatal(err)
	}
	if id := d.containerID(ctx, t, "keeper"); id != keeperCtr {
		t.Fatalf("keeper's container is %s after the kubelet restart, was %s", id, keeperCtr)
	}
	// A restarted kubelet reports the node not ready until its first full
	// status, and the scheduler waits for it: not the driver's doing.
	if err := waitNode(ctx, d.api, 60*time.Second, nodeSchedulable); err != nil {
		t.Fatal(err)
	}
	afterKubelet, _, _ := d.runClaimPod(ctx, t, "after-kubelet", rig.PodClaim{Name: "gpu", Template: "one-gpu"})
	if p := afterKubelet[0].PCI; p == keeper[0].PCI || p == afterKill[0].PCI {
		t.Errorf("the pod after the kubelet restart got %s, which keeper (%s) or after-kill (%s) holds", p, keeper[0].PCI, afterKill[0].PCI)
	}
	if err := d.api.DeletePods(ctx, "default", "", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, func(cs map[string]json.RawMessage) error {
		if len(cs) != 0 {
			return fmt.Errorf("claims %v are left in the checkpoint after every pod is gone", keys(cs))
		}
		return nil
	})
	if list, err := d.api.Client.ResourceV1().ResourceClaims("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	} else {
		for _, c := range list.Items {
			if c.Name != "shared-gpu" {
				t.Errorf("claim %s outlived its pod", c.Name)
			}
		}
	}
}

// resourceHealth returns the health the pod's container status reports
// for resourceID.
func resourceHealth(p *corev1.Pod, resourceID string) (string, string) {
	for _, cs := range p.Status.ContainerStatuses {
		for _, rs := range cs.AllocatedResourcesStatus {
			for _, h := range rs.Resources {
				if string(h.ResourceID) == resourceID {
					return string(h.Health), ptrString(h.Message)
				}
			}
		}
	}
	return "", ""
}

func (d *draSuite) waitHealth(ctx context.Context, t *testing.T, pod, resourceID, want string) string {
	t.Helper()
	var msg string
	p, err := d.api.WaitPod(ctx, "default", pod, 90*time.Second, func(p *corev1.Pod) error {
		got, m := resourceHealth(p, resourceID)
		msg = m
		if got != want {
			return fmt.Errorf("health of %s is %q, want %q", resourceID, got, want)
		}
		return nil
	})
	if err != nil {
		var statuses any
		if p != nil {
			statuses = p.Status.ContainerStatuses
		}
		t.Fatalf("pod %s: %v (container statuses %+v)", pod, err, statuses)
	}
	return msg
}

func (d *draSuite) unhealthy(ctx context.Context, t *testing.T) {
	got, _, _ := d.runClaimPod(ctx, t, "sick", rig.PodClaim{Name: "gpu", Template: "xe-gpu"})
	requireDriver(t, got, 1, "xe")
	g := got[0]
	dev, id := deviceName(g.PCI), "intel.com/gpu="+g.PCI
	d.waitHealth(ctx, t, "sick", id, string(corev1.ResourceHealthStatusHealthy))

	if err := d.node.RemoveDevNodes(g.PCI); err != nil {
		t.Fatal(err)
	}
	devs, err := d.waitDevices(ctx, 30*time.Second, func(devs map[string]resourceapi.Device) error {
		for _, taint := range devs[dev].Taints {
			if taint.Key == draTaintKey && taint.Effect == resourceapi.DeviceTaintEffectNoSchedule {
				return nil
			}
		}
		return fmt.Errorf("device %s has taints %+v", dev, devs[dev].Taints)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nodes gone: device %s tainted %+v", dev, devs[dev].Taints)
	msg := d.waitHealth(ctx, t, "sick", id, string(corev1.ResourceHealthStatusUnhealthy))
	t.Logf("pod sick: %s is Unhealthy: %q", id, msg)

	if err := d.node.AddDevNodes(g.PCI); err != nil {
		t.Fatal(err)
	}
	if _, err := d.waitDevices(ctx, 30*time.Second, func(devs map[string]resourceapi.Device) error {
		if len(devs[dev].Taints) != 0 {
			return fmt.Errorf("device %s still has taints %+v", dev, devs[dev].Taints)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d.waitHealth(ctx, t, "sick", id, string(corev1.ResourceHealthStatusHealthy))
	t.Logf("nodes back: taint removed, %s Healthy again", id)

	// Unplugged altogether: the device leaves the slice, and the pod that
	// holds it is told.
	spec := draNodeGPUs[slices.IndexFunc(draNodeGPUs, func(x fakenode.GPU) bool { return x.PCI == g.PCI })]
	if err := d.node.RemoveGPU(g.PCI); err != nil {
		t.Fatal(err)
	}
	if _, err := d.waitDevices(ctx, 30*time.Second, func(devs map[string]resourceapi.Device) error {
		if _, ok := devs[dev]; ok || len(devs) != len(d.gpus)-1 {
			return fmt.Errorf("devices %v, want all but %s", mapKeys(devs), dev)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	msg = d.waitHealth(ctx, t, "sick", id, string(corev1.ResourceHealthStatusUnhealthy))
	t.Logf("unplugged: %s left the slice; pod sick: Unhealthy: %q", dev, msg)
	if err := d.node.AddGPU(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := d.waitDevices(ctx, 30*time.Second, func(devs map[string]resourceapi.Device) error {
		if dv, ok := devs[dev]; !ok || len(dv.Taints) != 0 {
			return fmt.Errorf("device %s is not back untainted: %v", dev, mapKeys(devs))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d.waitHealth(ctx, t, "sick", id, string(corev1.ResourceHealthStatusHealthy))
}

func (d *draSuite) extendedResource(ctx context.Context, t *testing.T) {
	n, err := d.api.Client.CoreV1().Nodes().Get(ctx, rig.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if q, ok := n.Status.Allocatable[i915]; ok && !q.IsZero() {
		t.Fatalf("the node advertises %s %s through a device plugin: this step would not show DRA serving it", i915, q.String())
	}
	manifest, err := rig.ClusterGPUPod("extended", map[string]int{i915: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := d.runClusterPod(ctx, t, "extended", manifest)
	requireDriver(t, got, 1, "i915")
	pod, err := d.api.Client.CoreV1().Pods("default").Get(ctx, "extended", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := pod.Status.ExtendedResourceClaimStatus
	if st == nil {
		t.Fatal("the pod has no extendedResourceClaimStatus: the scheduler did not serve it through DRA")
	}
	c := d.claim(ctx, t, st.ResourceClaimName)
	d.requireAllocated(t, "extended", got, map[string]*resourceapi.ResourceClaim{"extended": c})
	t.Logf("pod extended (limits %s: 1, unchanged) got %s through claim %s", i915, got[0].PCI, c.Name)
}

func (d *draSuite) sharedDevNum(ctx context.Context, t *testing.T) {
	d.stopDriver(t)
	d.startDriver(ctx, t, "--shared-dev-num", "2")
	defer func() {
		if err := d.api.DeletePods(ctx, "default", "", 90*time.Second); err != nil {
			t.Error(err)
		}
		d.stopDriver(t)
		d.startDriver(ctx, t)
	}()
	devs, err := d.waitDevices(ctx, 30*time.Second, func(devs map[string]resourceapi.Device) error {
		for name, dev := range devs {
			if dev.AllowMultipleAllocations == nil || !*dev.AllowMultipleAllocations {
				return fmt.Errorf("device %s does not allow multiple allocations", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	xeDev := devs[deviceName("0000:03:00.0")]
	t.Logf("device %s: allowMultipleAllocations, capacity %+v", xeDev.Name, xeDev.Capacity)
	a, _, ca := d.runClaimPod(ctx, t, "share-a", rig.PodClaim{Name: "gpu", Template: "xe-gpu"})
	b, _, cb := d.runClaimPod(ctx, t, "share-b", rig.PodClaim{Name: "gpu", Template: "xe-gpu"})
	requireDriver(t, a, 1, "xe")
	requireDriver(t, b, 1, "xe")
	shareA, shareB := ca["gpu"].Status.Allocation.Devices.Results[0].ShareID, cb["gpu"].Status.Allocation.Devices.Results[0].ShareID
	if shareA == nil || shareB == nil || *shareA == *shareB {
		t.Errorf("the two claims on %s have share IDs %v and %v, want two distinct", a[0].PCI, ptrString(shareA), ptrString(shareB))
	}
	manifest, err := rig.ClusterClaimPod("share-c", rig.PodClaim{Name: "gpu", Template: "xe-gpu"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.api.CreatePod(ctx, manifest); err != nil {
		t.Fatal(err)
	}
	msg, err := waitUnschedulable(ctx, d.api, "share-c", "cannot allocate all claims")
	if err != nil {
		t.Fatalf("a third claim on the xe GPU's 2 shares: %v\n%s", err, d.api.Describe(ctx, "default", "share-c"))
	}
	t.Logf("share-a and share-b share %s; share-c waits: %s", a[0].PCI, msg)
}

// durations summarises samples as the figures are written.
func durations(ds []time.Duration) map[string]any {
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	out := map[string]any{"n": len(s)}
	if len(s) > 0 {
		out["minMs"], out["medianMs"], out["maxMs"] = ms(s[0]), ms(s[len(s)/2]), ms(s[len(s)-1])
	}
	var each []float64
	for _, d := range ds {
		each = append(each, ms(d))
	}
	out["eachMs"] = each
	return out
}

func summary(ds []time.Duration) string {
	m := durations(ds)
	return fmt.Sprintf("min %v ms, median %v ms, max %v ms over %d", m["minMs"], m["medianMs"], m["maxMs"], m["n"])
}

func (d *draSuite) timeClaims(ctx context.Context, t *testing.T) {
	var ds []time.Duration
	for i := range draTimedPods {
		name := fmt.Sprintf("dra-timed-%d", i)
		got, took, _ := d.runClaimPod(ctx, t, name, rig.PodClaim{Name: "gpu", Template: "one-gpu"})
		if len(got) != 1 {
			t.Fatalf("pod %s sees %v", name, pcis(got))
		}
		ds = append(ds, took)
		if err := d.api.DeletePod(ctx, "default", name, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	d.results["claimToRunning"] = durations(ds)
	t.Logf("DRA, claim template: pod created -> container running with its GPU: %s", summary(ds))
}

// sliceWatch follows the node's ResourceSlices and notes when each event
// arrived.
type sliceWatch struct {
	w      watch.Interface
	events chan sliceEvent
}

type sliceEvent struct {
	at      time.Time
	devices map[string]bool
}

func (d *draSuite) watchSlices(ctx context.Context, t *testing.T) *sliceWatch {
	t.Helper()
	list, err := d.api.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: sliceSelector()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.api.Client.ResourceV1().ResourceSlices().Watch(ctx, metav1.ListOptions{FieldSelector: sliceSelector(), ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	sw := &sliceWatch{w: w, events: make(chan sliceEvent, 64)}
	go func() {
		defer close(sw.events)
		for ev := range w.ResultChan() {
			at := time.Now()
			sl, ok := ev.Object.(*resourceapi.ResourceSlice)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			devs := map[string]bool{}
			for _, dev := range sl.Spec.Devices {
				devs[dev.Name] = true
			}
			sw.events <- sliceEvent{at: at, devices: devs}
		}
	}()
	return sw
}

// until returns the time of the first event whose slice passes ok.
func (sw *sliceWatch) until(timeout time.Duration, ok func(map[string]bool) bool) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		select {
		case ev, open := <-sw.events:
			if !open {
				return time.Time{}, errors.New("the watch ended")
			}
			if ok(ev.devices) {
				return ev.at, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("no such slice within %s", timeout)
		}
	}
}

func (d *draSuite) timeHotplug(ctx context.Context, t *testing.T) {
	sw := d.watchSlices(ctx, t)
	defer sw.w.Stop()
	dev := deviceName(hotplugGPU.PCI)
	var added, removed []time.Duration
	for range draHotplugCycles {
		if err := d.node.AddGPU(hotplugGPU); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		at, err := sw.until(10*time.Second, func(devs map[string]bool) bool { return devs[dev] })
		if err != nil {
			t.Fatalf("after adding GPU %s: %v", hotplugGPU.PCI, err)
		}
		added = append(added, at.Sub(t0))
		// Its nodes go first, and the driver may publish before the rest
		// of sysfs is gone: the clock starts when the removal does.
		t0 = time.Now()
		if err := d.node.RemoveGPU(hotplugGPU.PCI); err != nil {
			t.Fatal(err)
		}
		at, err = sw.until(10*time.Second, func(devs map[string]bool) bool { return !devs[dev] })
		if err != nil {
			t.Fatalf("after removing GPU %s: %v", hotplugGPU.PCI, err)
		}
		removed = append(removed, at.Sub(t0))
	}
	d.results["hotplugAddedToSlice"] = durations(added)
	d.results["hotplugRemovedFromSlice"] = durations(removed)
	t.Logf("GPU added (sysfs and /dev/dri complete) -> the API server's slice lists it: %s", summary(added))
	t.Logf("GPU removal started -> the API server's slice no longer lists it: %s", summary(removed))
}

func (d *draSuite) idleRSS(ctx context.Context, t *testing.T) {
	// Idle: every GPU published, the kubelet's health stream open, no pod.
	lo, hi := idleRSS(t, d.driver)
	d.results["idleRSSMiB"] = map[string]any{"min": lo, "max": hi, "gpus": len(d.gpus)}
	t.Logf("DRA driver idle in the cluster (%d GPUs, health stream open): RSS %.2f-%.2f MiB", len(d.gpus), lo, hi)
	requireWithinRequest(t, d.daemonSet, hi)
}

// requireWithinRequest checks an idle RSS (MiB) against the memory the
// DaemonSet's container requests: what the scheduler sets aside for it.
func requireWithinRequest(t *testing.T, ds *unstructured.Unstructured, rssMiB float64) {
	t.Helper()
	containers := asList(dig(ds.Object, "spec", "template", "spec", "containers"))
	if len(containers) != 1 {
		t.Fatalf("DaemonSet %s has %d containers, want 1", ds.GetName(), len(containers))
	}
	req, _ := dig(containers[0], "resources", "requests", "memory").(string)
	q, err := resource.ParseQuantity(req)
	if err != nil {
		t.Fatalf("DaemonSet %s: memory request %q: %v", ds.GetName(), req, err)
	}
	if mib := float64(q.Value()) / (1 << 20); rssMiB > mib {
		t.Errorf("idle RSS %.2f MiB is above the %s the DaemonSet %s requests", rssMiB, req, ds.GetName())
	}
}

// idleRSS samples a process's RSS once a second for 10 s, after 5 s of
// settling, and returns the lowest and highest in MiB. The pauses are the
// measurement's window, not waits for a condition.
func idleRSS(t *testing.T, p *rig.Proc) (lo, hi float64) {
	t.Helper()
	time.Sleep(5 * time.Second)
	var samples []int64
	for range 10 {
		rss, err := p.RSS()
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, rss)
		time.Sleep(time.Second)
	}
	slices.Sort(samples)
	mib := func(b int64) float64 { return float64(b*100/(1<<20)) / 100 }
	return mib(samples[0]), mib(samples[len(samples)-1])
}

// refused waits for a binary that must refuse to start to exit, and
// returns its log since offset.
func refused(t *testing.T, p *rig.Proc, offset int64) string {
	t.Helper()
	err := p.Wait(30 * time.Second)
	out := readFrom(p.Log, offset)
	var exit interface{ ExitCode() int }
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		_ = p.Stop(5 * time.Second)
		t.Fatalf("%s did not refuse to start (%v):\n%s", p.Name, err, out)
	}
	return out
}

func (d *draSuite) pluginRefusesBesideDRA(ctx context.Context, t *testing.T) {
	before, err := d.r.Registrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	offset := fileSize(filepath.Join(d.r.LogDir, "plugin.log"))
	if err := d.r.StartPlugin(d.binary, d.pluginArgs(1)...); err != nil {
		t.Fatal(err)
	}
	out := refused(t, d.r.Plugin(), offset)
	if !strings.Contains(out, conflictSocket()) {
		t.Errorf("the device plugin's refusal does not name the DRA driver's socket %s:\n%s", conflictSocket(), out)
	}
	if after, err := d.r.Registrations(ctx); err != nil {
		t.Errorf("reading the kubelet's registrations after the refusal: %v", err)
	} else if after[i915] > before[i915] || after[xe] > before[xe] {
		t.Errorf("the device plugin registered (%v, was %v) beside the DRA driver", after, before)
	}
	if d.driver.Exited() {
		t.Fatal("the DRA driver died")
	}
	t.Logf("as expected: %s", firstLineWith(out, "never both"))
}

func conflictSocket() string { return filepath.Join(rig.PluginsRegistryDir, draDriver+"-reg.sock") }

func (d *draSuite) draRefusesBesidePlugin(ctx context.Context, t *testing.T) {
	d.stopDriver(t)
	d.startPlugin(ctx, t, 1)
	defer func() {
		if err := d.r.StopPlugin(); err != nil {
			t.Error(err)
		}
	}()
	offset := fileSize(d.driver.Log)
	p, err := d.r.StartDRA(d.draBinary, d.driverArgs()...)
	if err != nil {
		t.Fatal(err)
	}
	d.driver = p
	out := refused(t, p, offset)
	if !strings.Contains(out, rig.DevicePluginDir) || !strings.Contains(out, "never both") {
		t.Errorf("the DRA driver's refusal does not name the device plugin's socket in %s:\n%s", rig.DevicePluginDir, out)
	}
	t.Logf("as expected: %s", firstLineWith(out, "never both"))

	// The device plugin's figures, on the same cluster, for the table.
	lo, hi := idleRSS(t, d.r.Plugin())
	d.results["devicePluginIdleRSSMiB"] = map[string]any{"min": lo, "max": hi, "gpus": len(d.gpus)}
	t.Logf("device plugin idle in the cluster (%d GPUs): RSS %.2f-%.2f MiB", len(d.gpus), lo, hi)
	for _, o := range renderDaemonSet(t, d.r, d.node, baseDir) {
		if o.GetKind() == "DaemonSet" {
			requireWithinRequest(t, o, hi)
		}
	}
	if err := waitNode(ctx, d.api, 60*time.Second, func(n *corev1.Node) error {
		return allocatable(n, map[string]int64{i915: 3, xe: 1})
	}); err != nil {
		t.Fatal(err)
	}
	var ds []time.Duration
	for i := range draTimedPods {
		name := fmt.Sprintf("dp-timed-%d", i)
		manifest, err := rig.ClusterGPUPod(name, map[string]int{i915: 1})
		if err != nil {
			t.Fatal(err)
		}
		got, took := d.runClusterPod(ctx, t, name, manifest)
		requireDriver(t, got, 1, "i915")
		ds = append(ds, took)
		if err := d.api.DeletePod(ctx, "default", name, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	d.results["devicePluginToRunning"] = durations(ds)
	t.Logf("device plugin, gpu.intel.com/i915: 1: pod created -> container running with its GPU: %s", summary(ds))
}

func ptrString[T ~string](p *T) string {
	if p == nil {
		return "<nil>"
	}
	return string(*p)
}

func ptrTo[T any](v T) *T { return &v }

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
