package dra_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

type attrs = map[resourceapi.QualifiedName]resourceapi.DeviceAttribute

func str(s string) resourceapi.DeviceAttribute {
	return resourceapi.DeviceAttribute{StringValue: ptr.To(s)}
}
func boolean(b bool) resourceapi.DeviceAttribute {
	return resourceapi.DeviceAttribute{BoolValue: ptr.To(b)}
}
func integer(i int64) resourceapi.DeviceAttribute {
	return resourceapi.DeviceAttribute{IntValue: ptr.To(i)}
}

const (
	pciBusID = "resource.kubernetes.io/pciBusID"
	pcieRoot = "resource.kubernetes.io/pcieRoot"
	numaNode = "resource.kubernetes.io/numaNode"
)

func TestResourceSlicesDescribeEveryGPUTheDevicePluginWouldHandOut(t *testing.T) {
	tests := []struct {
		name     string
		fixtures []func(*fakenode.Node) error
		want     map[string]attrs
		tainted  map[string]string // device → taint value
	}{
		{
			name:     "an integrated i915, a discrete i915 and a discrete xe",
			fixtures: []func(*fakenode.Node) error{fakenode.Demo},
			want: map[string]attrs{
				"gpu-0000-00-02-0": {
					"driver": str("i915"), "pciId": str("0x46a6"), "type": str("gpu"), "sriov": boolean(false),
					"card": str("card0"), "render": str("renderD128"),
					pciBusID: str("0000:00:02.0"), pcieRoot: str("pci0000:00"),
				},
				"gpu-0000-03-00-0": {
					"driver": str("i915"), "pciId": str("0x56a0"), "type": str("gpu"), "sriov": boolean(false),
					"card": str("card1"), "render": str("renderD129"),
					pciBusID: str("0000:03:00.0"), pcieRoot: str("pci0000:00"), numaNode: integer(0),
				},
				"gpu-0000-07-00-0": {
					"driver": str("xe"), "pciId": str("0xe20b"), "type": str("gpu"), "sriov": boolean(false),
					"card": str("card2"), "render": str("renderD130"),
					pciBusID: str("0000:07:00.0"), pcieRoot: str("pci0000:00"), numaNode: integer(0),
				},
			},
		},
		{
			name:     "SR-IOV: the two VFs and not their PF",
			fixtures: []func(*fakenode.Node) error{fakenode.SRIOV},
			want: map[string]attrs{
				"gpu-0000-03-00-1": {
					"driver": str("i915"), "pciId": str("0x56c0"), "type": str("vf"), "sriov": boolean(false), "sriovPF": str("0000:03:00.0"),
					"card": str("card2"), "render": str("renderD130"),
					pciBusID: str("0000:03:00.1"), pcieRoot: str("pci0000:00"), numaNode: integer(1),
				},
				"gpu-0000-03-00-2": {
					"driver": str("i915"), "pciId": str("0x56c0"), "type": str("vf"), "sriov": boolean(false), "sriovPF": str("0000:03:00.0"),
					"card": str("card3"), "render": str("renderD131"),
					pciBusID: str("0000:03:00.2"), pcieRoot: str("pci0000:00"), numaNode: integer(1),
				},
			},
		},
		{
			name: "an SR-IOV capable GPU without VFs enabled is a GPU, and says it can",
			fixtures: []func(*fakenode.Node) error{func(n *fakenode.Node) error {
				return n.AddGPU(fakenode.GPU{Card: 1, PCI: "0000:03:00.0", Device: "0x56c0", TotalVFs: 7})
			}},
			want: map[string]attrs{
				"gpu-0000-03-00-0": {
					"driver": str("i915"), "pciId": str("0x56c0"), "type": str("gpu"), "sriov": boolean(true),
					"card": str("card1"), "render": str("renderD129"),
					pciBusID: str("0000:03:00.0"), pcieRoot: str("pci0000:00"),
				},
			},
		},
		{
			name:     "other vendors, framebuffers and unbound functions are left out; a GPU without nodes is tainted",
			fixtures: []func(*fakenode.Node) error{fakenode.Tricky},
			want: map[string]attrs{
				"gpu-0000-00-02-0": {
					"driver": str("i915"), "pciId": str("0x46a6"), "type": str("gpu"), "sriov": boolean(false),
					"card": str("card2"), "render": str("renderD129"),
					pciBusID: str("0000:00:02.0"), pcieRoot: str("pci0000:00"),
				},
				"gpu-0000-03-00-0": {
					"driver": str("xe"), "pciId": str("0xe20b"), "type": str("gpu"), "sriov": boolean(false),
					"card": str("card10"), "render": str("renderD131"),
					pciBusID: str("0000:03:00.0"), pcieRoot: str("pci0000:00"), numaNode: integer(0),
				},
				"gpu-0000-05-00-0": {
					"driver": str("i915"), "pciId": str("0x56a0"), "type": str("gpu"), "sriov": boolean(false),
					"card": str("card3"), "render": str("renderD130"),
					pciBusID: str("0000:05:00.0"), pcieRoot: str("pci0000:00"), numaNode: integer(0),
				},
			},
			tainted: map[string]string{"gpu-0000-05-00-0": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRig(t, tt.fixtures)
			devs := r.devices("every GPU is published", func(d []resourceapi.Device) bool { return len(d) == len(tt.want) })
			got := byName(devs)
			for name, want := range tt.want {
				d, ok := got[name]
				if !assert.True(t, ok, "device %s missing; have %v", name, keys(got)) {
					continue
				}
				assert.Equal(t, want, d.Attributes, "attributes of %s", name)
				assert.Nil(t, d.AllowMultipleAllocations, "%s: shared, though sharing is off", name)
				assert.Empty(t, d.Capacity, "%s: capacity, though sharing is off", name)
				if _, bad := tt.tainted[name]; bad {
					require.Len(t, d.Taints, 1, "taints of %s", name)
					assert.Equal(t, "gpu.intel.com/unhealthy", d.Taints[0].Key)
					assert.Equal(t, resourceapi.DeviceTaintEffectNoSchedule, d.Taints[0].Effect)
					assert.NotEmpty(t, d.Taints[0].Value, "the taint says why")
				} else {
					assert.Empty(t, d.Taints, "taints of healthy %s", name)
				}
			}
			slices, err := r.client.ResourceV1().ResourceSlices().List(r.ctx(), listAll)
			require.NoError(t, err)
			require.Len(t, slices.Items, 1)
			s := slices.Items[0].Spec
			assert.Equal(t, "gpu.intel.com", s.Driver)
			assert.Equal(t, dratest.NodeName, s.Pool.Name)
			assert.Equal(t, dratest.NodeName, ptr.Deref(s.NodeName, ""))
		})
	}
}

