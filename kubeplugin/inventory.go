package kubeplugin

import (
	"slices"
	"strconv"
	"strings"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

// gpu is one GPU as the plugin hands it out.
type gpu struct {
	dev      discovery.Device
	resource string
	healthy  bool
	// cdiName is the qualified CDI name by PCI address, stable across
	// reboots: intel.com/gpu=0000:03:00.0.
	cdiName string
}

// entry is one kubelet device ID: a GPU, or one share of it.
type entry struct {
	id    string
	gpu   *gpu
	share int
}

// snapshot is an immutable view of the node's GPUs. Every RPC reads the
// current snapshot and nothing else, so Allocate never touches the
// filesystem and never waits for a rescan.
type snapshot struct {
	gpus  []*gpu // in PCI order
	byID  map[string]*entry
	lists map[string][]*pluginapi.Device
	// monitoringHealthy is whether the monitoring device is usable.
	monitoringHealthy bool
}

// resourceFor maps a kernel driver to the resource it is advertised as.
func resourceFor(driver string) string {
	switch driver {
	case discovery.DriverI915:
		return ResourceI915
	case discovery.DriverXe:
		return ResourceXe
	}
	return ""
}

// deviceID builds a kubelet device ID from the PCI address, so IDs survive
// restarts and reboots (card numbers do not). At most 12+1+4 characters.
func deviceID(pci string, share, shares int) string {
	if shares == 1 {
		return pci
	}
	return pci + "-" + strconv.Itoa(share)
}

// gone says whether a GPU that left /sys/class/drm also left the PCI bus.
type gone func(pci string) bool

// buildSnapshot turns a scan into what the kubelet sees. prev lets a GPU
// whose driver was unbound stay listed as Unhealthy (its card vanishes from
// the DRM class but the PCI function remains) instead of disappearing.
func buildSnapshot(devs []discovery.Device, prev *snapshot, c *Config, isGone gone) *snapshot {
	s := &snapshot{byID: map[string]*entry{}, lists: map[string][]*pluginapi.Device{}}
	seen := map[string]bool{}
	for i := range devs {
		d := devs[i]
		if !c.wanted(&d) || d.SRIOV.Role == discovery.RolePF {
			// A PF with VFs enabled is not handed out: its VFs are.
			continue
		}
		res := resourceFor(d.Driver)
		if res == "" && prev != nil {
			if old := prev.gpu(d.PCIAddress); old != nil {
				res = old.resource
			}
		}
		if res == "" {
			continue
		}
		seen[d.PCIAddress] = true
		s.gpus = append(s.gpus, &gpu{dev: d, resource: res, healthy: d.Usable(), cdiName: c.Builder.QualifiedName(d.PCIAddress)})
	}
	if prev != nil {
		for _, old := range prev.gpus {
			if seen[old.dev.PCIAddress] || isGone(old.dev.PCIAddress) {
				continue
			}
			g := *old
			g.healthy = false
			g.dev.Ready, g.dev.Reason = false, "card left the DRM class; PCI function still present"
			s.gpus = append(s.gpus, &g)
		}
	}
	slices.SortFunc(s.gpus, func(a, b *gpu) int { return strings.Compare(a.dev.PCIAddress, b.dev.PCIAddress) })

	for _, g := range s.gpus {
		for k := range c.SharedDevNum {
			e := &entry{id: deviceID(g.dev.PCIAddress, k, c.SharedDevNum), gpu: g, share: k}
			s.byID[e.id] = e
			s.lists[g.resource] = append(s.lists[g.resource], apiDevice(e))
		}
		s.monitoringHealthy = s.monitoringHealthy || g.healthy
	}
	if c.EnableMonitoring && len(s.gpus) > 0 {
		health := pluginapi.Healthy
		if !s.monitoringHealthy {
			health = pluginapi.Unhealthy
		}
		s.lists[ResourceMonitoring] = []*pluginapi.Device{{ID: MonitoringDeviceID, Health: health}}
	}
	return s
}

func apiDevice(e *entry) *pluginapi.Device {
	d := &pluginapi.Device{ID: e.id, Health: pluginapi.Healthy}
	if !e.gpu.healthy {
		d.Health = pluginapi.Unhealthy
	}
	if n := e.gpu.dev.NUMANode; n >= 0 {
		d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(n)}}}
	}
	return d
}

// wanted applies --allow-ids / --deny-ids.
func (c *Config) wanted(d *discovery.Device) bool {
	if len(c.AllowIDs) > 0 {
		return slices.Contains(c.AllowIDs, d.DeviceID)
	}
	return !slices.Contains(c.DenyIDs, d.DeviceID)
}

func (s *snapshot) gpu(pci string) *gpu {
	for _, g := range s.gpus {
		if g.dev.PCIAddress == pci {
			return g
		}
	}
	return nil
}

// specDevices returns the GPUs that belong in the CDI spec: the healthy
// ones. A GPU without its nodes cannot be injected anyway.
func (s *snapshot) specDevices() []discovery.Device {
	var out []discovery.Device
	for _, g := range s.gpus {
		if g.healthy {
			out = append(out, g.dev)
		}
	}
	return out
}

// union returns the healthy GPUs of next and prev, each once: the spec is
// written with both before a change is published, so that neither an added
// nor a removed GPU is ever advertised without its spec on disk. When a new
// GPU took the card name of a leaving one, the new one keeps the name.
func union(next, prev *snapshot) []discovery.Device {
	devs := next.specDevices()
	pcis, cards := map[string]bool{}, map[string]bool{}
	for _, d := range devs {
		pcis[d.PCIAddress], cards[d.Card] = true, true
	}
	for _, d := range prev.specDevices() {
		if !pcis[d.PCIAddress] && !cards[d.Card] {
			devs = append(devs, d)
		}
	}
	slices.SortFunc(devs, func(x, y discovery.Device) int { return strings.Compare(x.PCIAddress, y.PCIAddress) })
	return devs
}

// sameList reports whether two device lists would look the same to the kubelet.
func sameList(a, b []*pluginapi.Device) bool {
	return slices.EqualFunc(a, b, func(x, y *pluginapi.Device) bool {
		if x.ID != y.ID || x.Health != y.Health {
			return false
		}
		return numaOf(x) == numaOf(y)
	})
}

func numaOf(d *pluginapi.Device) int64 {
	if d.Topology == nil || len(d.Topology.Nodes) == 0 {
		return -1
	}
	return d.Topology.Nodes[0].ID
}
