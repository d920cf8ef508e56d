package nfd_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/nfd"
)

// gpu is a usable GPU; edits change it.
func gpu(pci, id, driver string, numa int, edits ...func(*discovery.Device)) discovery.Device {
	d := discovery.Device{PCIAddress: pci, DeviceID: id, Driver: driver, NUMANode: numa, Ready: true, SRIOV: discovery.SRIOV{Role: discovery.RoleNone}}
	for _, e := range edits {
		e(&d)
	}
	return d
}

func notReady(d *discovery.Device) { d.Ready, d.Reason = false, "no /dev/dri/card1" }
func vf(d *discovery.Device)       { d.SRIOV = discovery.SRIOV{Role: discovery.RoleVF, PF: "0000:03:00.0"} }

func TestLabels(t *testing.T) {
	tests := []struct {
		name string
		devs []discovery.Device
		want []nfd.Label
	}{
		{
			name: "no GPU gives no label",
			devs: nil,
			want: nil,
		},
		{
			name: "GPUs none of which is usable give only the unhealthy labels, so count selects no node",
			devs: []discovery.Device{gpu("0000:03:00.0", "0x56a0", "i915", 0, notReady)},
			want: []nfd.Label{
				{"gpu.intel.com/unhealthy.count", "1"},
				{"gpu.intel.com/unhealthy.reasons", "not-ready"},
			},
		},
		{
			name: "an integrated GPU with no NUMA node leaves numa-nodes out",
			devs: []discovery.Device{gpu("0000:00:02.0", "0x46a6", "i915", -1)},
			want: []nfd.Label{
				{"gpu.intel.com/count", "1"},
				{"gpu.intel.com/device-id.0x46a6.count", "1"},
				{"gpu.intel.com/drivers", "i915"},
			},
		},
		{
			name: "a mixed node counts per device ID, lists both drivers and the known NUMA nodes, and counts the unusable GPU apart",
			devs: []discovery.Device{
				gpu("0000:00:02.0", "0x46a6", "i915", -1),
				gpu("0000:03:00.0", "0x56a0", "i915", 1),
				gpu("0000:05:00.0", "0x56a0", "i915", 0),
				gpu("0000:06:00.0", "0x56a0", "i915", 2, notReady),
				gpu("0000:07:00.0", "0xe20b", "xe", 0),
			},
			want: []nfd.Label{
				{"gpu.intel.com/count", "4"},
				{"gpu.intel.com/device-id.0x46a6.count", "1"},
				{"gpu.intel.com/device-id.0x56a0.count", "2"},
				{"gpu.intel.com/device-id.0xe20b.count", "1"},
				{"gpu.intel.com/drivers", "i915.xe"},
				{"gpu.intel.com/numa-nodes", "0.1"},
				{"gpu.intel.com/unhealthy.count", "1"},
				{"gpu.intel.com/unhealthy.reasons", "not-ready"},
			},
		},
		{
			name: "SR-IOV VFs are counted and also counted as VFs",
			devs: []discovery.Device{
				gpu("0000:03:00.1", "0x56c0", "i915", 1, vf),
				gpu("0000:03:00.2", "0x56c0", "i915", 1, vf),
			},
			want: []nfd.Label{
				{"gpu.intel.com/count", "2"},
				{"gpu.intel.com/device-id.0x56c0.count", "2"},
				{"gpu.intel.com/drivers", "i915"},
				{"gpu.intel.com/numa-nodes", "1"},
				{"gpu.intel.com/sriov-vfs", "2"},
			},
		},
		{
			name: "a device ID that cannot be a label name is left out, the rest stays",
			devs: []discovery.Device{gpu("0000:03:00.0", "0x56a0/bad", "i915", -1)},
			want: []nfd.Label{
				{"gpu.intel.com/count", "1"},
				{"gpu.intel.com/drivers", "i915"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, nfd.Labels(tc.devs))
		})
	}
}

func TestANUMAListTooLongForALabelValueIsLeftOut(t *testing.T) {
	var devs []discovery.Device
	for i := range 40 {
		devs = append(devs, gpu("0000:"+strconv.Itoa(10+i)+":00.0", "0x56a0", "i915", i))
	}
	for _, l := range nfd.Labels(devs) {
		assert.NotEqual(t, nfd.LabelNUMANodes, l.Name, "0.1.….39 is over 63 characters")
		assert.LessOrEqual(t, len(l.Value), 63)
	}
}

func TestRenderWritesOneNameValueALineAfterAComment(t *testing.T) {
	got := string(nfd.Render([]nfd.Label{{"gpu.intel.com/count", "1"}, {"gpu.intel.com/drivers", "xe"}}))
	assert.Equal(t, "# Intel GPU labels from intel-gpu-cdi. Rewritten whenever the node's GPUs change; do not edit.\n"+
		"gpu.intel.com/count=1\n"+
		"gpu.intel.com/drivers=xe\n", got)
}

func TestLabelsOfCountWhatTheKernelCallsUnwellApart(t *testing.T) {
	got := nfd.LabelsOf([]nfd.GPU{
		{Device: gpu("0000:00:02.0", "0x46a6", "i915", -1)},
		{Device: gpu("0000:03:00.0", "0x56a0", "i915", 0), Unhealthy: health.ReasonWedged},
		{Device: gpu("0000:05:00.0", "0x56a0", "i915", 0), Unhealthy: health.ReasonAERFatal},
		{Device: gpu("0000:06:00.0", "0x56a0", "i915", 0, notReady)},
		{Device: gpu("0000:07:00.0", "0x56c0", "i915", 0, func(d *discovery.Device) {
			d.SRIOV = discovery.SRIOV{Role: discovery.RolePF, NumVFs: 2}
			d.Reason = "physical function with 2 VFs enabled"
		})},
	})
	assert.Equal(t, []nfd.Label{
		{"gpu.intel.com/count", "1"},
		{"gpu.intel.com/device-id.0x46a6.count", "1"},
		{"gpu.intel.com/drivers", "i915"},
		{"gpu.intel.com/unhealthy.count", "3"},
		{"gpu.intel.com/unhealthy.reasons", "aer-fatal.not-ready.wedged"},
	}, got, "a PF whose VFs are handed out is neither")
}
