package uevent_test

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// The real-kernel tests make the kernel send a synthetic uevent for
// /dev/null: since Linux 4.13 root may write "change <uuid>" to any
// device's uevent file, and the kernel broadcasts a change event carrying
// SYNTH_UUID=<uuid>. No udev daemon runs on the test machines, and for
// one that does, a change on /dev/null only re-applies its permissions.
const (
	nullUevent  = "/sys/devices/virtual/mem/null/uevent"
	nullDevPath = "/devices/virtual/mem/null"
)

// deadline bounds every wait for the kernel: a hang fails the test
// instead of blocking it; no timing is asserted.
const deadline = 20 * time.Second

// helperEnv switches the test binary into the network-namespace helper.
const helperEnv = "UEVENT_NETNS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(netnsHelper())
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root to write %s (the kernel sends a uevent on that write)", nullUevent)
	}
	if _, err := os.Stat(nullUevent); err != nil {
		testenv.Unavailable(t, "no %s to trigger a uevent with: %v", nullUevent, err)
	}
}

func newUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// trigger makes the kernel broadcast "change@/devices/virtual/mem/null"
// with SYNTH_UUID=uuid. The broadcast happens inside the write: when it
// returns, the message is queued on every listening socket.
func trigger(t testing.TB, uuid string) {
	t.Helper()
	if err := os.WriteFile(nullUevent, []byte("change "+uuid), 0); err != nil {
		t.Fatalf("triggering a uevent: %v", err)
	}
}

// receiveUntil reads s until match accepts an event, skipping the
// messages the socket reports as skippable. It fails the test after
// deadline by closing the socket.
func receiveUntil(t *testing.T, s *uevent.Socket, match func(uevent.Event) bool) uevent.Event {
	t.Helper()
	timer := time.AfterFunc(deadline, func() { s.Close() })
	defer timer.Stop()
	buf := make([]byte, uevent.MaxMessage)
	for {
		n, err := s.Receive(buf)
		switch {
		case errors.Is(err, uevent.ErrOverflow), errors.Is(err, uevent.ErrForeign), errors.Is(err, uevent.ErrTruncated):
			continue
		case err != nil:
			t.Fatalf("no matching uevent within %s: %v", deadline, err)
		}
		ev, err := uevent.Parse(buf[:n])
		if err != nil {
			t.Fatalf("the kernel sent a message Parse refuses: %v\n%q", err, buf[:n])
		}
		if match(ev) {
			return ev
		}
	}
}

func TestSocketReceivesTheKernelsUevents(t *testing.T) {
	requireRoot(t)
	s, err := uevent.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ReceiveBuffer() <= 0 {
		t.Errorf("ReceiveBuffer() = %d", s.ReceiveBuffer())
	}

	uuid := newUUID(t)
	trigger(t, uuid)
	ev := receiveUntil(t, s, func(ev uevent.Event) bool {
		v, _ := ev.Get("SYNTH_UUID")
		return v == uuid
	})

	if ev.Action != "change" || ev.DevPath != nullDevPath || ev.Subsystem != "mem" {
		t.Errorf("got %s subsystem %q, want change@%s subsystem mem", ev.String(), ev.Subsystem, nullDevPath)
	}
	// The kernel names the node relative to /dev; only udev's own
	// re-broadcast adds the /dev/ prefix.
	if v, _ := ev.Get("DEVNAME"); v != "null" {
		t.Errorf("DEVNAME = %q, want the kernel's form \"null\"", v)
	}
	if ev.Seqnum == 0 {
		t.Errorf("SEQNUM missing in %v", ev.Vars())
	}
}

func TestSocketCloseWakesAPendingReceive(t *testing.T) {
	s, err := uevent.Open()
	if err != nil {
		testenv.Unavailable(t, "cannot open a uevent socket here: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		// The kernel may send real uevents meanwhile (other tests make
		// network devices, mounts, containers): the reader takes them, as
		// the listener does, until Receive fails for good.
		buf := make([]byte, uevent.MaxMessage)
		for {
			_, err := s.Receive(buf)
			if err != nil && !errors.Is(err, uevent.ErrOverflow) && !errors.Is(err, uevent.ErrForeign) && !errors.Is(err, uevent.ErrTruncated) {
				done <- err
				return
			}
		}
	}()
	// Give the reader a chance to block first; if it has not yet, Close
	// still makes its Receive fail, which is what is checked.
	time.Sleep(10 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Receive after Close = %v, want one that wraps os.ErrClosed", err)
		}
	case <-time.After(deadline):
		t.Fatal("Receive still blocked after Close")
	}
}

func TestKernelSendsHereInTheInitialUserNamespace(t *testing.T) {
	// The test process is in the initial user namespace on the CI machine
	// (root, no container); the other case is checked in a child above.
	if b, err := os.ReadFile("/proc/self/uid_map"); err != nil || strings.Join(strings.Fields(string(b)), " ") != "0 0 4294967295" {
		testenv.Unavailable(t, "this test does not run in the initial user namespace (uid_map %q, %v)", b, err)
	}
	if ok, err := uevent.KernelSendsHere(); !ok || err != nil {
		t.Errorf("KernelSendsHere() = %v, %v in the initial user namespace", ok, err)
	}
}

