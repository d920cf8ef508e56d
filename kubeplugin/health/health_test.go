package health_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// The DiscreteXe fixture: an integrated i915 GPU and a discrete xe one.
const (
	igpu = "0000:00:02.0"
	xe   = "0000:03:00.0"
)

var discreteXe = []func(*fakenode.Node) error{fakenode.DiscreteXe}

func TestNewNamesTheSettingThatIsWrong(t *testing.T) {
	cases := []struct {
		name string
		opt  health.Option
		says string
	}{
		{"an empty sysfs root", health.WithSysfsRoot(""), "sysfs root"},
		{"a nil logger", health.WithLogger(nil), "logger"},
		{"an unknown source", health.WithSources(health.Source(0x80)), "sources"},
		{"a zero receive buffer", health.WithReceiveBuffer(0), "receive buffer"},
		{"a nil uevent source", health.WithUeventConn(nil), "uevent source"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := health.New(tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("New = %v, want an error naming %q", err, tc.says)
			}
		})
	}
	if _, err := health.New(); err != nil {
		t.Errorf("New() with defaults: %v", err)
	}
}

func TestParseSourcesReadsWhatStringWrites(t *testing.T) {
	for _, s := range []health.Source{0, health.SourceUevent, health.SourceWedge | health.SourceAER, health.AllSources} {
		got, err := health.ParseSources(s.String())
		if err != nil || got != s {
			t.Errorf("ParseSources(%q) = %v, %v; want %v", s.String(), got, err, s)
		}
	}
	if got, err := health.ParseSources(" all "); err != nil || got != health.AllSources {
		t.Errorf("ParseSources(all) = %v, %v", got, err)
	}
	if _, err := health.ParseSources("uevent,smart"); err == nil || !strings.Contains(err.Error(), `"smart"`) {
		t.Errorf("ParseSources(uevent,smart) = %v, want an error naming smart", err)
	}
}

func TestAWedgedGPUStaysUnhealthyUntilTheKernelSaysItIsBack(t *testing.T) {
	recoveries := []struct {
		name    string
		recover func(t *testing.T, r *rig)
	}{
		{"the driver's bind uevent", func(t *testing.T, r *rig) {
			r.feed.send(t, r.must(r.n.FunctionEvent(xe, "unbind")), nil)
			r.feed.send(t, r.must(r.n.FunctionEvent(xe, "bind")), nil)
		}},
		{"the card's add uevent", func(t *testing.T, r *rig) {
			r.feed.send(t, r.must(r.n.CardEvent(xe, "add")), nil)
		}},
		{"a card directory made anew, its uevents lost", func(t *testing.T, r *rig) {
			if err := r.n.RebindGPU(xe); err != nil {
				t.Fatal(err)
			}
			r.feed.send(t, nil, uevent.ErrOverflow)
		}},
		{"the function enumerated anew", func(t *testing.T, r *rig) {
			if err := r.n.RemoveGPU(xe); err != nil {
				t.Fatal(err)
			}
			wantUnhealthy(t, r.status(t, xe), health.ReasonGone)
			r.n.MustAddGPU(t, fakenode.GPU{Card: 1, PCI: xe, Parent: "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0", Device: "0xe20b", Driver: "xe", NUMA: "0"})
		}},
	}
	for _, tc := range recoveries {
		t.Run("back after "+tc.name, func(t *testing.T) {
			r := newRig(t, discreteXe)
			wantHealthy(t, r.status(t, xe))
			changed(r.m)

			r.feed.send(t, r.must(r.n.WedgedEvent(xe, "rebind,bus-reset", "PID=4711", "TASK=vkcube")), nil)
			if !changed(r.m) {
				t.Error("a wedge did not signal Changed")
			}
			s := r.status(t, xe)
			wantUnhealthy(t, s, health.ReasonWedged)
			if !slices.Equal(s.WedgedMethods, []string{"rebind", "bus-reset"}) {
				t.Errorf("WedgedMethods = %q", s.WedgedMethods)
			}
			for _, word := range []string{"card1", "rebind", "bus-reset", "vkcube", "4711"} {
				if !strings.Contains(s.Message, word) {
					t.Errorf("message %q does not mention %s", s.Message, word)
				}
			}
			wantHealthy(t, r.status(t, igpu))

			// Nothing but the kernel brings it back: not resyncs, not
			// other events on the card, not other GPUs' rebinds.
			r.feed.send(t, r.must(r.n.CardEvent(xe, "change")), nil)
			r.feed.send(t, r.must(r.n.FunctionEvent(igpu, "bind")), nil)
			r.feed.send(t, r.must(r.n.WedgedEvent(xe, "rebind")), nil)
			for range 3 {
				wantUnhealthy(t, r.status(t, xe), health.ReasonWedged)
			}

			tc.recover(t, r)
			wantHealthy(t, r.status(t, xe))
			wantHealthy(t, r.status(t, igpu))
		})
	}
}

