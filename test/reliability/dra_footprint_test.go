package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/apiserver"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// BenchmarkDRAFootprint is BenchmarkFootprint for the DRA driver: the
// binary as the image builds it (intel-gpu-cdi-dra; with
// FOOTPRINT_TAGS=dra_combined, `intel-gpu-cdi dra`), on a fake node of 64
// GPUs, against a real kube-apiserver and etcd (the versions test/cluster
// builds) and test/drakubelet as the kubelet, which holds the health stream
// open. It reports start → registered, start → the 64 devices in the API
// server, idle RSS and CPU over a window, and then Prepare + Unprepare of
// claims one after the other for a window, with Prepare's latency (the
// helper reads the claim from the API server, the driver writes its
// checkpoint), with the client-side rate limit raised so that it does not
// pace the loop. FOOTPRINT_SECONDS sets each window (default 10).
//
//	go test -run '^$' -bench '^BenchmarkDRAFootprint$' -v -count=1 ./test/reliability/
func BenchmarkDRAFootprint(b *testing.B) {
	var t testing.TB = b
	window := footprintWindow(t)
	api := startAPIServer(t)
	const nodeName = "footprint-node"
	ctx := context.Background()
	if _, err := api.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bin, sub := buildCmd(t, "intel-gpu-cdi-dra", ""), []string(nil)
	if tags := os.Getenv("FOOTPRINT_TAGS"); tags != "" {
		bin, sub = buildCmd(t, "intel-gpu-cdi", tags), []string{"dra"}
	}
	node := fakenode.NewT(t)
	node.MustApply(t, func(n *fakenode.Node) error { return fakenode.Many(n, footprintGPUs) })
	root := testenv.SocketDir(t)
	for _, d := range []string{"plugins_registry", "plugins", "device-plugins"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	var stderr bytes.Buffer
	cmd := exec.Command(bin, append(sub, "--sysfs-root", node.Sys, "--dev-root", node.Dev, "--node-name", nodeName,
		"--kubelet-registrar-dir", filepath.Join(root, "plugins_registry"), "--kubelet-plugins-dir", filepath.Join(root, "plugins"),
		"--kubelet-socket-dir", filepath.Join(root, "device-plugins"), "--cdi-spec-dir", filepath.Join(t.TempDir(), "cdi"),
		"--kubeconfig", api.Kubeconfig, "--log-level", "warn",
		// The load below prepares claims back to back, faster than the
		// client-side rate limit allows (each Prepare reads its claim): the
		// limit would be measured, not the driver.
		"--kube-api-qps", "1000", "--kube-api-burst", "1000")...)
	cmd.Stderr = &stderr
	start, exited := startMeasured(t, cmd)
	pid := cmd.Process.Pid

	k, err := drakubelet.Register(ctxFor(t, waitFor), filepath.Join(root, "plugins_registry", "gpu.intel.com-reg.sock"))
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	defer k.Close()
	registered := time.Since(start)
	published := waitSliceDevices(t, api, nodeName, footprintGPUs, &stderr)
	publishedAfter := time.Since(start)
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	health, _, err := k.WatchHealth(hctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range health {
		}
	}()

	time.Sleep(3 * time.Second)
	idle0 := sampleProc(t, pid)
	time.Sleep(window)
	idle1 := sampleProc(t, pid)

	// Load: one claim after another, each prepared and unprepared, as pods
	// come and go on a busy node.
	const claims = 64
	objs := make([]*resourceapi.ResourceClaim, claims)
	for i := range objs {
		c := &resourceapi.ResourceClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("c%d", i)},
			Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
				Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: dra.DefaultDriverName},
			}}}},
		}
		c, err := api.Client.ResourceV1().ResourceClaims("default").Create(ctx, c, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{{
			Request: "gpu", Driver: dra.DefaultDriverName, Pool: nodeName, Device: published[i%len(published)],
		}}}}
		c.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: "p", UID: types.UID(fmt.Sprintf("pod-%d", i))}}
		if objs[i], err = api.Client.ResourceV1().ResourceClaims("default").UpdateStatus(ctx, c, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var lat []time.Duration
	failed := 0
	load0 := sampleProc(t, pid)
	for end := time.Now().Add(window); time.Now().Before(end); {
		c := objs[len(lat)%claims]
		t0 := time.Now()
		resp, err := k.Prepare(ctxFor(t, waitFor), c)
		d := time.Since(t0)
		if err != nil || resp.Claims[string(c.UID)].Error != "" {
			failed++
			t.Logf("prepare: %v %v", err, resp)
			continue
		}
		lat = append(lat, d)
		if _, err := k.Unprepare(ctxFor(t, waitFor), c); err != nil {
			t.Fatal(err)
		}
	}
	load1 := sampleProc(t, pid)
	select {
	case err := <-exited:
		t.Fatalf("the driver exited: %v\n%s", err, stderr.String())
	default:
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Microsecond)
	}
	t.Logf("%d GPUs; registered %s after start, %d devices in the API server %s after start",
		footprintGPUs, registered.Round(time.Millisecond), len(published), publishedAfter.Round(time.Millisecond))
	t.Logf("idle %s: RSS %s (%s anonymous, peak %s), CPU %d ticks = %.2f%% of a core, %d threads, %d open files",
		idle1.at.Sub(idle0.at).Round(time.Millisecond), mib(idle1.rss), mib(idle1.anon), mib(idle1.hwm), idle1.cpuTicks-idle0.cpuTicks,
		100*cpuShare(idle0, idle1), idle1.threads, idle1.openFDs)
	t.Logf("load %s: %d Prepare+Unprepare (%d failed), Prepare p50 %s p99 %s; RSS %s (%s anonymous, peak %s), CPU %.1f%% of a core",
		load1.at.Sub(load0.at).Round(time.Millisecond), len(lat), failed, pct(0.5), pct(0.99),
		mib(load1.rss), mib(load1.anon), mib(load1.hwm), 100*cpuShare(load0, load1))
	if ticks := idle1.cpuTicks - idle0.cpuTicks; ticks > idleCPULimit {
		t.Errorf("the idle driver used %d clock ticks of CPU in %s: something polls", ticks, window)
	}
	if failed > 0 {
		t.Errorf("%d Prepares failed", failed)
	}
	b.ReportMetric(float64(registered)/float64(time.Millisecond), "registered-ms")
	b.ReportMetric(float64(publishedAfter)/float64(time.Millisecond), "published-ms")
	b.ReportMetric(float64(idle1.rss)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(100*cpuShare(idle0, idle1), "idle-CPU-%")
	b.ReportMetric(float64(load1.rss)/(1<<20), "load-RSS-MiB")
	b.ReportMetric(float64(pct(0.5))/float64(time.Microsecond), "prepare-p50-µs")
	b.ReportMetric(float64(pct(0.99))/float64(time.Microsecond), "prepare-p99-µs")
}

// waitSliceDevices waits, watching the API server, until the node's
// ResourceSlices hold n devices, and returns their names.
func waitSliceDevices(t testing.TB, api *apiserver.Server, nodeName string, n int, stderr *bytes.Buffer) []string {
	t.Helper()
	ctx := ctxFor(t, waitFor)
	w, err := api.Client.ResourceV1().ResourceSlices().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for {
		l, err := api.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range l.Items {
			if s.Spec.NodeName != nil && *s.Spec.NodeName == nodeName {
				for _, d := range s.Spec.Devices {
					names = append(names, d.Name)
				}
			}
		}
		if len(names) == n {
			return names
		}
		select {
		case <-w.ResultChan():
		case <-ctx.Done():
			t.Fatalf("%d of %d devices published\n%s", len(names), n, strings.TrimSpace(stderr.String()))
		}
	}
}
