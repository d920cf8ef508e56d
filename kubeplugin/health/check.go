package health

import (
	"fmt"
	"slices"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

// Check returns the health of each device, in the order given: what the
// uevents said merged with what sysfs says now. It is the resync: call it
// at start, after Changed fires, and on the consumer's rescans. It also
// forgets functions that left sysfs and are not among devs.
func (m *Monitor) Check(devs []discovery.Device) []Status {
	sigs := make([]signals, len(devs))
	var r attrReader
	for i := range devs {
		sigs[i] = m.readSignals(&devs[i], &r)
	}
	var dumps map[string]string
	if m.cfg.sources&SourceHangs != 0 {
		dumps = m.readCoredumps()
	}

	m.mu.Lock()
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
	snap := m.snapshotState()
	m.mu.Unlock()
	m.saveState(snap)
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

// status decides the health of dev from the Monitor's state and the
// signals just read. m.mu is held.
func (m *Monitor) status(dev *discovery.Device, sig *signals) Status {
	s := Status{PCIAddress: dev.PCIAddress, Card: dev.Card}
	if !discovery.IsPCIAddress(dev.PCIAddress) {
		// Nothing to track a device by; discovery never returns one.
		s.Healthy = true
		return s
	}
	th := m.cfg.thresholds
	var problems []problem
	if sig.gone {
		problems = append(problems, problem{ReasonGone, fmt.Sprintf("PCI function %s is gone from sysfs", dev.PCIAddress)})
	}
	if sig.noResponse {
		problems = append(problems, problem{ReasonNoResponse, fmt.Sprintf("config space of %s reads all ones: the device does not answer (link down, or off the bus)", dev.PCIAddress)})
	}
	if sig.survivability {
		problems = append(problems, problem{ReasonSurvivability, fmt.Sprintf("%s is in survivability mode: its firmware needs flashing", dev.PCIAddress)})
	}
	s.Counters.AER, s.Counters.HasAER = sig.aer, sig.hasAER

	st := m.stateFor(dev.PCIAddress, sig.binding)
	if st != nil {
		s.Counters.Hangs, s.Counters.DriverRecoveries = st.hangs, st.recoveries
		if st.wedged != nil {
			s.WedgedMethods = slices.Clone(st.wedged)
			problems = append(problems, problem{ReasonWedged, wedgeMessage(st)})
		}
		if st.recoveryFailed {
			problems = append(problems, problem{ReasonAERRecoveryFailed, fmt.Sprintf("PCIe error recovery of %s failed", dev.PCIAddress)})
		}
		if sig.hasAER {
			// A counter below its base means the function was enumerated
			// anew, which also restarts the count.
			if !st.hasAERBase || sig.aer.Fatal < st.aerBase.Fatal || sig.aer.Nonfatal < st.aerBase.Nonfatal {
				st.aerBase, st.hasAERBase = sig.aer, true
			}
			if n := sig.aer.Fatal - st.aerBase.Fatal; th.FatalAER > 0 && n >= th.FatalAER {
				problems = append(problems, problem{ReasonAERFatal, plural(n, "fatal PCIe error", "fatal PCIe errors") + " since the driver bound"})
			}
			if n := sig.aer.Nonfatal - st.aerBase.Nonfatal; th.NonfatalAER > 0 && n >= th.NonfatalAER {
				problems = append(problems, problem{ReasonAERNonfatal, fmt.Sprintf("%s since the driver bound (threshold %d)",
					plural(n, "non-fatal PCIe error", "non-fatal PCIe errors"), th.NonfatalAER)})
			}
		}
		if n := st.hangs - st.hangBase; th.Hangs > 0 && n >= th.Hangs {
			problems = append(problems, problem{ReasonHangs, fmt.Sprintf("%s since the driver bound (threshold %d)", plural(n, "hang", "hangs"), th.Hangs)})
		}
	}
	verdict(&s, problems)
	return s
}

func wedgeMessage(st *gpuState) string {
	var b strings.Builder
	b.WriteString(st.wedgedCard)
	b.WriteString(" is wedged: ")
	if len(st.wedged) == 0 {
		b.WriteString("the kernel named no recovery method")
	} else {
		b.WriteString("the kernel asks for recovery by ")
		b.WriteString(strings.Join(st.wedged, " or "))
	}
	if st.task != "" {
		b.WriteString(" (guilty task: ")
		b.WriteString(st.task)
		b.WriteString(")")
	}
	return b.String()
}
