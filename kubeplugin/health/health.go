// Package health tells whether each Intel GPU of the node is usable, from
// what the kernel says about it, without a sidecar or a vendor daemon:
//
//   - Wedged: since Linux 6.14 the DRM core sends a change uevent on the
//     card with WEDGED=<methods> when the driver declares the device dead
//     (i915 and xe do). The event is the only trace: no sysfs file says
//     "wedged", so only a listener learns of it.
//   - Survivability: xe adds survivability_mode to the PCI function when
//     the firmware needs flashing (the wedge then says vendor-specific).
//   - Hangs: a devcoredump whose failing_device is the GPU, and i915's
//     ERROR=1 change event. Counted, not by themselves a reason.
//   - PCIe errors: the aer_dev_{correctable,nonfatal,fatal} counters of the
//     function and the kernel's error-recovery events (ERROR_EVENT=).
//   - Gone: the function vanished from sysfs or its config space reads all
//     ones.
//
// A Monitor listens for kernel uevents (Run) and keeps what they said per
// PCI address; Check merges that with what sysfs says at the moment of the
// call. A GPU turns Healthy again only when the kernel says so: its driver
// was bound again (a bind or add uevent, or, if that event was lost, a
// card directory that sysfs created anew), or the device answers again.
// Never by a timer.
//
// Thresholds (see Thresholds and DefaultThresholds): a correctable PCIe
// error never counts — the link corrected it. A fatal one does: the link
// was reset under the driver, and unless the kernel then reports a
// successful recovery (ERROR_EVENT=SUCCESSFUL_RECOVERY, from drivers with
// PCI error handlers, which i915 lacks), the GPU is out until a rebind;
// the kernel's FAILED_RECOVERY, on the GPU or on a bridge above it, takes
// it out the same way even when the GPU's own counters did not move (a
// surprise link-down is counted by the port). A non-fatal one lost a single
// transaction on a working link; the driver, which sees the consequences,
// wedges the GPU when it cannot go on, so non-fatal errors are counted and
// reported but do not take a GPU out unless configured to. A hang is
// reset by the driver and the GPU goes on; a GPU that cannot be reset is
// wedged, which is the signal that counts.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

// Monitor tracks the health of the node's GPUs. It is safe for concurrent
// use; build one with New.
type Monitor struct {
	cfg     config
	log     *slog.Logger
	changed chan struct{}
	running atomic.Bool

	mu      sync.Mutex
	gpus    map[string]*gpuState
	dumps   map[string]string // devcdN → PCI address it was counted for
	stats   Stats
	boot    string // the boot ID the state file is written for
	snapSeq uint64 // numbers snapshots of the state

	saveMu   sync.Mutex
	saved    []byte // the state file as last written
	savedSeq uint64
}

// ListenerState says whether the Monitor hears kernel uevents.
type ListenerState string

// Listener states.
const (
	// ListenerIdle: Run has not been called yet.
	ListenerIdle ListenerState = "idle"
	// ListenerOff: SourceUevent is off.
	ListenerOff ListenerState = "off"
	// ListenerListening: Run is reading uevents.
	ListenerListening ListenerState = "listening"
	// ListenerUnavailable: the uevent socket could not be opened;
	// Stats.ListenerError says why.
	ListenerUnavailable ListenerState = "unavailable"
	// ListenerStopped: Run returned (context done, or the source ended
	// with Stats.ListenerError).
	ListenerStopped ListenerState = "stopped"
)

// Stats are the Monitor's own counters.
type Stats struct {
	Listener ListenerState
	// ListenerError is why the listener is unavailable or stopped early.
	ListenerError error
	// Received counts messages read; Malformed those Parse refused;
	// Foreign those not sent by the kernel (udev's, another process's).
	Received, Malformed, Foreign uint64
	// Overflows counts the times the kernel dropped messages because the
	// socket's buffer was full; each made the consumer re-check every GPU.
	Overflows uint64
	// Applied counts events that concerned a GPU.
	Applied uint64
	// Dropped counts events about GPUs the Monitor could not track (gone
	// before they were handled, or beyond maxTracked).
	Dropped uint64
}

