// Package nfd publishes the node's Intel GPUs as Node Feature Discovery
// labels. It keeps one feature file, <features.d>/intel-gpu-cdi, that the
// nfd-worker "local" source reads and turns into node labels.
//
// The labels, all in the gpu.intel.com namespace of the resources the
// plugin advertises, count the usable GPUs (those handed out to
// containers: nodes present, healthy, and for SR-IOV the VFs, not their
// PF); a listed GPU that is not usable now counts under unhealthy only;
// with --shared-dev-num a GPU counts once.
//
//	gpu.intel.com/count=3                    usable GPUs
//	gpu.intel.com/device-id.0x56a0.count=2   usable GPUs per PCI device ID
//	gpu.intel.com/drivers=i915.xe            their kernel drivers, sorted, joined by "."
//	gpu.intel.com/sriov-vfs=2                how many of them are SR-IOV VFs (left out when none)
//	gpu.intel.com/numa-nodes=0.1             their NUMA nodes, ascending (left out when none is known)
//	gpu.intel.com/unhealthy.count=1          GPUs listed but not handed out now (left out when none)
//	gpu.intel.com/unhealthy.reasons=wedged   why, as the health reasons, sorted, joined by "."
//
// A GPU is usable when its nodes are ready and the kernel says nothing
// against it (not wedged, no fatal PCIe error, still answering): a wedged
// GPU counts under unhealthy, not under count.
//
// A label whose value would be no valid Kubernetes label value (over 63
// characters, say) is left out rather than published wrong. With no usable
// GPU there is no count label (and with no GPU listed, no file at all): a
// node selector on gpu.intel.com/count matches exactly the nodes where the
// plugin serves a GPU. The file also goes when the plugin stops.
//
// nfd-master v0.13 and newer accept the gpu.intel.com namespace as it is
// (only *.kubernetes.io is denied by default); older releases need
// -extra-label-ns=gpu.intel.com.
package nfd

import (
	"bytes"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// Prefix starts every label name.
const Prefix = "gpu.intel.com/"

// Label names.
const (
	LabelCount     = Prefix + "count"
	LabelDrivers   = Prefix + "drivers"
	LabelSRIOVVFs  = Prefix + "sriov-vfs"
	LabelNUMANodes = Prefix + "numa-nodes"

	LabelUnhealthyCount   = Prefix + "unhealthy.count"
	LabelUnhealthyReasons = Prefix + "unhealthy.reasons"
)

// DeviceIDCountLabel names the count of usable GPUs with a PCI device ID.
func DeviceIDCountLabel(deviceID string) string {
	return Prefix + "device-id." + deviceID + ".count"
}

// Label is one node label.
type Label struct{ Name, Value string }

// The name part (after the prefix) and the value of a Kubernetes label: at
// most 63 characters, alphanumeric at both ends, -_. inside. A value may
// also be empty, which no label here ever is. Compiled on first use: the
// feature file is optional, and a plugin without it should not pay.
var labelPart = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
})

// GPU is one GPU the plugin lists, with its health.
type GPU struct {
	Device discovery.Device
	// Unhealthy is why the GPU is not handed out now; empty when it is.
	Unhealthy health.Reason
}

// Labels returns the labels for GPUs whose health is what discovery says
// of them; see LabelsOf.
func Labels(devs []discovery.Device) []Label {
	gpus := make([]GPU, len(devs))
	for i, d := range devs {
		gpus[i] = GPU{Device: d}
		if !d.Usable() {
			gpus[i].Unhealthy = health.ReasonNotReady
		}
	}
	return LabelsOf(gpus)
}

// LabelsOf returns the labels for the GPUs the plugin lists, sorted by
// name; nil when there is none.
func LabelsOf(gpus []GPU) []Label {
	count, vfs, unhealthy := 0, 0, 0
	byID := map[string]int{}
	var drivers, reasons []string
	var numa []int
	for i := range gpus {
		d := &gpus[i].Device
		if d.SRIOV.Role == discovery.RolePF {
			// Not handed out by design: its VFs are.
			continue
		}
		if r := gpus[i].Unhealthy; r != "" || !d.Usable() {
			if r == "" {
				r = health.ReasonNotReady
			}
			unhealthy++
			if !slices.Contains(reasons, string(r)) {
				reasons = append(reasons, string(r))
			}
			continue
		}
		count++
		byID[d.DeviceID]++
		if !slices.Contains(drivers, d.Driver) {
			drivers = append(drivers, d.Driver)
		}
		if d.NUMANode >= 0 && !slices.Contains(numa, d.NUMANode) {
			numa = append(numa, d.NUMANode)
		}
		if d.SRIOV.Role == discovery.RoleVF {
			vfs++
		}
	}
	if count == 0 && unhealthy == 0 {
		return nil
	}
	var out []Label
	add := func(name, value string) {
		if labelPart().MatchString(strings.TrimPrefix(name, Prefix)) && labelPart().MatchString(value) {
			out = append(out, Label{name, value})
		}
	}
	if unhealthy > 0 {
		add(LabelUnhealthyCount, strconv.Itoa(unhealthy))
		slices.Sort(reasons)
		add(LabelUnhealthyReasons, strings.Join(reasons, "."))
	}
	if count == 0 {
		slices.SortFunc(out, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
		return out
	}
	add(LabelCount, strconv.Itoa(count))
	for id, n := range byID {
		add(DeviceIDCountLabel(id), strconv.Itoa(n))
	}
	slices.Sort(drivers)
	add(LabelDrivers, strings.Join(drivers, "."))
	if vfs > 0 {
		add(LabelSRIOVVFs, strconv.Itoa(vfs))
	}
	if len(numa) > 0 {
		slices.Sort(numa)
		nodes := make([]string, len(numa))
		for i, n := range numa {
			nodes[i] = strconv.Itoa(n)
		}
		add(LabelNUMANodes, strings.Join(nodes, "."))
	}
	slices.SortFunc(out, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// header opens the feature file; NFD skips comment lines.
const header = "# Intel GPU labels from intel-gpu-cdi. Rewritten whenever the node's GPUs change; do not edit.\n"

// Render returns the feature file for labels: one name=value a line.
func Render(labels []Label) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, l := range labels {
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(l.Value)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
