package deviceplugin

import (
	"strconv"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// entry is one kubelet device ID: a GPU, or one share of it.
type entry struct {
	id       string
	gpu      *node.GPU
	resource string
	share    int
}

// inventory is the node's snapshot as the kubelet sees it: device IDs per
// resource. Every RPC reads the current inventory and nothing else, so
// Allocate never touches the filesystem and never waits for a rescan.
type inventory struct {
	node  *node.Snapshot
	byID  map[string]*entry
	lists map[string][]*pluginapi.Device
	// monitoringHealthy is whether the monitoring device is usable.
	monitoringHealthy bool
}

func emptyInventory() *inventory {
	return &inventory{node: &node.Snapshot{}, byID: map[string]*entry{}, lists: map[string][]*pluginapi.Device{}}
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

// newInventory lists every GPU of the snapshot under its resource, once
// per share.
func newInventory(s *node.Snapshot, c *Config) *inventory {
	inv := &inventory{node: s, byID: map[string]*entry{}, lists: map[string][]*pluginapi.Device{}}
	for _, g := range s.GPUs {
		res := resourceFor(g.Driver)
		if res == "" {
			continue
		}
		for k := range c.SharedDevNum {
			e := &entry{id: deviceID(g.PCIAddress(), k, c.SharedDevNum), gpu: g, resource: res, share: k}
			inv.byID[e.id] = e
			inv.lists[res] = append(inv.lists[res], apiDevice(e))
		}
		inv.monitoringHealthy = inv.monitoringHealthy || g.Healthy
	}
	if c.EnableMonitoring && len(s.GPUs) > 0 {
		health := pluginapi.Healthy
		if !inv.monitoringHealthy {
			health = pluginapi.Unhealthy
		}
		inv.lists[ResourceMonitoring] = []*pluginapi.Device{{ID: MonitoringDeviceID, Health: health}}
	}
	return inv
}

func apiDevice(e *entry) *pluginapi.Device {
	d := &pluginapi.Device{ID: e.id, Health: pluginapi.Healthy}
	if !e.gpu.Healthy {
		d.Health = pluginapi.Unhealthy
	}
	if n := e.gpu.Device.NUMANode; n >= 0 {
		d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(n)}}}
	}
	return d
}

// sameList reports whether two device lists would look the same to the kubelet.
func sameList(a, b []*pluginapi.Device) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Health != y.Health || numaOf(x) != numaOf(y) {
			return false
		}
	}
	return true
}

func numaOf(d *pluginapi.Device) int64 {
	if d.Topology == nil || len(d.Topology.Nodes) == 0 {
		return -1
	}
	return d.Topology.Nodes[0].ID
}
