package reliability_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// The spec directory fails under the running plugin: read-only, or full.
// The plugin must log and count the failure, keep the spec and the device
// list it had, advertise no GPU whose spec is not on disk, retry, and
// catch up once the directory is writable again.

const (
	addedPCI       = "0000:0a:00.0"
	specWriteErrs  = "intel_gpu_cdi_spec_write_errors_total"
	specWriteError = "writing CDI spec; keeping the previous snapshot"
)

var addedGPU = fakenode.GPU{Card: 1, PCI: addedPCI, Device: "0x56a0"}

// readOnly makes dir unwritable until the returned function is called:
// for root, whom modes do not stop, by a read-only bind mount of dir on
// itself; otherwise by mode 0555.
func readOnly(t testing.TB, dir string) (restore func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		return func() { os.Chmod(dir, 0o755) }
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		testenv.Unavailable(t, "making %s read-only needs a bind mount: %v", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		testenv.Unavailable(t, "remounting %s read-only: %v", dir, err)
	}
	done := false
	restore = func() {
		if !done {
			done = true
			if err := unix.Unmount(dir, 0); err != nil {
				t.Errorf("unmounting %s: %v", dir, err)
			}
		}
	}
	t.Cleanup(restore)
	return restore
}

// smallTmpfs mounts a tmpfs of size bytes on a new directory.
func smallTmpfs(t testing.TB, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cdi")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "a full spec directory needs a small tmpfs, and mounting one needs root")
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0755"); err != nil {
		testenv.Unavailable(t, "mounting a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes a file into dir until the filesystem is full, and returns
// its path.
func fill(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

// specHas reports whether the spec on disk names the device.
func specHas(t testing.TB, path, name string) bool {
	t.Helper()
	s, err := cdiapi.ReadSpec(path, 0)
	if err != nil {
		t.Fatalf("the spec on disk is not a valid spec: %v", err)
	}
	return s.GetDevice(name) != nil
}

// watchSpecAgainstLists checks, for every list the kubelet receives, that
// each healthy device in it is in the spec on disk. It is exact while only
// GPUs are added (a removal may trim the spec after the list is sent).
func (r *rig) watchSpecAgainstLists(ch <-chan []*pluginapi.Device, stop <-chan struct{}) <-chan []string {
	bad := make(chan []string, 1)
	go func() {
		var problems []string
		defer func() { bad <- problems }()
		for {
			select {
			case l, ok := <-ch:
				if !ok {
					return
				}
				for _, d := range l {
					if d.Health == pluginapi.Healthy && !specHas(r.t, r.plugin.SpecPath(), d.ID) {
						problems = append(problems, d.ID+" advertised without its spec on disk")
					}
				}
			case <-stop:
				return
			}
		}
	}()
	return bad
}

// failingSpecDir adds a GPU while the spec directory cannot be written and
// checks that nothing moves until it can.
func failingSpecDir(t *testing.T, r *rig, breakIt func() (restore func())) {
	c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "the first GPU", func(l []*pluginapi.Device) bool { return len(l) == 1 })
	before, err := os.ReadFile(r.plugin.SpecPath())
	if err != nil {
		t.Fatal(err)
	}
	restore := breakIt()
	errsBefore := r.obs.specWriteErrs.Load()

	r.node.MustAddGPU(t, addedGPU)
	// Three failures: the first write and two retries.
	eventually(t, "three failed spec writes", func() bool { return r.obs.specWriteErrs.Load() >= errsBefore+3 })
	select {
	case l := <-ch:
		t.Fatalf("a list was sent while the spec could not be written: %v", ids(l))
	default:
	}
	if after, err := os.ReadFile(r.plugin.SpecPath()); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("the previous spec was not kept (%v)", err)
	}
	if got := r.obs.metric(t, specWriteErrs); got < 3 {
		t.Errorf("%s = %v, want at least 3", specWriteErrs, got)
	}
	if lines := r.log.lines("level=ERROR", specWriteError, r.plugin.SpecPath()); len(lines) < 3 {
		t.Errorf("%d error lines name the failed write, want at least 3:\n%s", len(lines), r.log)
	}
	if left := temps(t, r.specDir); len(left) > 0 {
		t.Errorf("failed writes left temporary files: %v", left)
	}
	r.alive()

	stop := make(chan struct{})
	bad := r.watchSpecAgainstLists(ch, stop)
	restore()
	// The retry catches up: the list grows only once the spec holds the GPU.
	eventually(t, "the added GPU in the spec", func() bool { return specHas(t, r.plugin.SpecPath(), addedPCI) })
	c2 := r.registered(deviceplugin.ResourceI915, 1)
	r.nextList(r.watch(c2), "the added GPU listed", func(l []*pluginapi.Device) bool { return len(l) == 2 })
	close(stop)
	for _, p := range <-bad {
		t.Error(p)
	}
	// Retries stop once a write succeeds.
	settled := r.obs.specWriteErrs.Load()
	time.Sleep(time.Second)
	if now := r.obs.specWriteErrs.Load(); now != settled {
		t.Errorf("spec writes still fail or retry after recovery: %d more errors", now-settled)
	}
}

func TestAReadOnlySpecDirKeepsTheSpecAndTheListAndIsRetried(t *testing.T) {
	r := newRig(t, rigConfig{fixtures: []func(*fakenode.Node) error{fakenode.IGPU}})
	failingSpecDir(t, r, func() func() { return readOnly(t, r.specDir) })
}

func TestAFullSpecDirKeepsTheSpecAndTheListAndIsRetried(t *testing.T) {
	dir := smallTmpfs(t, 64<<10)
	r := newRig(t, rigConfig{fixtures: []func(*fakenode.Node) error{fakenode.IGPU}, specDir: dir})
	failingSpecDir(t, r, func() func() {
		filler := fill(t, dir)
		return func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}
	})
	if !strings.Contains(r.log.String(), "no space left on device") {
		t.Errorf("the log does not say the directory is full:\n%s", r.log)
	}
}

