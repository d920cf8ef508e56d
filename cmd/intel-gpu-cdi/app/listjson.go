package app

import (
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// listOutput is what `list --format json` prints. It is a contract with
// scripts, documented in the README: the names and meanings of its fields
// change only on purpose, never because discovery's types did. Every list
// is [] when empty, never null.
type listOutput struct {
	// Kind is the CDI kind the names are in: intel.com/gpu.
	Kind string `json:"kind"`
	// Devices are the Intel GPUs, in card number order, handed out or not.
	Devices []listDevice `json:"devices"`
	// Skipped are cards that could not be read; the reason names the file.
	Skipped []listEntry `json:"skipped"`
	// Ignored are DRM cards that are not Intel GPUs on i915 or xe.
	Ignored []listEntry `json:"ignored"`
}

type listDevice struct {
	Card       string `json:"card"`
	PCIAddress string `json:"pciAddress"`
	VendorID   string `json:"vendorID"`
	DeviceID   string `json:"deviceID"`
	Class      string `json:"class"`
	// Driver is "" when no driver is bound.
	Driver string `json:"driver"`
	// NUMANode is -1 when the kernel does not know it.
	NUMANode int       `json:"numaNode"`
	SRIOV    listSRIOV `json:"sriov"`
	// Nodes are the card node and, when there is one, the render node.
	Nodes []listNode `json:"nodes"`
	// ByPath are the host paths of the GPU's own /dev/dri/by-path links.
	ByPath []string `json:"byPath"`
	// HandedOut is true when generate and the plugin give the GPU to
	// containers; Reason says why not otherwise.
	HandedOut bool   `json:"handedOut"`
	Reason    string `json:"reason"`
	// CDINames are what to ask a runtime for (podman --device), [] when
	// the GPU is not handed out.
	CDINames []string `json:"cdiNames"`
	// Health is what the kernel says of a GPU that is handed out; left out
	// for one that is not (Reason says why).
	Health *listHealth `json:"health,omitempty"`
}

type listHealth struct {
	Healthy bool `json:"healthy"`
	// Reason is one of the health reasons (wedged, survivability-mode,
	// aer-fatal, aer-recovery-failed, aer-nonfatal, hangs, gone,
	// no-response), "" when healthy; Message says it in words.
	Reason        string   `json:"reason"`
	Message       string   `json:"message"`
	WedgedMethods []string `json:"wedgedMethods"`
	// Hangs counts the devcoredumps present for the GPU.
	Hangs uint64 `json:"hangs"`
	// PCIeErrors are the kernel's AER totals; left out without AER.
	PCIeErrors *listPCIeErrors `json:"pcieErrors,omitempty"`
}

type listPCIeErrors struct {
	Correctable uint64 `json:"correctable"`
	Nonfatal    uint64 `json:"nonfatal"`
	Fatal       uint64 `json:"fatal"`
}

func newListHealth(s *health.Status) *listHealth {
	if s == nil {
		return nil
	}
	h := &listHealth{Healthy: s.Healthy, Reason: string(s.Reason), Message: s.Message, WedgedMethods: []string{}, Hangs: s.Counters.Hangs}
	h.WedgedMethods = append(h.WedgedMethods, s.WedgedMethods...)
	if s.Counters.HasAER {
		a := s.Counters.AER
		h.PCIeErrors = &listPCIeErrors{Correctable: a.Correctable, Nonfatal: a.Nonfatal, Fatal: a.Fatal}
	}
	return h
}

type listSRIOV struct {
	// Role is "none", "pf" (VFs enabled: they are handed out instead) or "vf".
	Role string `json:"role"`
	// PF is a VF's physical function, "" otherwise.
	PF       string `json:"pf"`
	NumVFs   int    `json:"numVFs"`
	TotalVFs int    `json:"totalVFs"`
}

type listNode struct {
	// Path is the node in a container, HostPath the char device on the host.
	Path     string `json:"path"`
	HostPath string `json:"hostPath"`
	Major    uint32 `json:"major"`
	Minor    uint32 `json:"minor"`
}

type listEntry struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

func newListOutput(res *discovery.Result, b *spec.Builder, healths []*health.Status) listOutput {
	out := listOutput{
		Kind:    b.Kind(),
		Devices: make([]listDevice, 0, len(res.Devices)),
		Skipped: listEntries(res.Skipped),
		Ignored: listEntries(res.Ignored),
	}
	for i := range res.Devices {
		d := &res.Devices[i]
		ld := listDevice{
			Card:       d.Card,
			PCIAddress: d.PCIAddress,
			VendorID:   d.VendorID,
			DeviceID:   d.DeviceID,
			Class:      d.Class,
			Driver:     d.Driver,
			NUMANode:   d.NUMANode,
			SRIOV: listSRIOV{
				Role:     string(d.SRIOV.Role),
				PF:       d.SRIOV.PF,
				NumVFs:   d.SRIOV.NumVFs,
				TotalVFs: d.SRIOV.TotalVFs,
			},
			Nodes:     []listNode{},
			ByPath:    []string{},
			HandedOut: d.Usable(),
			Reason:    d.Reason,
			CDINames:  cdiNames(d, b),
			Health:    newListHealth(healths[i]),
		}
		for _, n := range d.Nodes() {
			ld.Nodes = append(ld.Nodes, listNode{Path: n.Path, HostPath: n.HostPath, Major: n.Major, Minor: n.Minor})
		}
		for _, l := range d.ByPath {
			ld.ByPath = append(ld.ByPath, l.HostPath)
		}
		out.Devices = append(out.Devices, ld)
	}
	return out
}

func listEntries(skips []discovery.Skip) []listEntry {
	out := make([]listEntry, 0, len(skips))
	for _, s := range skips {
		out = append(out, listEntry{Name: s.Name, Reason: s.Reason})
	}
	return out
}