func TestAnUnknownWedgedMethodIsStillAWedge(t *testing.T) {
	r := newRig(t, discreteXe)
	r.feed.send(t, r.must(r.n.WedgedEvent(xe, "cold-reset,reseat-the-card")), nil)
	s := r.status(t, xe)
	wantUnhealthy(t, s, health.ReasonWedged)
	if !slices.Equal(s.WedgedMethods, []string{"cold-reset", "reseat-the-card"}) {
		t.Errorf("WedgedMethods = %q, want them verbatim", s.WedgedMethods)
	}
	if !strings.Contains(s.Message, "reseat-the-card") {
		t.Errorf("message %q does not name the method", s.Message)
	}

	r.feed.send(t, r.must(r.n.WedgedEvent(igpu, "")), nil)
	wantUnhealthy(t, r.status(t, igpu), health.ReasonWedged)
}

func TestWedgedNoneIsARecoveryByTheDriver(t *testing.T) {
	r := newRig(t, discreteXe)
	r.feed.send(t, r.must(r.n.WedgedEvent(xe, "none")), nil)
	s := r.status(t, xe)
	wantHealthy(t, s)
	if s.Counters.DriverRecoveries != 1 {
		t.Errorf("DriverRecoveries = %d, want 1", s.Counters.DriverRecoveries)
	}
}

func TestSurvivabilityModeMeansAFirmwareFlash(t *testing.T) {
	r := newRig(t, discreteXe)
	// What xe does: the attribute first, then WEDGED=vendor-specific.
	if err := r.n.SetSurvivabilityMode(xe, true); err != nil {
		t.Fatal(err)
	}
	// Without any event (a plugin started after the fact) it is seen too.
	wantUnhealthy(t, r.status(t, xe), health.ReasonSurvivability)

	r.feed.send(t, r.must(r.n.WedgedEvent(xe, "vendor-specific")), nil)
	s := r.status(t, xe)
	wantUnhealthy(t, s, health.ReasonSurvivability)
	if !strings.Contains(s.Message, "firmware") || !strings.Contains(s.Message, "vendor-specific") {
		t.Errorf("message %q should say firmware and name the wedge", s.Message)
	}

	// The flash is done and the driver rebound: the attribute went with
	// the old driver binding.
	if err := r.n.RebindGPU(xe); err != nil {
		t.Fatal(err)
	}
	r.feed.send(t, r.must(r.n.FunctionEvent(xe, "bind")), nil)
	wantHealthy(t, r.status(t, xe))
}

