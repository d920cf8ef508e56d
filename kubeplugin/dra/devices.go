package dra

import (
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// Attributes of a device, in the driver's domain (device.attributes["gpu.intel.com"]
// in CEL). Where Intel's DRA driver publishes the same fact, the name and
// type are its own.
const (
	// AttrDriver is the kernel driver: "i915" or "xe" (Intel: driver).
	AttrDriver resourceapi.QualifiedName = "driver"
	// AttrPCIID is the PCI device ID as sysfs spells it: "0x56a0" (Intel: pciId).
	AttrPCIID resourceapi.QualifiedName = "pciId"
	// AttrType is "gpu" for a whole GPU, "vf" for an SR-IOV virtual
	// function (Intel: type).
	AttrType resourceapi.QualifiedName = "type"
	// AttrSRIOV is true for a GPU that can create SR-IOV virtual functions
	// (Intel: sriov).
	AttrSRIOV resourceapi.QualifiedName = "sriov"
	// AttrSRIOVPF is a virtual function's physical function: "0000:03:00.0".
	AttrSRIOVPF resourceapi.QualifiedName = "sriovPF"
	// AttrCard and AttrRender are the GPU's DRM nodes: "card1", "renderD129".
	AttrCard   resourceapi.QualifiedName = "card"
	AttrRender resourceapi.QualifiedName = "render"
	// CapacityShares is how many claims may share a GPU, published when
	// sharing is on; each claim consumes one share unless it asks for more.
	CapacityShares resourceapi.QualifiedName = "shares"
)

// Values of AttrType.
const (
	TypeGPU = "gpu"
	TypeVF  = "vf"
)

// MaxDevicesPerSlice bounds the devices of one ResourceSlice: the API
// allows 128, but only 64 when a device has taints, and an unhealthy GPU
// has one.
const MaxDevicesPerSlice = resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures

// DeviceName is a GPU's device name in the ResourceSlice, made from its
// PCI address so that it survives reboots (card numbers do not): a device
// name must be a DNS label, so ':' and '.' become '-', and a label may not
// start with a digit: 0000:03:00.0 is gpu-0000-03-00-0.
func DeviceName(pci string) string {
	return "gpu-" + strings.NewReplacer(":", "-", ".", "-").Replace(pci)
}

// inventory is a node snapshot as the DRA driver serves it: the devices to
// publish and, by device name, the GPU behind each.
type inventory struct {
	byName    map[string]*node.GPU
	resources resourceslice.DriverResources
}

// pcieRoots finds a GPU's PCIe root complex. It reads one sysfs link per
// new PCI address and remembers it: the root of an address cannot change
// while the function is on the bus.
type pcieRoots struct {
	sysfsRoot string
	known     map[string]string
}

func (r *pcieRoots) of(pci string) string {
	if root, ok := r.known[pci]; ok {
		return root
	}
	root := ""
	if a, err := deviceattribute.GetPCIeRootAttributeByPCIBusID(pci, deviceattribute.WithFSFromRoot(r.sysfsRoot)); err == nil && a.Value.StringValue != nil {
		root = *a.Value.StringValue
	}
	r.known[pci] = root
	return root
}

// forget drops what is known of addresses no longer in the snapshot, so a
// function that comes back is read again.
func (r *pcieRoots) forget(s *node.Snapshot) {
	for pci := range r.known {
		if s.GPU(pci) == nil {
			delete(r.known, pci)
		}
	}
}

// newInventory builds the devices of a snapshot: one per GPU the device
// plugin would hand out, healthy or not (an unhealthy one carries a taint,
// so that the scheduler does not pick it and the pods that have it see
// why), in PCI order.
func newInventory(s *node.Snapshot, c *Config, roots *pcieRoots) *inventory {
	inv := &inventory{byName: make(map[string]*node.GPU, len(s.GPUs))}
	devices := make([]resourceapi.Device, 0, len(s.GPUs))
	for _, g := range s.GPUs {
		d := device(g, c, roots.of(g.PCIAddress()))
		inv.byName[d.Name] = g
		devices = append(devices, d)
	}
	roots.forget(s)
	// A pool with no device still gets a slice: an empty pool tells the
	// scheduler the driver runs and has nothing, where no pool says nothing.
	slices := []resourceslice.Slice{{Devices: []resourceapi.Device{}}}
	if len(devices) > 0 {
		slices = slices[:0]
		for len(devices) > 0 {
			n := min(len(devices), MaxDevicesPerSlice)
			slices = append(slices, resourceslice.Slice{Devices: devices[:n:n]})
			devices = devices[n:]
		}
	}
	inv.resources = resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{c.NodeName: {Slices: slices}}}
	return inv
}