func TestAGPUThatLeavesWhileTheSpecDirIsReadOnlyLeavesTheListFirst(t *testing.T) {
	r := newRig(t, rigConfig{fixtures: []func(*fakenode.Node) error{fakenode.IGPU, func(n *fakenode.Node) error { return n.AddGPU(addedGPU) }}})
	c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "both GPUs", func(l []*pluginapi.Device) bool { return len(l) == 2 })
	restore := readOnly(t, r.specDir)
	errsBefore := r.obs.specWriteErrs.Load()

	if err := r.node.RemoveGPU(addedPCI); err != nil {
		t.Fatal(err)
	}
	r.nextList(ch, "the GPU gone from the list", func(l []*pluginapi.Device) bool { return len(l) == 1 })
	eventually(t, "failed trims", func() bool { return r.obs.specWriteErrs.Load() >= errsBefore+2 })
	if !specHas(t, r.plugin.SpecPath(), addedPCI) {
		t.Fatal("the spec lost the GPU although it could not be written")
	}
	restore()
	eventually(t, "the spec trimmed", func() bool { return !specHas(t, r.plugin.SpecPath(), addedPCI) })
	r.alive()
}

func TestAPluginStartingOnAReadOnlySpecDirRegistersNothingUntilItCanWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cdi")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	restore := readOnly(t, dir)
	r := newRig(t, rigConfig{fixtures: []func(*fakenode.Node) error{fakenode.IGPU}, specDir: dir})
	eventually(t, "failed spec writes", func() bool { return r.obs.specWriteErrs.Load() >= 3 })
	if regs := r.kubelet.Registrations(); len(regs) > 0 {
		t.Fatalf("registered %d resources with no spec on disk", len(regs))
	}
	restore()
	r.registered(deviceplugin.ResourceI915, 1)
	if !specHas(t, r.plugin.SpecPath(), "0000:00:02.0") {
		t.Error("registered before the spec was on disk")
	}
}

