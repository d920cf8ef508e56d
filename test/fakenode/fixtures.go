package fakenode

import (
	"fmt"
	"strconv"
)

// Fixtures are named node contents that tests, benchmarks, golden specs and `make demo` share. Each
// doc comment lists exactly what the fixture adds; assertions elsewhere depend on it, so changing a
// fixture is changing a contract. Unless a line says otherwise a GPU has class 0x030000, NUMA "-1",
// parent pci0000:00, no connectors, and its /dev/dri nodes and by-path links.

// bridgesA and bridgesB are the switch paths a discrete card sits behind: root port, upstream port,
// downstream port.
const (
	bridgesA = "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0"
	bridgesB = "pci0000:00/0000:00:1c.0/0000:05:00.0/0000:06:01.0"
)

// addAll adds gpus in order, naming the fixture in errors.
func addAll(n *Node, fixture string, gpus ...GPU) error {
	for _, g := range gpus {
		if err := n.AddGPU(g); err != nil {
			return fmt.Errorf("fixture %s: %w", fixture, err)
		}
	}
	return nil
}

// igpu is the integrated GPU IGPU adds, shared by the fixtures that start from it.
var igpu = GPU{Card: 0, PCI: "0000:00:02.0", Device: "0x46a6", Connectors: []string{"eDP-1", "DP-1"}}

// IGPU adds one integrated GPU:
//   - card0 + renderD128: i915, 0x8086:0x46a6, 0000:00:02.0, NUMA "-1", connectors card0-eDP-1 and
//     card0-DP-1.
func IGPU(n *Node) error {
	return addAll(n, "IGPU", igpu)
}

// DiscreteXe adds IGPU's integrated GPU and a discrete xe card:
//   - card0 + renderD128: i915, 0x8086:0x46a6, 0000:00:02.0, NUMA "-1", connectors card0-eDP-1 and
//     card0-DP-1 (exactly IGPU).
//   - card1 + renderD129: xe, 0x8086:0xe20b, 0000:03:00.0 behind
//     pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0, NUMA "0".
func DiscreteXe(n *Node) error {
	return addAll(n, "DiscreteXe", igpu, GPU{
		Card: 1, PCI: "0000:03:00.0", Parent: bridgesA, Device: "0xe20b", Driver: "xe", NUMA: "0",
	})
}

// SRIOV adds a data-centre PF with two VFs enabled; there is no card0. All three are i915,
// 0x8086:0x56c0, class 0x038000 (display controller, not VGA), NUMA "1", behind
// pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0:
//   - card1 + renderD129: the PF 0000:03:00.0, sriov_totalvfs 7, sriov_numvfs 2,
//     virtfn0 -> ../0000:03:00.1, virtfn1 -> ../0000:03:00.2.
//   - card2 + renderD130: VF 0000:03:00.1, physfn -> ../0000:03:00.0.
//   - card3 + renderD131: VF 0000:03:00.2, physfn -> ../0000:03:00.0.
func SRIOV(n *Node) error {
	base := GPU{Parent: bridgesA, Device: "0x56c0", Class: "0x038000", NUMA: "1"}
	pf, vf1, vf2 := base, base, base
	pf.Card, pf.PCI, pf.TotalVFs, pf.NumVFs = 1, "0000:03:00.0", 7, 2
	vf1.Card, vf1.PCI, vf1.PhysFn = 2, "0000:03:00.1", pf.PCI
	vf2.Card, vf2.PCI, vf2.PhysFn = 3, "0000:03:00.2", pf.PCI
	return addAll(n, "SRIOV", pf, vf1, vf2)
}

