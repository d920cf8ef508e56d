package health

import (
	"path/filepath"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

// kind is what a uevent means for GPU health.
type kind int

const (
	kindIgnored kind = iota
	// kindWedged: change on cardN with WEDGED=<methods>.
	kindWedged
	// kindHang: change on cardN with ERROR=1 (i915's hang event).
	kindHang
	// kindBound: the driver bound the function (bind on the function, add
	// of a cardN below it) or the function was enumerated anew (add):
	// whatever the last binding suffered is over.
	kindBound
	// kindTouched: something happened to the function or its card that a
	// Check will see in sysfs (unbind, remove, an AER recovery start).
	kindTouched
	// kindRecovery: change on a PCI function with ERROR_EVENT= (the PCIe
	// error recovery result). The kernel sends it for the function whose
	// driver took part, or, when recovery failed for want of a driver that
	// can recover (i915), for the bridge above: it concerns every GPU at or
	// below DEVPATH.
	kindRecovery
	// kindCoredump: add of a devcdN.
	kindCoredump
	// kindCoredumpGone: remove of a devcdN.
	kindCoredumpGone
)

// change is what a uevent says, in terms of one GPU.
type change struct {
	kind kind
	// pci is the function's address; for a coredump it is learned from
	// sysfs after classification.
	pci string
	// card is the cardN the event was about, when it was about a card.
	card string
	// methods are WEDGED's methods; value is ERROR_EVENT's value; task
	// names the wedge's guilty task when the kernel said.
	methods []string
	value   string
	task    string
	// dump is the devcdN of a coredump event.
	dump string
	// devpath is the event's DEVPATH, for events about a subtree.
	devpath string
	// below are the tracked GPUs at or below devpath, found in sysfs
	// after classification.
	below []target
}

// target is a GPU an event concerns, with the binding sysfs showed.
type target struct {
	pci string
	b   binding
}

// classify says what an event means, from the event alone. Cards are
// recognised by their DEVPATH, <function>/drm/cardN, so connectors
// (cardN-DP-1), render nodes and cards of non-PCI devices are ignored.
func classify(ev *uevent.Event) change {
	switch ev.Subsystem {
	case "drm":
		pci, card, ok := cardOf(ev.DevPath)
		if !ok {
			return change{}
		}
		c := change{pci: pci, card: card}
		switch ev.Action {
		case "add":
			c.kind = kindBound
		case "remove":
			c.kind = kindTouched
		case "change":
			if v, ok := ev.Get("WEDGED"); ok {
				c.kind, c.methods, c.task = kindWedged, splitMethods(v), taskOf(ev)
			} else if v, _ := ev.Get("ERROR"); v == "1" {
				c.kind = kindHang
			}
		}
		return c
	case "pci":
		pci := filepath.Base(ev.DevPath)
		if !discovery.IsPCIAddress(pci) {
			return change{}
		}
		c := change{pci: pci}
		switch ev.Action {
		case "bind", "add":
			c.kind = kindBound
		case "unbind", "remove":
			c.kind = kindTouched
		case "change":
			if v, ok := ev.Get("ERROR_EVENT"); ok {
				c.kind, c.value, c.devpath = kindRecovery, v, ev.DevPath
			}
		}
		return c
	case "devcoredump":
		dump := filepath.Base(ev.DevPath)
		if !isCoredumpName(dump) {
			return change{}
		}
		switch ev.Action {
		case "add":
			return change{kind: kindCoredump, dump: dump}
		case "remove":
			return change{kind: kindCoredumpGone, dump: dump}
		}
	}
	return change{}
}

// cardOf splits ".../<pci>/drm/cardN" into the function's address and the
// card's name.
func cardOf(devpath string) (pci, card string, ok bool) {
	rest, card := filepath.Split(devpath)
	if _, isCard := discovery.ParseCardName(card); !isCard {
		return "", "", false
	}
	rest = strings.TrimSuffix(rest, "/")
	rest, drm := filepath.Split(rest)
	if drm != "drm" {
		return "", "", false
	}
	pci = filepath.Base(strings.TrimSuffix(rest, "/"))
	if !discovery.IsPCIAddress(pci) {
		return "", "", false
	}
	return pci, card, true
}

// maxMethods bounds what is kept of a WEDGED list: the kernel defines
// five methods, and a hostile list must not grow the state.
const maxMethods = 16

// splitMethods keeps WEDGED's comma-separated methods verbatim, unknown
// ones included: an unknown method is still a wedge, and so is an empty
// list (never nil, which means "not wedged").
func splitMethods(v string) []string {
	out := []string{}
	for _, m := range strings.Split(v, ",") {
		if m = strings.TrimSpace(m); m != "" && len(out) < maxMethods {
			out = append(out, m)
		}
	}
	return out
}

// taskOf renders the guilty task of a wedge ("vkcube, pid 4711").
func taskOf(ev *uevent.Event) string {
	task, _ := ev.Get("TASK")
	pid, _ := ev.Get("PID")
	switch {
	case task != "" && pid != "":
		return task + ", pid " + pid
	case pid != "":
		return "pid " + pid
	}
	return task
}

// recoveredByDriver reports a WEDGED=none event: the driver found the
// device wedged and recovered it itself (Documentation/gpu/drm-uapi.rst),
// so no recovery is due from anyone and the GPU stays usable.
func recoveredByDriver(methods []string) bool {
	return len(methods) == 1 && methods[0] == "none"
}