// TestAServerThatCannotStartIsRetried blocks the plugin's socket path with
// a directory: the server cannot start, and must start once it can.
func TestAServerThatCannotStartIsRetried(t *testing.T) {
	sockDir := testenv.SocketDir(t)
	block := filepath.Join(sockDir, socketOf(deviceplugin.ResourceI915))
	if err := os.MkdirAll(filepath.Join(block, "in-the-way"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigConfig{fixtures: []func(*fakenode.Node) error{fakenode.IGPU}, sockDir: sockDir})
	eventually(t, "a failed server start", func() bool {
		return len(r.log.lines("level=ERROR", "starting device plugin server")) > 0
	})
	if err := os.RemoveAll(block); err != nil {
		t.Fatal(err)
	}
	r.registered(deviceplugin.ResourceI915, 1)
	r.alive()
}

func TestAllocateWithUnknownDuplicateAndUnhealthyIDs(t *testing.T) {
	r := newRig(t, rigConfig{
		fixtures: []func(*fakenode.Node) error{fakenode.Demo},
		opts:     []plugintest.Option{plugintest.WithSharedDevNum(2), plugintest.WithMonitoring(true)},
	})
	c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "four shares", func(l []*pluginapi.Device) bool { return len(l) == 4 })
	if err := r.node.RemoveDevNodes(flakyPCI); err != nil {
		t.Fatal(err)
	}
	r.nextList(ch, "0000:03:00.0 unhealthy", func(l []*pluginapi.Device) bool {
		return slices.Contains(ids(l), flakyPCI+"-0/Unhealthy")
	})
	mon := r.registered(deviceplugin.ResourceMonitoring, 1)

	ok := func(names ...string) []string { return names }
	tests := []struct {
		name   string
		client string // "" for i915, "monitoring"
		req    [][]string
		code   codes.Code
		quote  string // in the error message
		want   [][]string
	}{
		{name: "an unknown ID is refused naming it", req: [][]string{{unknownPCI + "-0"}}, code: codes.InvalidArgument, quote: `"` + unknownPCI + `-0"`},
		{name: "a GPU's address without a share suffix is unknown when GPUs are shared", req: [][]string{{steadyPCI}}, code: codes.InvalidArgument, quote: `"` + steadyPCI + `"`},
		{name: "an ID of another resource is refused", req: [][]string{{xePCI + "-0"}}, code: codes.InvalidArgument, quote: `"` + xePCI + `-0"`},
		{name: "an empty ID is refused", req: [][]string{{""}}, code: codes.InvalidArgument, quote: `""`},
		{name: "a container without IDs is refused", req: [][]string{{}}, code: codes.InvalidArgument, quote: "no device IDs"},
		{name: "an unhealthy ID is refused naming it and why", req: [][]string{{flakyPCI + "-1"}}, code: codes.FailedPrecondition, quote: `"` + flakyPCI + `-1"`},
		{name: "one unknown ID refuses the whole request", req: [][]string{{steadyPCI + "-0", unknownPCI + "-1"}}, code: codes.InvalidArgument, quote: unknownPCI},
		{name: "a bad second container refuses the whole request", req: [][]string{{steadyPCI + "-0"}, {flakyPCI + "-0"}}, code: codes.FailedPrecondition, quote: flakyPCI},
		{name: "a duplicated ID injects its GPU once", req: [][]string{{steadyPCI + "-0", steadyPCI + "-0"}}, want: [][]string{ok("intel.com/gpu=" + steadyPCI)}},
		{name: "two shares of one GPU inject it once", req: [][]string{{steadyPCI + "-1", steadyPCI + "-0"}}, want: [][]string{ok("intel.com/gpu=" + steadyPCI)}},
		{name: "two containers sharing a GPU both get it", req: [][]string{{steadyPCI + "-0"}, {steadyPCI + "-1"}}, want: [][]string{ok("intel.com/gpu=" + steadyPCI), ok("intel.com/gpu=" + steadyPCI)}},
		{name: "an unknown monitoring ID is refused", client: "monitoring", req: [][]string{{"monitor"}}, code: codes.InvalidArgument, quote: `"monitor"`},
		{name: "the monitoring device gets every GPU", client: "monitoring", req: [][]string{{deviceplugin.MonitoringDeviceID}}, want: [][]string{ok("intel.com/gpu=all")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := c
			if tt.client == "monitoring" {
				cl = mon
			}
			resp, err := allocate(ctxFor(t, waitFor), cl, tt.req...)
			if tt.want == nil {
				if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.quote) {
					t.Fatalf("Allocate(%v) = %v, %v; want %v quoting %s", tt.req, resp, err, tt.code, tt.quote)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate(%v): %v", tt.req, err)
			}
			var got [][]string
			for _, cr := range resp.ContainerResponses {
				got = append(got, cdiNames(cr))
			}
			if !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("Allocate(%v) = %v, want %v", tt.req, got, tt.want)
			}
		})
	}
}