func TestHangsAreCountedButDoNotTakeAGPUOut(t *testing.T) {
	r := newRig(t, discreteXe)
	// A dump left from before the Monitor started is a hang too.
	old, err := r.n.AddCoredump(xe)
	if err != nil {
		t.Fatal(err)
	}
	s := r.status(t, xe)
	wantHealthy(t, s)
	if s.Counters.Hangs != 1 {
		t.Errorf("Hangs = %d after a dump found at start, want 1", s.Counters.Hangs)
	}
	// Its event arriving late, and later Checks, count it once.
	r.feed.send(t, r.n.CoredumpEvent(old, "add"), nil)
	if got := r.status(t, xe).Counters.Hangs; got != 1 {
		t.Errorf("Hangs = %d after the same dump's event, want 1", got)
	}
	if err := r.n.RemoveCoredump(old); err != nil {
		t.Fatal(err)
	}
	r.feed.send(t, r.n.CoredumpEvent(old, "remove"), nil)

	dump, err := r.n.AddCoredump(xe)
	if err != nil {
		t.Fatal(err)
	}
	r.feed.send(t, r.n.CoredumpEvent(dump, "add"), nil)
	if !changed(r.m) {
		t.Error("a devcoredump did not signal Changed")
	}
	s = r.status(t, xe)
	wantHealthy(t, s)
	if s.Counters.Hangs != 2 {
		t.Errorf("Hangs = %d, want 2", s.Counters.Hangs)
	}

	r.feed.send(t, r.must(r.n.HangEvent(igpu)), nil)
	s = r.status(t, igpu)
	wantHealthy(t, s)
	if s.Counters.Hangs != 1 {
		t.Errorf("i915 Hangs = %d after ERROR=1, want 1", s.Counters.Hangs)
	}
	// A dump whose device left: nothing to count it for.
	r.feed.send(t, r.n.CoredumpEvent("devcd99", "add"), nil)
	if got := r.m.Stats().Dropped; got != 1 {
		t.Errorf("Dropped = %d after a dump that is not in sysfs, want 1", got)
	}
}

func TestAHangThresholdTakesAGPUOutUntilARebind(t *testing.T) {
	r := newRig(t, discreteXe, health.WithThresholds(health.Thresholds{Hangs: 2}))
	r.feed.send(t, r.must(r.n.HangEvent(igpu)), nil)
	wantHealthy(t, r.status(t, igpu))
	r.feed.send(t, r.must(r.n.HangEvent(igpu)), nil)
	wantUnhealthy(t, r.status(t, igpu), health.ReasonHangs)
	r.feed.send(t, r.must(r.n.FunctionEvent(igpu, "bind")), nil)
	s := r.status(t, igpu)
	wantHealthy(t, s)
	if s.Counters.Hangs != 2 {
		t.Errorf("Hangs = %d after the rebind, want 2 (the count goes on; the threshold restarts)", s.Counters.Hangs)
	}
}

