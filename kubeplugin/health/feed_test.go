package health_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// deadline bounds every wait: a hang fails the test; no timing is
// asserted.
const deadline = 20 * time.Second

// item is one thing a feed hands the Monitor: a message or an error.
type item struct {
	msg []byte
	err error
}

// feed is a uevent.Conn driven by the test. send returns once the Monitor
// has handled the item: the Monitor handles items one at a time and asks
// for the next only when done, so its next Receive is the proof.
type feed struct {
	items  chan item
	acks   chan struct{}
	closed chan struct{}
	once   sync.Once
	// handing is true while an item is out (only Run's goroutine reads it).
	handing bool
}

func newFeed() *feed {
	return &feed{items: make(chan item), acks: make(chan struct{}), closed: make(chan struct{})}
}

func (f *feed) Receive(buf []byte) (int, error) {
	if f.handing {
		f.handing = false
		select {
		case f.acks <- struct{}{}:
		case <-f.closed:
			return 0, io.EOF
		}
	}
	select {
	case it := <-f.items:
		f.handing = true
		return copy(buf, it.msg), it.err
	case <-f.closed:
		return 0, io.EOF
	}
}

func (f *feed) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *feed) push(t *testing.T, it item) {
	t.Helper()
	select {
	case f.items <- it:
	case <-time.After(deadline):
		t.Fatal("the Monitor did not take the next uevent")
	}
	select {
	case <-f.acks:
	case <-time.After(deadline):
		t.Fatal("the Monitor did not finish handling a uevent")
	}
}

// send hands the Monitor a message and waits until it has handled it.
func (f *feed) send(t *testing.T, msg []byte, err error) {
	t.Helper()
	if err != nil && msg != nil {
		t.Fatal("send a message or an error, not both")
	}
	f.push(t, item{msg: msg, err: err})
}

// rig is a Monitor over a fake node, listening to a feed.
type rig struct {
	t    *testing.T
	n    *fakenode.Node
	m    *health.Monitor
	feed *feed
	stop func()
}

// newRig starts a Monitor on a fake node laid out by fixtures; opts come
// after the rig's own, so they win.
func newRig(t *testing.T, fixtures []func(*fakenode.Node) error, opts ...health.Option) *rig {
	t.Helper()
	n := fakenode.NewT(t, fakenode.WithMode(fakenode.HostDevices))
	n.MustApply(t, fixtures...)
	f := newFeed()
	all := append([]health.Option{
		health.WithSysfsRoot(n.Sys),
		health.WithUeventConn(func() (uevent.Conn, error) { return f, nil }),
	}, opts...)
	m, err := health.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	r := &rig{t: t, n: n, m: m, feed: f}
	var once sync.Once
	r.stop = func() { once.Do(func() { stopRun(t, cancel, done) }) }
	t.Cleanup(r.stop)
	return r
}

// stopRun cancels a Run and waits for it.
func stopRun(t *testing.T, cancel func(), done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(deadline):
		t.Error("Run did not return after its context was cancelled")
	}
}

// devices scans the fake node as the plugin does.
func (r *rig) devices(t *testing.T) []discovery.Device {
	t.Helper()
	return scan(t, r.n)
}

// status checks every GPU and returns the one at pci; a GPU that left
// sysfs is checked under its last known card name.
func (r *rig) status(t *testing.T, pci string) health.Status {
	t.Helper()
	devs := r.devices(t)
	for _, s := range r.m.Check(devs) {
		if s.PCIAddress == pci {
			return s
		}
	}
	return r.m.Status(&discovery.Device{PCIAddress: pci})
}

// must takes what a fakenode event builder returns.
func (r *rig) must(msg []byte, err error) []byte {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
	return msg
}

func wantHealthy(t *testing.T, s health.Status) {
	t.Helper()
	if !s.Healthy || s.Reason != "" || s.Message != "" {
		t.Errorf("%s: got healthy=%v reason %q message %q, want healthy", s.PCIAddress, s.Healthy, s.Reason, s.Message)
	}
}

func wantUnhealthy(t *testing.T, s health.Status, reason health.Reason) {
	t.Helper()
	if s.Healthy || s.Reason != reason || s.Message == "" {
		t.Errorf("%s: got healthy=%v reason %q message %q, want unhealthy with reason %q", s.PCIAddress, s.Healthy, s.Reason, s.Message, reason)
	}
}

// changed reports whether Changed has a value waiting, and takes it.
func changed(m *health.Monitor) bool {
	select {
	case <-m.Changed():
		return true
	default:
		return false
	}
}

var errNoNetlink = errors.New("binding NETLINK_KOBJECT_UEVENT socket to group 1: operation not permitted")

// scan lists the fake node's GPUs as discovery sees them.
func scan(t testing.TB, n *fakenode.Node) []discovery.Device {
	t.Helper()
	res, err := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev)).Scan()
	if err != nil {
		t.Fatal(err)
	}
	return res.Devices
}

// writeFile overwrites one attribute of a GPU's PCI function.
func writeFile(n *fakenode.Node, pci, name, content string) error {
	return os.WriteFile(filepath.Join(health.FunctionDir(n.Sys, pci), name), []byte(content), 0o644)
}
