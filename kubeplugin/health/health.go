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
	"log/slog"
	"math/bits"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

// maxTracked bounds the GPUs the Monitor keeps state for. State is only
// made for functions that exist in sysfs, so this bounds a misbehaving
// machine, not a normal one (fakenode.MaxMany is 1024).
const maxTracked = 4096

// Monitor tracks the health of the node's GPUs. It is safe for concurrent
// use; build one with New.
type Monitor struct {
	cfg     config
	log     *slog.Logger
	changed chan struct{}
	running atomic.Bool

	mu    sync.Mutex
	gpus  map[string]*gpuState
	dumps map[string]string // devcdN → PCI address it was counted for
	stats Stats
}

// gpuState is what uevents and earlier Checks said about one PCI function.
type gpuState struct {
	// binding is the driver binding the state below belongs to.
	binding binding
	// wedged holds WEDGED's methods; nil when not wedged.
	wedged     []string
	wedgedCard string
	task       string
	// recoveryFailed is set by ERROR_EVENT=FAILED_RECOVERY.
	recoveryFailed bool
	hangs          uint64
	recoveries     uint64
	// aerBase is the AER counters when this binding was first seen.
	aerBase    AER
	hasAERBase bool
	// hangBase is the hang count when this binding was first seen.
	hangBase uint64
}