func TestPCIeErrors(t *testing.T) {
	setAER := func(t *testing.T, r *rig, a fakenode.AER) {
		t.Helper()
		if err := r.n.SetAER(xe, a); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("correctable errors never count", func(t *testing.T) {
		r := newRig(t, discreteXe)
		setAER(t, r, fakenode.AER{})
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Correctable: 1000})
		s := r.status(t, xe)
		wantHealthy(t, s)
		if !s.Counters.HasAER || s.Counters.AER.Correctable != 1000 {
			t.Errorf("Counters = %+v, want 1000 correctable", s.Counters)
		}
	})
	t.Run("one fatal error takes the GPU out until the driver is bound again", func(t *testing.T) {
		r := newRig(t, discreteXe)
		setAER(t, r, fakenode.AER{Fatal: 3})
		// Errors before the Monitor first saw this binding are its past.
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Fatal: 4})
		s := r.status(t, xe)
		wantUnhealthy(t, s, health.ReasonAERFatal)
		if !strings.Contains(s.Message, "1 fatal PCIe error") {
			t.Errorf("message %q", s.Message)
		}
		wantUnhealthy(t, r.status(t, xe), health.ReasonAERFatal)
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "bind")), nil)
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Fatal: 5})
		wantUnhealthy(t, r.status(t, xe), health.ReasonAERFatal)
	})
	t.Run("non-fatal errors count only with a threshold", func(t *testing.T) {
		r := newRig(t, discreteXe)
		setAER(t, r, fakenode.AER{})
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Nonfatal: 50})
		wantHealthy(t, r.status(t, xe))

		r = newRig(t, discreteXe, health.WithThresholds(health.Thresholds{NonfatalAER: 3}))
		setAER(t, r, fakenode.AER{Nonfatal: 1})
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Nonfatal: 3})
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Nonfatal: 4})
		wantUnhealthy(t, r.status(t, xe), health.ReasonAERNonfatal)
	})
	t.Run("a failed error recovery takes the GPU out until a successful one or a rebind", func(t *testing.T) {
		r := newRig(t, discreteXe)
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "change", "ERROR_EVENT=BEGIN_RECOVERY", "DEVICE_ONLINE=0")), nil)
		wantHealthy(t, r.status(t, xe))
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "change", "ERROR_EVENT=FAILED_RECOVERY", "DEVICE_ONLINE=0")), nil)
		wantUnhealthy(t, r.status(t, xe), health.ReasonAERRecoveryFailed)
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "change", "ERROR_EVENT=SUCCESSFUL_RECOVERY", "DEVICE_ONLINE=1")), nil)
		wantHealthy(t, r.status(t, xe))
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "change", "ERROR_EVENT=FAILED_RECOVERY", "DEVICE_ONLINE=0")), nil)
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "bind")), nil)
		wantHealthy(t, r.status(t, xe))
	})
	t.Run("a failed recovery reported on the bridge above takes out the GPUs below it", func(t *testing.T) {
		r := newRig(t, discreteXe)
		wantHealthy(t, r.status(t, xe))
		// i915 and older xe have no PCI error handlers: the kernel gives up
		// and says so on the port it reset, not on the GPU.
		bridge := "/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0"
		r.feed.send(t, fakenode.Uevent("change", bridge, "pci", 1, "ERROR_EVENT=FAILED_RECOVERY", "DEVICE_ONLINE=0"), nil)
		wantUnhealthy(t, r.status(t, xe), health.ReasonAERRecoveryFailed)
		wantHealthy(t, r.status(t, igpu))
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "bind")), nil)
		wantHealthy(t, r.status(t, xe))
	})
	t.Run("a successful recovery after a fatal error brings the GPU back", func(t *testing.T) {
		// A driver with PCI error handlers (recent xe) recovers the device
		// itself, and the kernel says so.
		r := newRig(t, discreteXe)
		setAER(t, r, fakenode.AER{})
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Fatal: 1})
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "change", "ERROR_EVENT=BEGIN_RECOVERY", "DEVICE_ONLINE=0")), nil)
		wantUnhealthy(t, r.status(t, xe), health.ReasonAERFatal)
		r.feed.send(t, r.must(r.n.FunctionEvent(xe, "change", "ERROR_EVENT=SUCCESSFUL_RECOVERY", "DEVICE_ONLINE=1")), nil)
		wantHealthy(t, r.status(t, xe))
		setAER(t, r, fakenode.AER{Fatal: 2})
		wantUnhealthy(t, r.status(t, xe), health.ReasonAERFatal)
	})
	t.Run("a malformed counter file is ignored, not fatal", func(t *testing.T) {
		r := newRig(t, discreteXe)
		setAER(t, r, fakenode.AER{})
		r.status(t, xe)
		if err := writeFile(r.n, xe, "aer_dev_fatal", "garbage\n"); err != nil {
			t.Fatal(err)
		}
		s := r.status(t, xe)
		wantHealthy(t, s)
		if s.Counters.HasAER {
			t.Error("HasAER with a malformed aer_dev_fatal")
		}
	})
}

func TestAGPUThatLeftOrDoesNotAnswer(t *testing.T) {
	r := newRig(t, discreteXe)
	if err := r.n.WriteConfig(xe); err != nil {
		t.Fatal(err)
	}
	wantHealthy(t, r.status(t, xe))

	if err := r.n.BreakConfig(xe); err != nil {
		t.Fatal(err)
	}
	wantUnhealthy(t, r.status(t, xe), health.ReasonNoResponse)

	// A runtime-suspended function is not read (that would wake it).
	if err := r.n.SetRuntimeStatus(xe, "suspended"); err != nil {
		t.Fatal(err)
	}
	wantHealthy(t, r.status(t, xe))
	if err := r.n.SetRuntimeStatus(xe, "active"); err != nil {
		t.Fatal(err)
	}
	wantUnhealthy(t, r.status(t, xe), health.ReasonNoResponse)

	// The device answers again: the kernel's reads say so.
	if err := r.n.WriteConfig(xe); err != nil {
		t.Fatal(err)
	}
	wantHealthy(t, r.status(t, xe))

	dev := r.devices(t)[1]
	if err := r.n.RemoveGPU(xe); err != nil {
		t.Fatal(err)
	}
	wantUnhealthy(t, r.m.Status(&dev), health.ReasonGone)
}

