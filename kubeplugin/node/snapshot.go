package node

import (
	"reflect"
	"slices"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// GPU is one GPU the node hands out, healthy or not.
type GPU struct {
	// Device is what the last scan found. For a GPU whose card left the
	// DRM class while its PCI function stayed, it is the last device seen.
	Device discovery.Device
	// Driver is the kernel driver, i915 or xe. It outlives an unbind, so
	// that a GPU without a driver stays under the name it was known by.
	Driver string
	// Healthy is true when the GPU can be handed out: its nodes are ready
	// and the kernel says nothing against it.
	Healthy bool
	// Reason says why the GPU is unhealthy; empty when it is healthy.
	Reason string
	// Health is what the node's health checker says of the GPU, counters
	// included; nil without a checker, or for a GPU whose nodes are gone.
	Health *health.Status
	// CDIName is the GPU's fully qualified CDI name by PCI address, stable
	// across reboots: intel.com/gpu=0000:03:00.0.
	CDIName string
}

// PCIAddress is the GPU's PCI address, its identity.
func (g *GPU) PCIAddress() string { return g.Device.PCIAddress }

// Snapshot is an immutable view of the node's GPUs. Subscribers keep it
// and answer from it alone; they must not modify it.
type Snapshot struct {
	// GPUs are the GPUs handed out, in PCI address order: every Intel GPU
	// the allow/deny lists let through, except SR-IOV physical functions
	// whose virtual functions are handed out instead.
	GPUs []*GPU
	// AllCDIName is the qualified name of the spec's device that holds
	// every healthy GPU: intel.com/gpu=all.
	AllCDIName string
	// ByPathLinks says whether containers get each GPU's by-path links
	// (the spec's by-path mode is not none).
	ByPathLinks bool
	// Generation counts the snapshots a node has published, from 1.
	Generation uint64
}

// GPU returns the GPU at a PCI address, or nil.
func (s *Snapshot) GPU(pci string) *GPU {
	i, ok := slices.BinarySearchFunc(s.GPUs, pci, func(g *GPU, pci string) int { return strings.Compare(g.Device.PCIAddress, pci) })
	if !ok {
		return nil
	}
	return s.GPUs[i]
}

// Healthy returns the healthy GPUs, in PCI order.
func (s *Snapshot) Healthy() []*GPU {
	out := make([]*GPU, 0, len(s.GPUs))
	for _, g := range s.GPUs {
		if g.Healthy {
			out = append(out, g)
		}
	}
	return out
}

// specDevices returns the devices that belong in the CDI spec: the GPUs
// whose nodes are ready. A GPU the kernel calls unwell stays in the spec:
// it is no longer handed out, but a container it was given before can
// still be started with it; a GPU without its nodes cannot be injected.
func (s *Snapshot) specDevices() []discovery.Device {
	out := make([]discovery.Device, 0, len(s.GPUs))
	for _, g := range s.GPUs {
		if g.Device.Usable() {
			out = append(out, g.Device)
		}
	}
	return out
}

// lingerReason is why a GPU whose card left the DRM class is still listed.
const lingerReason = "card left the DRM class; PCI function still present"

// gone says whether a PCI function left the bus.
type gone func(pci string) bool

// build turns a scan into a snapshot. prev lets a GPU whose driver was
// unbound stay listed as unhealthy (its card vanishes from the DRM class
// but the PCI function remains) instead of disappearing, under the driver
// it had.
func build(devs []discovery.Device, statuses []health.Status, prev *Snapshot, c *Config, isGone gone, qualify func(string) string) *Snapshot {
	s := &Snapshot{
		AllCDIName:  qualify(allDevice),
		ByPathLinks: c.Builder.ByPathMode() != spec.ByPathNone,
		Generation:  prev.Generation + 1,
	}
	s.GPUs = make([]*GPU, 0, len(devs)+len(prev.GPUs))
	seen := make(map[string]bool, len(devs))
	for i := range devs {
		d := devs[i]
		// Seen in the DRM class, so it does not linger as unhealthy below,
		// even when it is no longer handed out: a PF whose VFs were just
		// enabled still has its card.
		seen[d.PCIAddress] = true
		if !c.wanted(&d) || d.SRIOV.Role == discovery.RolePF {
			// A PF with VFs enabled is not handed out: its VFs are.
			continue
		}
		driver := d.Driver
		if driver == "" {
			if old := prev.GPU(d.PCIAddress); old != nil {
				driver = old.Driver
			}
		}
		if driver == "" {
			// Never bound while we watched: nothing says what it would be.
			continue
		}
		g := &GPU{Device: d, Driver: driver, Healthy: d.Usable(), Reason: d.Reason, CDIName: qualify(d.PCIAddress)}
		switch {
		case statuses == nil:
		case d.Usable():
			st := statuses[i]
			g.Health = &st
			if !st.Healthy {
				g.Healthy, g.Reason = false, st.Message
			}
		default:
			g.Health = notReady(&d, d.Reason)
		}
		s.GPUs = append(s.GPUs, g)
	}
	for _, old := range prev.GPUs {
		if seen[old.Device.PCIAddress] || isGone(old.Device.PCIAddress) {
			continue
		}
		g := *old
		g.Healthy, g.Reason = false, lingerReason
		g.Device.Ready, g.Device.Reason = false, lingerReason
		if g.Health != nil {
			g.Health = notReady(&g.Device, lingerReason)
		}
		s.GPUs = append(s.GPUs, &g)
	}
	slices.SortFunc(s.GPUs, func(a, b *GPU) int { return strings.Compare(a.Device.PCIAddress, b.Device.PCIAddress) })
	return s
}

// union returns the spec devices of the next snapshot (next, from
// specDevices) and those of prev, each once: the spec is written with both
// before a change is published, so that neither an added nor a removed GPU
// is ever advertised without its spec on disk. When a new GPU took the
// card name of a leaving one, the new one keeps the name. With nothing
// leaving it returns next itself.
func union(next []discovery.Device, prev *Snapshot) []discovery.Device {
	old := prev.specDevices()
	if len(old) == 0 {
		return next
	}
	pcis, cards := make(map[string]bool, len(next)), make(map[string]bool, len(next))
	for _, d := range next {
		pcis[d.PCIAddress], cards[d.Card] = true, true
	}
	var leaving []discovery.Device
	for _, d := range old {
		if !pcis[d.PCIAddress] && !cards[d.Card] {
			leaving = append(leaving, d)
		}
	}
	if len(leaving) == 0 {
		return next
	}
	devs := slices.Concat(next, leaving)
	slices.SortFunc(devs, func(x, y discovery.Device) int { return strings.Compare(x.PCIAddress, y.PCIAddress) })
	return devs
}

// sameGPUs reports whether two snapshots hold the same GPUs in the same
// state, so that subscribers can skip work on a resync that found nothing
// new.
func sameGPUs(a, b *Snapshot) bool {
	return slices.EqualFunc(a.GPUs, b.GPUs, func(x, y *GPU) bool {
		return x.Healthy == y.Healthy && x.Reason == y.Reason && x.Driver == y.Driver &&
			x.CDIName == y.CDIName && reflect.DeepEqual(x.Device, y.Device) && reflect.DeepEqual(x.Health, y.Health)
	})
}

// notReady is the health of a GPU whose nodes cannot be handed out, in the
// health checker's terms.
func notReady(d *discovery.Device, why string) *health.Status {
	return &health.Status{PCIAddress: d.PCIAddress, Card: d.Card, Reason: health.ReasonNotReady, Message: why}
}
