package health_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// These tests run against the machine's own kernel and sysfs.

// realPCI returns a PCI function of this machine and its parent's path
// below /sys/devices.
func realPCI(t testing.TB) (addr, parent string) {
	t.Helper()
	entries, err := os.ReadDir("/sys/bus/pci/devices")
	if err != nil || len(entries) == 0 {
		testenv.Unavailable(t, "this machine shows no PCI function in /sys/bus/pci/devices (%v)", err)
	}
	addr = entries[0].Name()
	dir, err := filepath.EvalSymlinks(filepath.Join("/sys/bus/pci/devices", addr))
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel("/sys/devices", filepath.Dir(dir))
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("%s is not below /sys/devices", dir)
	}
	return addr, rel
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root: only root may make the kernel send a uevent (by writing a device's uevent file)")
	}
}

// kernelRig is a Monitor on the real uevent socket whose sysfs root is a
// fake node holding a GPU at the address and DEVPATH of one of this
// machine's real PCI functions, so the kernel's events about that function
// are events about the fake GPU.
func kernelRig(t testing.TB) (m *health.Monitor, n *fakenode.Node, addr string, stop func()) {
	t.Helper()
	requireRoot(t)
	addr, parent := realPCI(t)
	n = fakenode.NewT(t, fakenode.WithMode(fakenode.HostDevices))
	if err := n.AddGPU(fakenode.GPU{Card: 0, PCI: addr, Parent: parent}); err != nil {
		t.Fatal(err)
	}
	m, err := health.New(health.WithSysfsRoot(n.Sys))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	for m.Stats().Listener == health.ListenerIdle {
		time.Sleep(time.Millisecond)
	}
	if st := m.Stats(); st.Listener != health.ListenerListening {
		t.Fatalf("the Monitor is not listening: %+v", st)
	}
	return m, n, addr, func() {
		cancel()
		<-done
	}
}

// synthBind makes the kernel send "bind" for the real PCI function: a
// synthetic uevent (Linux 4.13), which changes nothing in the kernel.
func synthBind(t testing.TB, addr string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join("/sys/bus/pci/devices", addr, "uevent"), []byte("bind"), 0); err != nil {
		t.Fatalf("making the kernel send a uevent: %v", err)
	}
}

func TestTheMonitorHearsTheKernel(t *testing.T) {
	m, n, addr, stop := kernelRig(t)
	defer stop()
	if err := n.SetAER(addr, fakenode.AER{}); err != nil {
		t.Fatal(err)
	}
	devs := scan(t, n)
	if len(devs) != 1 {
		t.Fatalf("the fake node has %d GPUs", len(devs))
	}
	wantHealthy(t, m.Check(devs)[0])
	if err := n.SetAER(addr, fakenode.AER{Fatal: 1}); err != nil {
		t.Fatal(err)
	}
	wantUnhealthy(t, m.Check(devs)[0], health.ReasonAERFatal)
	changed(m)

	// Only the kernel's bind event brings the GPU back.
	synthBind(t, addr)
	select {
	case <-m.Changed():
	case <-time.After(deadline):
		t.Fatalf("no Changed after the kernel's bind event; stats %+v", m.Stats())
	}
	wantHealthy(t, m.Check(devs)[0])
	if st := m.Stats(); st.Received == 0 || st.Malformed != 0 {
		t.Errorf("Stats = %+v, want kernel messages received and none malformed", st)
	}
}

func TestARecreatedSysfsDirectoryGetsANewInode(t *testing.T) {
	// The Monitor tells a rebind it did not hear of by the card directory's
	// inode number. Check that sysfs numbers a directory made anew at the
	// same path differently, with a loop device added, removed and added
	// again (nothing uses a loop device with this number).
	requireRoot(t)
	const num = 3917
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		testenv.Unavailable(t, "no loop device control to make sysfs directories with: %v", err)
	}
	defer ctl.Close()
	dir := filepath.Join("/sys/devices/virtual/block", "loop3917")
	add := func() {
		t.Helper()
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, num); errno != 0 {
			testenv.Unavailable(t, "LOOP_CTL_ADD %d: %v", num, errno)
		}
	}
	remove := func() {
		t.Helper()
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, num); errno != 0 {
			t.Fatalf("LOOP_CTL_REMOVE %d: %v", num, errno)
		}
	}
	inode := func() uint64 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	add()
	first := inode()
	remove()
	add()
	defer remove()
	if second := inode(); second == first {
		t.Errorf("%s made anew kept inode %d", dir, first)
	}
}

func TestTheMachinesOwnPCIFunctionsReadHealthy(t *testing.T) {
	// The readers on a real sysfs: config space, power state, AER files
	// where the machine has them. Nothing here is a GPU, and nothing may
	// read as gone or unanswering.
	entries, err := os.ReadDir("/sys/bus/pci/devices")
	if err != nil || len(entries) == 0 {
		testenv.Unavailable(t, "no PCI functions in /sys/bus/pci/devices (%v)", err)
	}
	m, err := health.New(health.WithSysfsRoot("/sys"))
	if err != nil {
		t.Fatal(err)
	}
	devs := make([]discovery.Device, 0, len(entries))
	for _, e := range entries {
		devs = append(devs, discovery.Device{PCIAddress: e.Name()})
	}
	for _, s := range m.Check(devs) {
		wantHealthy(t, s)
	}
	// A function that is not there is gone.
	wantUnhealthy(t, m.Status(&discovery.Device{PCIAddress: "ffff:ff:1f.7"}), health.ReasonGone)
}

// userNSEnv switches the test binary into the user-namespace helper.
const userNSEnv = "HEALTH_USERNS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(userNSEnv) == "1" {
		os.Exit(userNSHelper())
	}
	os.Exit(m.Run())
}

// userNSHelper runs a Monitor with its default uevent socket and prints
// what it reports about its listener.
func userNSHelper() int {
	m, err := health.New(health.WithSysfsRoot(os.TempDir()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Run returns at once when it knows it cannot hear the kernel; the
	// timeout only ends a Run that listens in vain.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st := m.Stats()
	fmt.Println(st.Listener, errors.Is(st.ListenerError, uevent.ErrNotSentHere))
	return 0
}

func TestInAUserNamespaceTheMonitorSaysItCannotHearTheKernel(t *testing.T) {
	// There the kernel sends no uevents (see the uevent package's netns
	// test): a listening socket would hide that wedges go unnoticed.
	requireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), userNSEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		testenv.Unavailable(t, "cannot start a process in a new user namespace: %v", err)
	}
	timer := time.AfterFunc(deadline, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	if got := strings.TrimSpace(out); got != "unavailable true" {
		t.Errorf("in a user namespace the Monitor reports %q, want \"unavailable true\"", got)
	}
}
