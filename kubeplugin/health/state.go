package health

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

// maxTracked bounds the GPUs the Monitor keeps state for. State is only
// made for functions that exist in sysfs, so this bounds a misbehaving
// machine, not a normal one (fakenode.MaxMany is 1024).
const maxTracked = 4096

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
	var snap snapshot
	if notify {
		snap = m.snapshotState()
	}
	m.mu.Unlock()
	if notify {
		m.saveState(snap)
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