func TestEachSourceCanBeTurnedOff(t *testing.T) {
	cases := []struct {
		name string
		off  health.Source
		do   func(t *testing.T, r *rig)
	}{
		{"wedge: events and survivability mode", health.SourceWedge, func(t *testing.T, r *rig) {
			r.feed.send(t, r.must(r.n.WedgedEvent(xe, "rebind")), nil)
			if err := r.n.SetSurvivabilityMode(xe, true); err != nil {
				t.Fatal(err)
			}
		}},
		{"aer: counters and recovery events", health.SourceAER, func(t *testing.T, r *rig) {
			if err := r.n.SetAER(xe, fakenode.AER{Fatal: 1}); err != nil {
				t.Fatal(err)
			}
			r.feed.send(t, r.must(r.n.FunctionEvent(xe, "change", "ERROR_EVENT=FAILED_RECOVERY")), nil)
		}},
		{"gone: config space", health.SourceGone, func(t *testing.T, r *rig) {
			if err := r.n.BreakConfig(xe); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Turned on, the same steps make the GPU Unhealthy.
			for _, on := range []bool{true, false} {
				sources := health.AllSources
				if !on {
					sources &^= tc.off
				}
				r := newRig(t, discreteXe, health.WithSources(sources),
					health.WithThresholds(health.Thresholds{FatalAER: 1, Hangs: 1}))
				if err := r.n.SetAER(xe, fakenode.AER{}); err != nil {
					t.Fatal(err)
				}
				wantHealthy(t, r.status(t, xe))
				tc.do(t, r)
				if got := r.status(t, xe).Healthy; got == on {
					t.Errorf("source %v on=%v: healthy=%v", tc.off, on, got)
				}
			}
		})
	}
	t.Run("hangs", func(t *testing.T) {
		r := newRig(t, discreteXe, health.WithSources(health.AllSources&^health.SourceHangs))
		if _, err := r.n.AddCoredump(xe); err != nil {
			t.Fatal(err)
		}
		r.feed.send(t, r.must(r.n.HangEvent(igpu)), nil)
		if got := r.status(t, xe).Counters.Hangs + r.status(t, igpu).Counters.Hangs; got != 0 {
			t.Errorf("hangs counted with the source off: %d", got)
		}
	})
	t.Run("uevent: Run returns at once", func(t *testing.T) {
		m, err := health.New(health.WithSources(health.AllSources&^health.SourceUevent),
			health.WithUeventConn(func() (uevent.Conn, error) { t.Error("opened the uevent source"); return nil, errNoNetlink }))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := m.Stats().Listener; got != health.ListenerOff {
			t.Errorf("Listener = %s, want off", got)
		}
	})
}

func TestWithoutNetlinkTheSysfsSignalsStillWork(t *testing.T) {
	n := fakenode.NewT(t, fakenode.WithMode(fakenode.HostDevices))
	n.MustApply(t, fakenode.DiscreteXe)
	var logs strings.Builder
	m, err := health.New(health.WithSysfsRoot(n.Sys),
		health.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		health.WithUeventConn(func() (uevent.Conn, error) { return nil, errNoNetlink }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil: a missing socket must not stop the plugin", err)
		}
	case <-time.After(deadline):
		t.Fatal("Run blocked although the uevent source could not be opened")
	}
	st := m.Stats()
	if st.Listener != health.ListenerUnavailable || !errors.Is(st.ListenerError, errNoNetlink) {
		t.Errorf("Stats = %+v, want the listener unavailable with the open error", st)
	}
	if !strings.Contains(logs.String(), "operation not permitted") {
		t.Errorf("the degradation was not logged: %q", logs.String())
	}

	if err := n.SetSurvivabilityMode(xe, true); err != nil {
		t.Fatal(err)
	}
	if err := n.SetAER(igpu, fakenode.AER{}); err != nil {
		t.Fatal(err)
	}
	devs := scan(t, n)
	m.Check(devs)
	if err := n.SetAER(igpu, fakenode.AER{Fatal: 1}); err != nil {
		t.Fatal(err)
	}
	got := m.Check(devs)
	wantUnhealthy(t, got[0], health.ReasonAERFatal)
	wantUnhealthy(t, got[1], health.ReasonSurvivability)
}