// rebound forgets what the previous binding suffered.
func (st *gpuState) rebound(b binding) {
	st.binding = b
	st.wedged, st.wedgedCard, st.task = nil, "", ""
	st.recoveryFailed = false
	st.hasAERBase = false
	st.hangBase = st.hangs
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

// New returns a Monitor; it reads nothing until Run or Check.
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
		c.open = func() (uevent.Conn, error) { return uevent.Open(uevent.WithReceiveBuffer(rcvbuf)) }
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &Monitor{
		cfg:     c,
		log:     c.log,
		changed: make(chan struct{}, 1),
		gpus:    make(map[string]*gpuState),
		dumps:   make(map[string]string),
		stats:   Stats{Listener: ListenerIdle},
	}, nil
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

// handle parses and applies one message.
func (m *Monitor) handle(msg []byte) {
	ev, err := uevent.Parse(msg)
	if err != nil {
		m.count(func(s *Stats) {
			s.Received++
			if errors.Is(err, uevent.ErrNotKernel) {
				s.Foreign++
			} else {
				s.Malformed++
			}
		})
		return
	}
	c := classify(&ev)
	if !m.wanted(c.kind) {
		m.count(func(s *Stats) { s.Received++ })
		return
	}
	// Sysfs is read before the lock is taken: what binding the event is
	// about, which GPU a coredump names.
	var b binding
	switch c.kind {
	case kindWedged, kindHang:
		// DEVPATH is <function>/drm/cardN (classify checked it).
		cardDir := filepath.Join(m.cfg.root, ev.DevPath)
		b = binding{fn: inode(filepath.Dir(filepath.Dir(cardDir))), card: inode(cardDir)}
		if b.card == 0 {
			// The card left before the event was read: whatever it said
			// ended with that binding.
			m.count(func(s *Stats) { s.Received++; s.Dropped++ })
			return
		}
	case kindRecovery:
		c.below = m.below(c.devpath)
	case kindCoredump:
		c.pci = failingFunction(m.cfg.root, c.dump)
	}

	m.mu.Lock()
	m.stats.Received++
	notify := m.apply(c, b)
	m.mu.Unlock()
	if notify {
		m.notify()
	}
}

// below returns the tracked GPUs whose function is devpath or below it,
// read from sysfs without the lock held.
func (m *Monitor) below(devpath string) []target {
	m.mu.Lock()
	pcis := make([]string, 0, len(m.gpus))
	for pci := range m.gpus {
		pcis = append(pcis, pci)
	}
	m.mu.Unlock()
	top, err := filepath.EvalSymlinks(filepath.Join(m.cfg.root, devpath))
	if err != nil {
		return nil
	}
	var out []target
	for _, pci := range pcis {
		dir, err := filepath.EvalSymlinks(FunctionDir(m.cfg.root, pci))
		if err != nil {
			continue
		}
		if dir == top || strings.HasPrefix(dir, top+string(filepath.Separator)) {
			out = append(out, target{pci: pci, b: binding{fn: inode(dir)}})
		}
	}
	return out
}

// wanted reports whether the sources that are on care about a kind.
func (m *Monitor) wanted(k kind) bool {
	s := m.cfg.sources
	switch k {
	case kindWedged:
		return s&SourceWedge != 0
	case kindHang, kindCoredump, kindCoredumpGone:
		return s&SourceHangs != 0
	case kindRecovery:
		return s&SourceAER != 0
	case kindBound, kindTouched:
		return true
	}
	return false
}

// apply records a classified event; it reports whether the consumer
// should re-check. m.mu is held.
func (m *Monitor) apply(c change, b binding) bool {
	m.stats.Applied++
	switch c.kind {
	case kindWedged:
		st := m.stateFor(c.pci, b)
		if st == nil {
			return false
		}
		if recoveredByDriver(c.methods) {
			st.recoveries++
			m.log.Info("GPU was wedged and recovered by its driver (WEDGED=none)", "pci", c.pci, "card", c.card)
			return true
		}
		st.wedged, st.wedgedCard, st.task = c.methods, c.card, c.task
		m.log.Warn("GPU wedged", "pci", c.pci, "card", c.card, "methods", c.methods, "task", c.task)
		return true
	case kindHang:
		st := m.stateFor(c.pci, b)
		if st == nil {
			return false
		}
		st.hangs++
		m.log.Info("GPU hang", "pci", c.pci, "card", c.card, "hangs", st.hangs)
		return true
	case kindCoredump:
		if c.pci == "" {
			m.stats.Dropped++
			return false
		}
		if _, seen := m.dumps[c.dump]; seen {
			return false
		}
		st := m.stateFor(c.pci, binding{})
		if st == nil {
			return false
		}
		m.dumps[c.dump] = c.pci
		st.hangs++
		m.log.Info("GPU hang (devcoredump)", "pci", c.pci, "dump", c.dump, "hangs", st.hangs)
		return true
	case kindCoredumpGone:
		delete(m.dumps, c.dump)
		return false
	case kindRecovery:
		for _, t := range c.below {
			st := m.stateFor(t.pci, t.b)
			if st == nil {
				continue
			}
			switch c.value {
			case "FAILED_RECOVERY":
				st.recoveryFailed = true
				m.log.Warn("PCIe error recovery failed", "pci", t.pci, "reported on", c.pci)
			case "SUCCESSFUL_RECOVERY":
				// The device is back: errors counted so far are its past.
				st.recoveryFailed = false
				st.hasAERBase = false
			}
		}
		return len(c.below) > 0
	case kindBound:
		if st := m.gpus[c.pci]; st != nil {
			if st.wedged != nil || st.recoveryFailed {
				m.log.Info("GPU driver bound again: the previous binding's wedge or failed recovery no longer holds", "pci", c.pci)
			}
			// The next Check learns the new binding's numbers.
			st.rebound(binding{})
		}
		return true
	case kindTouched:
		return true
	}
	return false
}

// stateFor returns the state of a function, made if need be, after
// checking that the event's binding is the state's: an event from a
// binding the Monitor has not seen yet means a rebind happened unseen, and
// what the old binding suffered is forgotten first. nil when the state
// cannot be kept. m.mu is held.
func (m *Monitor) stateFor(pci string, b binding) *gpuState {
	st := m.gpus[pci]
	if st == nil {
		if len(m.gpus) >= maxTracked {
			m.stats.Dropped++
			return nil
		}
		st = &gpuState{binding: b}
		m.gpus[pci] = st
		return st
	}
	if st.binding.differs(b) {
		st.rebound(b)
	}
	st.binding = st.binding.merge(b)
	return st
}

// Check returns the health of each device, in the order given: what the
// uevents said merged with what sysfs says now. It is the resync: call it
// at start, after Changed fires, and on the consumer's rescans. It also
// forgets functions that left sysfs and are not among devs.
func (m *Monitor) Check(devs []discovery.Device) []Status {
	sigs := make([]signals, len(devs))
	for i := range devs {
		sigs[i] = m.readSignals(&devs[i])
	}
	var dumps map[string]string
	if m.cfg.sources&SourceHangs != 0 {
		dumps = m.readCoredumps()
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if dumps != nil {
		m.mergeCoredumps(dumps)
	}
	out := make([]Status, len(devs))
	keep := make(map[string]bool, len(devs))
	for i := range devs {
		keep[devs[i].PCIAddress] = true
		out[i] = m.status(&devs[i], &sigs[i])
	}
	for pci := range m.gpus {
		if !keep[pci] && vanished(FunctionDir(m.cfg.root, pci)) {
			delete(m.gpus, pci)
		}
	}
	return out
}

// Status is Check for one device.
func (m *Monitor) Status(dev *discovery.Device) Status {
	return m.Check([]discovery.Device{*dev})[0]
}

// readCoredumps maps the devcoredumps in sysfs that the Monitor has not
// counted yet to the functions they name. Only new names are resolved.
func (m *Monitor) readCoredumps() map[string]string {
	names := listCoredumps(m.cfg.root)
	m.mu.Lock()
	counted := make(map[string]bool, len(m.dumps))
	for name := range m.dumps {
		counted[name] = true
	}
	m.mu.Unlock()
	out := make(map[string]string, len(names))
	for _, name := range names {
		if counted[name] {
			out[name] = ""
			continue
		}
		out[name] = failingFunction(m.cfg.root, name)
	}
	return out
}

// mergeCoredumps counts the dumps not seen before and forgets the ones
// the kernel deleted. m.mu is held.
func (m *Monitor) mergeCoredumps(present map[string]string) {
	for name := range m.dumps {
		if _, ok := present[name]; !ok {
			delete(m.dumps, name)
		}
	}
	for name, pci := range present {
		if _, seen := m.dumps[name]; seen || pci == "" {
			continue
		}
		st := m.stateFor(pci, binding{})
		if st == nil {
			continue
		}
		m.dumps[name] = pci
		st.hangs++
		m.log.Info("GPU hang (devcoredump)", "pci", pci, "dump", name, "hangs", st.hangs)
	}
}