func TestOpenRefusesANonPositiveBuffer(t *testing.T) {
	if _, err := uevent.Open(uevent.WithReceiveBuffer(0)); err == nil || !strings.Contains(err.Error(), "receive buffer") {
		t.Errorf("Open(WithReceiveBuffer(0)) = %v, want an error naming the receive buffer", err)
	}
}

// TestWhichNetworkNamespacesReceiveKernelUevents answers issue 11's
// question on this kernel: a listener in a new network namespace gets a
// marker message injected into that namespace after the kernel broadcast
// its event. Both land in the same socket queue in order, so the first
// message the listener reads says whether the kernel's event reached it —
// without waiting for something that may never come.
func TestWhichNetworkNamespacesReceiveKernelUevents(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name  string
		flags uintptr
		maps  bool
		want  string
	}{
		{
			// What a pod without hostNetwork has: the container runtime
			// creates its network namespace from the host's user namespace.
			name:  "a new network namespace owned by the initial user namespace receives them",
			flags: syscall.CLONE_NEWNET,
			want:  "kernel",
		},
		{
			// A pod with hostUsers: false (user namespaces) or a rootless
			// runtime.
			name:  "a network namespace owned by a new user namespace does not",
			flags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
			maps:  true,
			want:  "marker",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := runInNetns(t, tc.flags, tc.maps)
			if got != tc.want {
				t.Errorf("the listener read %q first, want %q", got, tc.want)
			}
		})
	}
}

// runInNetns starts this test binary as the helper in new namespaces and
// returns what it read first: "kernel" or "marker".
func runInNetns(t *testing.T, flags uintptr, maps bool) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	if maps {
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		testenv.Unavailable(t, "cannot start a process in new namespaces (flags %#x): %v", flags, err)
	}
	timer := time.AfterFunc(deadline, func() { cmd.Process.Kill() })
	defer timer.Stop()
	defer cmd.Wait()
	lines := bufio.NewScanner(stdout)
	next := func() string {
		if !lines.Scan() {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper stopped early: %v\nstderr: %s", lines.Err(), stderr.String())
		}
		return lines.Text()
	}
	line := next()
	fields := strings.Fields(line)
	if len(fields) != 3 || fields[0] != "ready" {
		t.Fatalf("helper says %q, want ready <netns> <sent-here>\nstderr: %s", line, stderr.String())
	}
	ns, sentHere := fields[1], fields[2]
	// Proof that the helper did not stay in this test's namespace.
	if own, err := os.Readlink("/proc/self/ns/net"); err != nil || own == ns {
		t.Fatalf("helper's network namespace %s is this test's (%s, %v)", ns, own, err)
	}
	uuid := newUUID(t)
	trigger(t, uuid)
	if _, err := io.WriteString(stdin, uuid+"\n"); err != nil {
		t.Fatal(err)
	}
	got := next()
	// What KernelSendsHere predicts must be what happened.
	if want := map[string]string{"true": "kernel", "false": "marker"}[sentHere]; got != want {
		t.Errorf("KernelSendsHere() = %s in the helper, but it read %q first", sentHere, got)
	}
	return got
}

// netnsHelper runs in the new namespaces: it listens, says ready, waits
// for the UUID of the event the parent triggered, injects a marker into
// its own network namespace and reports which of the two it reads first.
func netnsHelper() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		return 1
	}
	s, err := uevent.Open()
	if err != nil {
		return fail("%v", err)
	}
	defer s.Close()
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fail("%v", err)
	}
	sentHere, err := uevent.KernelSendsHere()
	if err != nil {
		return fail("%v", err)
	}
	fmt.Println("ready", ns, sentHere)
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return fail("no UUID on stdin")
	}
	uuid := in.Text()
	marker := "marker-" + uuid
	if err := inject(marker); err != nil {
		return fail("injecting the marker: %v", err)
	}
	buf := make([]byte, uevent.MaxMessage)
	for {
		n, err := s.Receive(buf)
		if errors.Is(err, uevent.ErrOverflow) || errors.Is(err, uevent.ErrForeign) || errors.Is(err, uevent.ErrTruncated) {
			continue
		}
		if err != nil {
			return fail("%v", err)
		}
		ev, err := uevent.Parse(buf[:n])
		if err != nil {
			continue
		}
		if v, _ := ev.Get("SYNTH_UUID"); v == uuid {
			fmt.Println("kernel")
			return 0
		}
		if v, _ := ev.Get("MARKER"); v == marker {
			fmt.Println("marker")
			return 0
		}
	}
}

// inject sends a uevent into the caller's network namespace (Linux 4.18,
// needs CAP_SYS_ADMIN over it): the kernel appends SEQNUM and broadcasts it
// to that namespace's listeners as if it were its own.
func inject(marker string) error {
	payload := "add@/devices/virtual/igc/marker\x00ACTION=add\x00DEVPATH=/devices/virtual/igc/marker\x00SUBSYSTEM=igc\x00MARKER=" + marker + "\x00"
	msg := make([]byte, unix.NLMSG_HDRLEN+len(payload))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], unix.NLMSG_MIN_TYPE)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST)
	copy(msg[unix.NLMSG_HDRLEN:], payload)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}