func TestRunStopsWithItsContextAndRunsOnce(t *testing.T) {
	f := newFeed()
	m, err := health.New(health.WithUeventConn(func() (uevent.Conn, error) { return f, nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	f.send(t, []byte("garbage"), nil)
	if err := m.Run(ctx); err == nil {
		t.Error("a second Run succeeded")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not stop")
	}
	if st := m.Stats(); st.Listener != health.ListenerStopped || st.ListenerError != nil {
		t.Errorf("Stats = %+v, want stopped without error", st)
	}
}

func TestWhatIsNotAKernelEventIsCountedAndDropped(t *testing.T) {
	r := newRig(t, discreteXe)
	before := r.status(t, xe)
	cardPath, err := r.n.CardDevPath(xe)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range [][]byte{
		nil,
		[]byte("change" + cardPath + "\x00WEDGED=rebind"),               // no '@'
		[]byte("change@" + cardPath + "\x00WEDGED"),                     // no '='
		[]byte("change@" + cardPath + "/../card0\x00WEDGED=rebind\x00"), // climbs
		[]byte(strings.Repeat("x", uevent.MaxMessage+1)),
	} {
		r.feed.send(t, msg, nil)
	}
	r.feed.send(t, []byte("libudev\x00\xfe\xed\xca\xfe"), nil)
	r.feed.send(t, nil, uevent.ErrForeign)
	r.feed.send(t, nil, uevent.ErrTruncated)
	// Well-formed but about nothing the Monitor knows.
	r.feed.send(t, fakenode.Uevent("change", "/devices/virtual/net/lo", "net", 1), nil)
	r.feed.send(t, fakenode.Uevent("change", "/devices/platform/simple-framebuffer.0/drm/card0", "drm", 2, "WEDGED=rebind"), nil)
	r.feed.send(t, fakenode.Uevent("change", "/devices/pci0000:00/0000:00:09.0/drm/card7", "drm", 3, "WEDGED=rebind"), nil)

	st := r.m.Stats()
	if st.Received != 11 || st.Malformed != 6 || st.Foreign != 2 {
		t.Errorf("Stats = %+v, want 11 received, 6 malformed, 2 foreign", st)
	}
	if st.Dropped != 1 {
		t.Errorf("Dropped = %d, want 1 (the wedge of a card that is not in sysfs)", st.Dropped)
	}
	if after := r.status(t, xe); after.Healthy != before.Healthy || after.Counters != before.Counters {
		t.Errorf("status changed from %+v to %+v", before, after)
	}
	if changed(r.m) {
		t.Error("dropped messages signalled Changed")
	}
}

func TestLostEventsMakeTheConsumerCheckAgain(t *testing.T) {
	r := newRig(t, discreteXe)
	r.feed.send(t, nil, uevent.ErrOverflow)
	r.feed.send(t, nil, uevent.ErrOverflow)
	if !changed(r.m) {
		t.Error("an overflow did not signal Changed")
	}
	if changed(r.m) {
		t.Error("two signals did not coalesce into one")
	}
	if got := r.m.Stats().Overflows; got != 2 {
		t.Errorf("Overflows = %d, want 2", got)
	}
}

func TestStatusOfOneGPUIsCheckOfOne(t *testing.T) {
	r := newRig(t, discreteXe)
	r.feed.send(t, r.must(r.n.WedgedEvent(xe, "rebind")), nil)
	devs := r.devices(t)
	one := r.m.Status(&devs[1])
	if one.PCIAddress != xe || one.Card != "card1" {
		t.Errorf("Status = %+v", one)
	}
	wantUnhealthy(t, one, health.ReasonWedged)
	wantHealthy(t, r.m.Status(&devs[0]))
	// A device without a PCI address has nothing to be tracked by.
	wantHealthy(t, r.m.Status(&discovery.Device{Card: "card9"}))
}
