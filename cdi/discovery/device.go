// Package discovery finds Intel GPUs in a sysfs tree and checks that their
// /dev/dri nodes are usable. It reads only below the roots it is given, so a
// test can point it at a fake node.
package discovery

import (
	"fmt"
	"strings"
)

// IntelVendorID is the PCI vendor ID of Intel, as sysfs spells it.
const IntelVendorID = "0x8086"

// DRMMajor is the char major of DRM device nodes on Linux.
const DRMMajor = 226

// Drivers the discovery accepts: the kernel drivers of Intel GPUs.
const (
	DriverI915 = "i915"
	DriverXe   = "xe"
)

// Role is a PCI function's place in SR-IOV.
type Role string

// SR-IOV roles.
const (
	RoleNone Role = "none" // no SR-IOV capability, or capable with no VFs enabled
	RolePF   Role = "pf"   // physical function with virtual functions enabled
	RoleVF   Role = "vf"   // virtual function
)

// Node is one DRM char device node.
type Node struct {
	// Path is where the node lives in a container: /dev/dri/card0.
	Path string `json:"path"`
	// HostPath is the real char node on the host, below the dev root. When
	// the dev-root entry is a symlink it is the link's target, because CDI
	// runtimes refuse symlinks as device nodes.
	HostPath string `json:"hostPath"`
	Major    uint32 `json:"major"`
	Minor    uint32 `json:"minor"`
}

// Link is a udev by-path symlink that belongs to a GPU.
type Link struct {
	// Path is the link as a container sees it: /dev/dri/by-path/pci-…-card.
	Path string `json:"path"`
	// HostPath is the link below the dev root.
	HostPath string `json:"hostPath"`
}

// SRIOV describes a function's SR-IOV state.
type SRIOV struct {
	Role Role `json:"role"`
	// PF is the PCI address of the physical function, set for a VF.
	PF string `json:"pf,omitempty"`
	// NumVFs and TotalVFs come from a PF's sriov_numvfs and sriov_totalvfs.
	NumVFs   int `json:"numVFs,omitempty"`
	TotalVFs int `json:"totalVFs,omitempty"`
}

// Device is one Intel GPU: a DRM card on a PCI function bound to i915 or xe.
type Device struct {
	// Card is the card's name in /sys/class/drm: "card0". Its number is not
	// stable across boots; PCIAddress is.
	Card      string `json:"card"`
	CardIndex int    `json:"cardIndex"`
	// Render is the render node's name ("renderD128"), empty when the
	// function has none.
	Render     string `json:"render,omitempty"`
	PCIAddress string `json:"pciAddress"`
	VendorID   string `json:"vendorID"`
	DeviceID   string `json:"deviceID"`
	Class      string `json:"class"`
	Driver     string `json:"driver"`
	// NUMANode is -1 when the kernel does not know it.
	NUMANode int   `json:"numaNode"`
	SRIOV    SRIOV `json:"sriov"`

	CardNode   Node  `json:"cardNode"`
	RenderNode *Node `json:"renderNode,omitempty"`
	// ByPath lists the GPU's own /dev/dri/by-path links that exist.
	ByPath []Link `json:"byPath,omitempty"`

	// Ready is true when every node exists under the dev root as a char
	// device with the numbers sysfs gives.
	Ready bool `json:"ready"`
	// Reason says why the GPU is not handed out; empty when it is.
	Reason string `json:"reason,omitempty"`
}

// Usable reports whether the GPU can be handed to containers: ready, and not
// a physical function whose virtual functions are handed out instead.
func (d *Device) Usable() bool { return d.Reason == "" }

// Nodes returns the card node and, when there is one, the render node.
func (d *Device) Nodes() []Node {
	if d.RenderNode == nil {
		return []Node{d.CardNode}
	}
	return []Node{d.CardNode, *d.RenderNode}
}

// Skip is a DRM entry that was not taken as a device, with the reason.
type Skip struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

func (s Skip) String() string { return s.Name + ": " + s.Reason }

// Result is what one scan found.
type Result struct {
	// Devices are the Intel GPUs, ordered by card number, usable or not.
	Devices []Device `json:"devices"`
	// Skipped are cards that looked like candidates but could not be read:
	// a malformed or vanished file. The reason names the file.
	Skipped []Skip `json:"skipped,omitempty"`
	// Ignored are cards that are not ours: other vendors, non-PCI
	// framebuffers, functions bound to another driver.
	Ignored []Skip `json:"ignored,omitempty"`
}

// Usable returns the devices that can be handed out, in scan order.
func (r *Result) Usable() []Device {
	out := make([]Device, 0, len(r.Devices))
	for i := range r.Devices {
		if r.Devices[i].Usable() {
			out = append(out, r.Devices[i])
		}
	}
	return out
}

// ByPCI returns the device at the given PCI address.
func (r *Result) ByPCI(addr string) (*Device, bool) {
	for i := range r.Devices {
		if strings.EqualFold(r.Devices[i].PCIAddress, addr) {
			return &r.Devices[i], true
		}
	}
	return nil, false
}

func (n Node) String() string {
	return fmt.Sprintf("%s (%d:%d)", n.Path, n.Major, n.Minor)
}
