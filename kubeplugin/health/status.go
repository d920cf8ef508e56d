package health

import (
	"fmt"
	"slices"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

// Reason says, machine-readably, why a GPU is Unhealthy. It is a metric
// label value and a column of `intel-gpu-cdi list`, so the values are a
// contract.
type Reason string

// The reasons, most severe first: when several hold, Status.Reason is the
// first of them and Status.Message names them all.
const (
	// ReasonGone: the PCI function is no longer in sysfs (surprise
	// removal, a hot-unplug in progress).
	ReasonGone Reason = "gone"
	// ReasonNoResponse: the function's config space reads all ones, as a
	// device that fell off the bus or whose link is down does.
	ReasonNoResponse Reason = "no-response"
	// ReasonSurvivability: xe's survivability_mode attribute is present:
	// the firmware needs flashing (the event was WEDGED=vendor-specific).
	ReasonSurvivability Reason = "survivability-mode"
	// ReasonWedged: the kernel sent a DRM wedged event; Status.WedgedMethods
	// holds the recovery methods it asked for.
	ReasonWedged Reason = "wedged"
	// ReasonAERRecoveryFailed: the kernel's PCIe error recovery reported
	// FAILED_RECOVERY for the function.
	ReasonAERRecoveryFailed Reason = "aer-recovery-failed"
	// ReasonAERFatal: fatal PCIe errors reached Thresholds.FatalAER.
	ReasonAERFatal Reason = "aer-fatal"
	// ReasonAERNonfatal: non-fatal PCIe errors reached Thresholds.NonfatalAER.
	ReasonAERNonfatal Reason = "aer-nonfatal"
	// ReasonHangs: hangs reached Thresholds.Hangs.
	ReasonHangs Reason = "hangs"
)

// Reasons lists every reason, most severe first.
var Reasons = []Reason{
	ReasonGone, ReasonNoResponse, ReasonSurvivability, ReasonWedged,
	ReasonAERRecoveryFailed, ReasonAERFatal, ReasonAERNonfatal, ReasonHangs,
}

// AER holds a PCI function's PCIe error counters as the kernel keeps them
// (the TOTAL_ERR_* lines of aer_dev_correctable, aer_dev_nonfatal and
// aer_dev_fatal): counted since the function was enumerated, so a driver
// rebind does not reset them.
type AER struct {
	Correctable, Nonfatal, Fatal uint64
}

// Counters are what the Monitor counted for a GPU.
type Counters struct {
	// Hangs counts the GPU's hangs seen since the Monitor started:
	// devcoredumps naming it as failing_device and i915 ERROR=1 events.
	// The kernel keeps one devcoredump per device until it is read or 5
	// minutes pass, so hangs in quick succession count once.
	Hangs uint64
	// DriverRecoveries counts WEDGED=none events: the driver found the
	// device wedged and recovered it by itself.
	DriverRecoveries uint64
	// AER is the kernel's counters, read at the last Check; valid when
	// HasAER is true (the function has the AER capability and the kernel
	// CONFIG_PCIEAER).
	AER    AER
	HasAER bool
}

// Status is the health of one GPU.
type Status struct {
	PCIAddress string
	Card       string
	Healthy    bool
	// Reason is empty when Healthy.
	Reason Reason
	// Message says in words what is wrong, all of it; empty when Healthy.
	Message string
	// WedgedMethods are the recovery methods of the wedged event, verbatim
	// (rebind, bus-reset, vendor-specific, unknown, or whatever a newer
	// kernel sends); nil unless the GPU is wedged.
	WedgedMethods []string
	Counters      Counters
}

// problem is one reason that holds, with its words.
type problem struct {
	reason  Reason
	message string
}

// verdict turns the problems found into the Status fields, most severe
// reason first.
func verdict(s *Status, problems []problem) {
	if len(problems) == 0 {
		s.Healthy = true
		return
	}
	best := problems[0]
	for _, p := range problems[1:] {
		if severity(p.reason) < severity(best.reason) {
			best = p
		}
	}
	words := make([]string, 0, len(problems))
	words = append(words, best.message)
	for _, p := range problems {
		if p.reason != best.reason {
			words = append(words, p.message)
		}
	}
	s.Healthy = false
	s.Reason = best.reason
	s.Message = strings.Join(words, "; ")
}

func severity(r Reason) int {
	for i, x := range Reasons {
		if x == r {
			return i
		}
	}
	return len(Reasons)
}

// plural writes "1 hang" / "3 hangs".
func plural(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
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
