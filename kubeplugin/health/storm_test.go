package health_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// script is a uevent.Conn that plays a recorded sequence, then ends.
type script struct {
	items []item
	next  int
}

func (s *script) Receive(buf []byte) (int, error) {
	if s.next == len(s.items) {
		return 0, io.EOF
	}
	it := s.items[s.next]
	s.next++
	return copy(buf, it.msg), it.err
}

func (s *script) Close() error { return nil }

// model is what the storm should leave behind, per GPU.
type model struct {
	wedged     bool
	methods    string
	hangs      uint64
	recoveries uint64
}

// TestAUeventStormLeavesTheRightStateInBoundedMemory plays 100k events —
// wedges with known and unknown methods, rebinds, hangs, driver
// recoveries, other subsystems' events, junk, foreign messages, overflows,
// events about devices that are not there — at 32 GPUs and checks the
// Monitor ends exactly where a model of the kernel's semantics does, with
// state for no more than the GPUs that exist.
func TestAUeventStormLeavesTheRightStateInBoundedMemory(t *testing.T) {
	const (
		gpus   = 32
		events = 100_000
	)
	n := fakenode.NewT(t, fakenode.WithMode(fakenode.HostDevices))
	n.MustApply(t, func(n *fakenode.Node) error { return fakenode.Many(n, gpus) })

	rng := rand.New(rand.NewPCG(11, 100_000))
	want := make([]model, gpus)
	var wantMalformed, wantForeign, wantOverflows, wantDropped uint64
	items := make([]item, 0, events)
	methods := []string{"rebind", "bus-reset", "rebind,bus-reset", "vendor-specific", "unknown", "cold-reset", "something-new"}
	for len(items) < events {
		i := rng.IntN(gpus)
		pci := fakenode.ManyPCI(i)
		var (
			msg []byte
			err error
		)
		switch p := rng.IntN(100); {
		case p < 30:
			m := methods[rng.IntN(len(methods))]
			msg, err = n.WedgedEvent(pci, m)
			want[i].wedged, want[i].methods = true, m
		case p < 35:
			msg, err = n.WedgedEvent(pci, "none")
			want[i].recoveries++
		case p < 50:
			msg, err = n.FunctionEvent(pci, "bind")
			want[i].wedged = false
		case p < 55:
			msg, err = n.CardEvent(pci, "add")
			want[i].wedged = false
		case p < 65:
			msg, err = n.HangEvent(pci)
			want[i].hangs++
		case p < 75:
			msg = fakenode.Uevent("change", fmt.Sprintf("/devices/virtual/block/loop%d", i), "block", uint64(len(items)))
		case p < 82:
			junk := make([]byte, rng.IntN(300))
			for k := range junk {
				junk[k] = byte(rng.UintN(256))
			}
			junk = append(junk, 0)
			msg = append([]byte("junk "), junk...)
			wantMalformed++
		case p < 87:
			items = append(items, item{err: uevent.ErrForeign})
			wantForeign++
			continue
		case p < 90:
			items = append(items, item{err: uevent.ErrOverflow})
			wantOverflows++
			continue
		case p < 95:
			// A card the kernel never had.
			msg = fakenode.Uevent("change", fmt.Sprintf("/devices/pci0000:00/0000:%02x:1f.%d/drm/card%d", 0x40+i, i%8, 1000+i), "drm", 1, "WEDGED=rebind")
			wantDropped++
		default:
			msg = n.CoredumpEvent(fmt.Sprintf("devcd%d", 1_000_000+len(items)), "add")
			wantDropped++
		}
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{msg: msg})
	}

	m, err := health.New(health.WithSysfsRoot(n.Sys), health.WithUeventConn(func() (uevent.Conn, error) { return &script{items: items}, nil }))
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)

	st := m.Stats()
	// An overflow is a loss reported, not a message.
	if st.Received != events-wantOverflows || st.Malformed != wantMalformed || st.Foreign != wantForeign ||
		st.Overflows != wantOverflows || st.Dropped != wantDropped {
		t.Errorf("Stats = %+v\nwant %d received, %d malformed, %d foreign, %d overflows, %d dropped",
			st, events-wantOverflows, wantMalformed, wantForeign, wantOverflows, wantDropped)
	}
	if g, d := m.Tracked(); g > gpus || d != 0 {
		t.Errorf("state kept for %d GPUs and %d dumps, want at most %d GPUs and no dumps", g, d, gpus)
	}
	// The state of 32 GPUs is a few KiB; the allowance only absorbs the
	// runtime's own noise.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("the heap grew by %d bytes over the storm", grew)
	}

	devs := scan(t, n)
	for i, s := range m.Check(devs) {
		w := want[i]
		if s.Healthy == w.wedged {
			t.Errorf("GPU %d: healthy=%v, want wedged=%v (last methods %q)", i, s.Healthy, w.wedged, w.methods)
		}
		if w.wedged && (s.Reason != health.ReasonWedged || fmt.Sprint(s.WedgedMethods) != fmt.Sprint(splitForTest(w.methods))) {
			t.Errorf("GPU %d: reason %q methods %q, want wedged with %q", i, s.Reason, s.WedgedMethods, w.methods)
		}
		if s.Counters.Hangs != w.hangs || s.Counters.DriverRecoveries != w.recoveries {
			t.Errorf("GPU %d: %d hangs and %d recoveries, want %d and %d", i, s.Counters.Hangs, s.Counters.DriverRecoveries, w.hangs, w.recoveries)
		}
	}
}

func splitForTest(methods string) []string {
	var out []string
	start := 0
	for k := 0; k <= len(methods); k++ {
		if k == len(methods) || methods[k] == ',' {
			out = append(out, methods[start:k])
			start = k + 1
		}
	}
	return out
}