// device describes one GPU. pcieRoot may be empty when sysfs does not
// show it.
func device(g *node.GPU, c *Config, pcieRoot string) resourceapi.Device {
	d := &g.Device
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrDriver: {StringValue: ptr.To(g.Driver)},
		AttrPCIID:  {StringValue: ptr.To(d.DeviceID)},
		AttrType:   {StringValue: ptr.To(TypeGPU)},
		AttrSRIOV:  {BoolValue: ptr.To(d.SRIOV.TotalVFs > 0)},
		AttrCard:   {StringValue: ptr.To(d.Card)},
	}
	if d.SRIOV.Role == discovery.RoleVF {
		attrs[AttrType] = resourceapi.DeviceAttribute{StringValue: ptr.To(TypeVF)}
		attrs[AttrSRIOVPF] = resourceapi.DeviceAttribute{StringValue: ptr.To(d.SRIOV.PF)}
	}
	if d.Render != "" {
		attrs[AttrRender] = resourceapi.DeviceAttribute{StringValue: ptr.To(d.Render)}
	}
	if a, err := deviceattribute.GetPCIBusIDAttribute(d.PCIAddress); err == nil {
		attrs[a.Name] = a.Value
	}
	if pcieRoot != "" {
		attrs[deviceattribute.StandardDeviceAttributePCIeRoot] = resourceapi.DeviceAttribute{StringValue: ptr.To(pcieRoot)}
	}
	// A device without NUMA affinity publishes no NUMA node: -1 would match
	// every other such device in a matchAttribute constraint.
	if a, err := deviceattribute.GetNUMANodeAttribute(d.NUMANode, deviceattribute.ScalarAttribute); err == nil {
		attrs[a.Name] = a.Value
	}
	out := resourceapi.Device{Name: DeviceName(d.PCIAddress), Attributes: attrs}
	if c.SharedDevNum > 1 {
		n := int64(c.SharedDevNum)
		out.AllowMultipleAllocations = ptr.To(true)
		out.Capacity = map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			CapacityShares: {
				Value: *resource.NewQuantity(n, resource.DecimalSI),
				RequestPolicy: &resourceapi.CapacityRequestPolicy{
					Default: resource.NewQuantity(1, resource.DecimalSI),
					ValidRange: &resourceapi.CapacityRequestPolicyRange{
						Min:  resource.NewQuantity(1, resource.DecimalSI),
						Max:  resource.NewQuantity(n, resource.DecimalSI),
						Step: resource.NewQuantity(1, resource.DecimalSI),
					},
				},
			},
		}
	}
	if !g.Healthy {
		out.Taints = []resourceapi.DeviceTaint{{
			Key:    c.taintKey(),
			Value:  taintValue(g),
			Effect: resourceapi.DeviceTaintEffectNoSchedule,
		}}
	}
	return out
}

// taintValue says why a GPU is tainted, as a toleration would match it:
// the health checker's reason (wedged, aer-fatal, not-ready, …) when there
// is one, else the reason's words as a label value.
func taintValue(g *node.GPU) string {
	if g.Health != nil && g.Health.Reason != "" {
		return string(g.Health.Reason)
	}
	return labelValue(g.Reason)
}

// maxLabelValue is the longest label value, which a taint value must be.
const maxLabelValue = 63

// labelValue turns a reason ("/dev/dri/card1 is missing") into a label
// value, as a taint value must be ("dev-dri-card1-is-missing"): letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit, at
// most 63 bytes. The whole reason goes to the health stream.
func labelValue(reason string) string {
	var b strings.Builder
	dash := false
	for _, c := range reason {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.':
			b.WriteRune(c)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	v := b.String()
	if len(v) > maxLabelValue {
		v = v[:maxLabelValue]
	}
	return strings.TrimFunc(v, func(c rune) bool { return !isAlnum(c) })
}

func isAlnum(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