// Tricky adds the mix that breaks naive discovery. Render minors do not follow 128+card, and a
// name sort puts card10 before card2.
//   - card0: simpledrm, platform device devices/platform/simple-framebuffer.0 (no vendor file, no
//     render node); Dev/dri/card0 and by-path platform-simple-framebuffer.0-card.
//   - card1 + renderD128: NVIDIA, driver nvidia, 0x10de:0x2684, 0000:06:00.0 behind
//     pci0000:00/0000:00:1c.0.
//   - card2 + renderD129: i915, 0x8086:0x46a6, 0000:00:02.0, connectors card2-eDP-1 and card2-DP-1.
//   - card3 + renderD130: i915, 0x8086:0x56a0, 0000:05:00.0 behind pci0000:00/0000:00:1d.0,
//     NUMA "0", NOT READY: no Dev/dri nodes and no by-path links.
//   - card10 + renderD131: xe, 0x8086:0xe20b, 0000:03:00.0 behind
//     pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0, NUMA "0", connectors card10-DP-2 and
//     card10-HDMI-A-1.
//   - unbound Intel function 0000:07:00.0 (0x8086:0x56a1) behind pci0000:00/0000:00:1b.0: no driver
//     link, no DRM minors, no dev nodes.
//   - controlD64 (devices/virtual/drm/controlD64, Dev/dri/controlD64) and the class/drm/version file.
func Tricky(n *Node) error {
	if err := n.AddSimpleDRM(0); err != nil {
		return fmt.Errorf("fixture Tricky: %w", err)
	}
	if err := n.AddOtherVendorGPU(GPU{
		Card: 1, Render: 128, PCI: "0000:06:00.0", Parent: "pci0000:00/0000:00:1c.0", Vendor: "0x10de",
	}); err != nil {
		return fmt.Errorf("fixture Tricky: %w", err)
	}
	if err := addAll(n, "Tricky",
		GPU{Card: 2, Render: 129, PCI: "0000:00:02.0", Device: "0x46a6", Connectors: []string{"eDP-1", "DP-1"}},
		GPU{Card: 3, Render: 130, PCI: "0000:05:00.0", Parent: "pci0000:00/0000:00:1d.0", Device: "0x56a0", NUMA: "0", NoDevNodes: true},
		GPU{Card: 10, Render: 131, PCI: "0000:03:00.0", Parent: bridgesA, Device: "0xe20b", Driver: "xe", NUMA: "0", Connectors: []string{"DP-2", "HDMI-A-1"}},
		GPU{PCI: "0000:07:00.0", Parent: "pci0000:00/0000:00:1b.0", Device: "0x56a1", Driver: unbound},
	); err != nil {
		return err
	}
	if err := n.AddControlNode(64); err != nil {
		return fmt.Errorf("fixture Tricky: %w", err)
	}
	if err := n.WriteVersion(); err != nil {
		return fmt.Errorf("fixture Tricky: %w", err)
	}
	return nil
}

// MaxMany is the largest count Many accepts.
const MaxMany = 1024

// ManyPCI is the address of GPU i in Many: bus 0x01 + i/32, device i%32, function 0, so addresses
// sort in the same order as i ("0000:01:00.0", "0000:01:01.0", … "0000:01:1f.0", "0000:02:00.0").
func ManyPCI(i int) string {
	return fmt.Sprintf("0000:%02x:%02x.0", 1+i/32, i%32)
}

// Many adds count (0..MaxMany) GPUs for benchmarks: GPU i is card<i> + renderD<128+i>, i915,
// 0x8086:0x56a0, at ManyPCI(i) directly under pci0000:00, NUMA "0" for even i and "1" for odd i.
// From card128 on, card minors reuse numbers that render minors also use (no real kernel numbers
// that way), so consumers must tell devices apart by name or PCI address, not by dev number.
func Many(n *Node, count int) error {
	if count < 0 || count > MaxMany {
		return fmt.Errorf("fixture Many: count %d is outside 0..%d", count, MaxMany)
	}
	for i := range count {
		if err := n.AddGPU(GPU{
			Card: i, Render: 128 + i, PCI: ManyPCI(i), Device: "0x56a0", NUMA: strconv.Itoa(i % 2),
		}); err != nil {
			return fmt.Errorf("fixture Many: GPU %d: %w", i, err)
		}
	}
	return nil
}

// Demo is what `make demo` runs on (it works in HostDevices mode, without root):
//   - card0 + renderD128: i915, 0x8086:0x46a6, 0000:00:02.0, NUMA "-1", connectors card0-eDP-1 and
//     card0-DP-1 (exactly IGPU).
//   - card1 + renderD129: i915, 0x8086:0x56a0, 0000:03:00.0 behind
//     pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0, NUMA "0".
//   - card2 + renderD130: xe, 0x8086:0xe20b, 0000:07:00.0 behind
//     pci0000:00/0000:00:1c.0/0000:05:00.0/0000:06:01.0, NUMA "0".
func Demo(n *Node) error {
	return addAll(n, "Demo", igpu,
		GPU{Card: 1, PCI: "0000:03:00.0", Parent: bridgesA, Device: "0x56a0", NUMA: "0"},
		GPU{Card: 2, PCI: "0000:07:00.0", Parent: bridgesB, Device: "0xe20b", Driver: "xe", NUMA: "0"},
	)
}