// New returns a Monitor. It reads nothing but the state file (WithStateFile)
// until Run or Check.
func New(opts ...Option) (*Monitor, error) {
	c := config{
		root:       "/sys",
		log:        slog.New(slog.DiscardHandler),
		sources:    AllSources,
		thresholds: DefaultThresholds,
		rcvbuf:     uevent.DefaultReceiveBuffer,
	}
	for _, o := range opts {
		o(&c)
	}
	if !c.openSet {
		rcvbuf := c.rcvbuf
		c.open = func() (uevent.Conn, error) {
			// A socket that can never hear the kernel would pass for a
			// working listener; say so instead. When it cannot be told,
			// listen anyway.
			if sent, err := uevent.KernelSendsHere(); err == nil && !sent {
				return nil, fmt.Errorf("not listening for uevents: %w (this process is in a user namespace other than the host's)", uevent.ErrNotSentHere)
			}
			return uevent.Open(uevent.WithReceiveBuffer(rcvbuf))
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	m := &Monitor{
		cfg:     c,
		log:     c.log,
		changed: make(chan struct{}, 1),
		gpus:    make(map[string]*gpuState),
		dumps:   make(map[string]string),
		stats:   Stats{Listener: ListenerIdle},
	}
	if c.stateFile != "" {
		if err := checkStateFile(c.stateFile); err != nil {
			if !c.stateReadOnly {
				return nil, err
			}
			c.log.Warn("not reading the health state file", "err", err)
			m.cfg.stateFile = ""
		}
	}
	if m.cfg.stateFile != "" {
		m.boot = bootID()
		m.loadState()
	}
	return m, nil
}

// Sources returns the sources that are on.
func (m *Monitor) Sources() Source { return m.cfg.sources }

// Changed delivers a value when the health of some GPU may have changed,
// or when uevents were lost: the consumer then Checks every GPU. Several
// changes before the consumer reads coalesce into one.
func (m *Monitor) Changed() <-chan struct{} { return m.changed }

func (m *Monitor) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Stats returns the Monitor's counters.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Run listens for kernel uevents until ctx is done. It returns nil then,
// and also — early, still nil — when it has nothing to listen to: the
// uevent source is off, cannot be opened (no permission, seccomp), or
// ended. The Monitor then goes on answering Check from sysfs and what it
// heard so far; Stats says why it stopped listening. So a missing netlink
// socket never stops the plugin, and Run fits an errgroup. Run may be
// called once.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("health: Monitor.Run called twice")
	}
	if m.cfg.sources&SourceUevent == 0 {
		m.setListener(ListenerOff, nil)
		return nil
	}
	conn, err := m.cfg.open()
	if err != nil {
		m.setListener(ListenerUnavailable, err)
		m.log.Warn("kernel uevents unavailable: GPU health is read from sysfs at each rescan only, and wedged GPUs go unnoticed", "err", err)
		return nil
	}
	m.setListener(ListenerListening, nil)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	m.log.Debug("listening for kernel uevents")

	buf := make([]byte, uevent.MaxMessage)
	for {
		n, err := conn.Receive(buf)
		switch {
		case err == nil:
			m.handle(buf[:n])
		case errors.Is(err, uevent.ErrOverflow):
			m.overflowed()
		case errors.Is(err, uevent.ErrForeign):
			m.count(func(s *Stats) { s.Received++; s.Foreign++ })
		case errors.Is(err, uevent.ErrTruncated):
			m.count(func(s *Stats) { s.Received++; s.Malformed++ })
		default:
			conn.Close()
			if ctx.Err() != nil {
				m.setListener(ListenerStopped, nil)
				return nil
			}
			m.setListener(ListenerStopped, err)
			m.log.Warn("kernel uevents stopped: GPU health is read from sysfs at each rescan only", "err", err)
			return nil
		}
	}
}

func (m *Monitor) setListener(s ListenerState, err error) {
	m.count(func(st *Stats) { st.Listener, st.ListenerError = s, err })
}

func (m *Monitor) count(f func(*Stats)) {
	m.mu.Lock()
	f(&m.stats)
	m.mu.Unlock()
}

// overflowed handles lost events: nothing can say what was lost, so the
// consumer re-checks everything. A lost wedge stays lost (it has no sysfs
// trace); a lost bind is caught by the binding check.
func (m *Monitor) overflowed() {
	m.mu.Lock()
	m.stats.Overflows++
	n := m.stats.Overflows
	m.mu.Unlock()
	// Logged at 1, 2, 4, 8, … so a storm cannot flood the log.
	if bits.OnesCount64(n) == 1 {
		m.log.Warn("kernel uevents lost (socket buffer full): re-checking every GPU; a wedge event may have been missed", "overflows", n)
	}
	m.notify()
}
