package health_test

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// BenchmarkHandleUevents runs b.N kernel messages through the Monitor's
// parser and state machine on a fake node of 8 GPUs: wedges and rebinds
// (which read sysfs for the binding), hangs, and other subsystems' events
// in equal parts. ns/op is the cost of one event.
func BenchmarkHandleUevents(b *testing.B) {
	n := fakenode.NewT(b, fakenode.WithMode(fakenode.HostDevices))
	n.MustApply(b, func(n *fakenode.Node) error { return fakenode.Many(n, 8) })
	var msgs [][]byte
	for i := range 8 {
		pci := fakenode.ManyPCI(i)
		for _, mk := range []func() ([]byte, error){
			func() ([]byte, error) { return n.WedgedEvent(pci, "rebind,bus-reset") },
			func() ([]byte, error) { return n.FunctionEvent(pci, "bind") },
			func() ([]byte, error) { return n.HangEvent(pci) },
			func() ([]byte, error) {
				return fakenode.Uevent("change", "/devices/virtual/block/loop0", "block", 1, "DISK_MEDIA_CHANGE=1"), nil
			},
		} {
			msg, err := mk()
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, msg)
		}
	}
	items := make([]item, b.N)
	for i := range items {
		items[i] = item{msg: msgs[i%len(msgs)]}
	}
	m, err := health.New(health.WithSysfsRoot(n.Sys), health.WithUeventConn(func() (uevent.Conn, error) { return &script{items: items}, nil }))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := m.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := m.Stats().Received; got != uint64(b.N) {
		b.Fatalf("handled %d of %d", got, b.N)
	}
}

// BenchmarkKernelUeventToChanged measures, on this machine's kernel, the
// time from a uevent being sent (a synthetic bind written to a real PCI
// function's uevent file) to the Monitor's Changed firing: the part of the
// uevent → ListAndWatch latency that this package owns. Needs root.
func BenchmarkKernelUeventToChanged(b *testing.B) {
	m, _, addr, stop := kernelRig(b)
	defer stop()
	changedOf(m)
	for b.Loop() {
		synthBind(b, addr)
		select {
		case <-m.Changed():
		case <-time.After(deadline):
			b.Fatal("no Changed")
		}
	}
}

func changedOf(m *health.Monitor) {
	select {
	case <-m.Changed():
	default:
	}
}

// BenchmarkIdleListener lets a Monitor listen on the real uevent socket
// while the benchmark sleeps 100 ms per iteration, and reports the
// process's CPU time per second of wall time (cpu-s/s): what listening
// costs while nothing happens. Other work on the machine that makes
// uevents (containers starting, devices changing) shows up in it.
func BenchmarkIdleListener(b *testing.B) {
	m, err := health.New(health.WithSysfsRoot(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	for m.Stats().Listener == health.ListenerIdle {
		time.Sleep(time.Millisecond)
	}
	if st := m.Stats(); st.Listener != health.ListenerListening {
		testenv.Unavailable(b, "no uevent socket here: %+v", st)
	}
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start, wall := cpu(), time.Now()
	for b.Loop() {
		time.Sleep(100 * time.Millisecond)
	}
	used, elapsed := cpu()-start, time.Since(wall)
	cancel()
	<-done
	b.ReportMetric(used.Seconds()/elapsed.Seconds(), "cpu-s/s")
	b.ReportMetric(float64(m.Stats().Received), "uevents")
}

// BenchmarkCheck is one resync of 64 GPUs that show AER counters and a
// config header, and one pending devcoredump: the sysfs reads Check adds
// to every rescan.
func BenchmarkCheck(b *testing.B) {
	n := fakenode.NewT(b, fakenode.WithMode(fakenode.HostDevices))
	n.MustApply(b, func(n *fakenode.Node) error { return fakenode.Many(n, 64) })
	for i := range 64 {
		pci := fakenode.ManyPCI(i)
		if err := n.SetAER(pci, fakenode.AER{Correctable: uint64(i)}); err != nil {
			b.Fatal(err)
		}
		if err := n.WriteConfig(pci); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := n.AddCoredump(fakenode.ManyPCI(3)); err != nil {
		b.Fatal(err)
	}
	devs := scan(b, n)
	m, err := health.New(health.WithSysfsRoot(n.Sys))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range m.Check(devs) {
			if !s.Healthy {
				b.Fatalf("%+v", s)
			}
		}
	}
}
