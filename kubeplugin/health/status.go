package health

import (
	"fmt"
	"strings"
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
	// ReasonNotReady: the GPU's /dev/dri nodes are missing or wrong, or no
	// driver is bound to it. Discovery finds this, not the Monitor; the
	// node model reports it in the same terms.
	ReasonNotReady Reason = "not-ready"
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