func TestSharingPublishesConsumableCapacity(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe}, dratest.WithSharedDevNum(4))
	devs := r.devices("both GPUs are published", func(d []resourceapi.Device) bool { return len(d) == 2 })
	for _, d := range devs {
		assert.Equal(t, ptr.To(true), d.AllowMultipleAllocations, d.Name)
		c, ok := d.Capacity[dra.CapacityShares]
		require.True(t, ok, "%s has no shares capacity: %v", d.Name, d.Capacity)
		assert.Equal(t, int64(4), c.Value.Value())
		require.NotNil(t, c.RequestPolicy)
		one := resource.NewQuantity(1, resource.DecimalSI)
		assert.True(t, c.RequestPolicy.Default.Equal(*one), "default %v", c.RequestPolicy.Default)
		require.NotNil(t, c.RequestPolicy.ValidRange)
		assert.True(t, c.RequestPolicy.ValidRange.Min.Equal(*one))
		assert.Equal(t, int64(4), c.RequestPolicy.ValidRange.Max.Value())
		assert.True(t, c.RequestPolicy.ValidRange.Step.Equal(*one))
	}
}

func TestAHundredGPUsAreSplitIntoSlicesOfAtMostSixtyFour(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{func(n *fakenode.Node) error { return fakenode.Many(n, 100) }})
	devs := r.devices("100 GPUs are published", func(d []resourceapi.Device) bool { return len(d) == 100 })
	slices, err := r.client.ResourceV1().ResourceSlices().List(r.ctx(), listAll)
	require.NoError(t, err)
	require.Len(t, slices.Items, 2)
	for _, s := range slices.Items {
		assert.LessOrEqual(t, len(s.Spec.Devices), dra.MaxDevicesPerSlice)
		assert.Equal(t, int64(2), s.Spec.Pool.ResourceSliceCount)
	}
	// Slices are ordered by name, devices within by PCI address: the
	// scheduler tries them in that order.
	for i := range devs {
		assert.Equal(t, dra.DeviceName(fakenode.ManyPCI(i)), devs[i].Name)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
