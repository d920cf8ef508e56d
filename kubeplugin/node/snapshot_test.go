package node

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

func dev(pci, card, id, driver string) discovery.Device {
	return discovery.Device{PCIAddress: pci, Card: card, DeviceID: id, Driver: driver, Ready: true, SRIOV: discovery.SRIOV{Role: discovery.RoleNone}}
}

func pcis(s *Snapshot) []string {
	var out []string
	for _, g := range s.GPUs {
		out = append(out, g.PCIAddress())
	}
	return out
}

func qualify(name string) string { return "intel.com/gpu=" + name }

func TestBuild(t *testing.T) {
	cfg := validConfig(t)
	never := func(string) bool { return false }
	empty := &Snapshot{}

	t.Run("GPUs are in PCI order with their CDI names, and the generation counts", func(t *testing.T) {
		s := build([]discovery.Device{dev("0000:03:00.0", "card0", "0x56a0", "i915"), dev("0000:00:02.0", "card1", "0x46a6", "xe")}, nil, empty, &cfg, never, qualify)
		assert.Equal(t, []string{"0000:00:02.0", "0000:03:00.0"}, pcis(s))
		assert.Equal(t, "intel.com/gpu=0000:00:02.0", s.GPUs[0].CDIName)
		assert.Equal(t, "intel.com/gpu=all", s.AllCDIName)
		assert.Equal(t, uint64(1), s.Generation)
		assert.Same(t, s.GPUs[1], s.GPU("0000:03:00.0"))
		assert.Nil(t, s.GPU("0000:09:00.0"))
	})

	t.Run("a PF whose VFs are enabled is left out, its VFs are in", func(t *testing.T) {
		pf := dev("0000:03:00.0", "card0", "0x56c0", "i915")
		pf.SRIOV = discovery.SRIOV{Role: discovery.RolePF, NumVFs: 1, TotalVFs: 8}
		vf := dev("0000:03:00.1", "card1", "0x56c0", "i915")
		vf.SRIOV = discovery.SRIOV{Role: discovery.RoleVF, PF: pf.PCIAddress}
		s := build([]discovery.Device{pf, vf}, nil, empty, &cfg, never, qualify)
		assert.Equal(t, []string{"0000:03:00.1"}, pcis(s))
	})

	t.Run("allow and deny lists filter by device ID", func(t *testing.T) {
		devs := []discovery.Device{dev("0000:00:02.0", "card0", "0x46a6", "i915"), dev("0000:03:00.0", "card1", "0x56a0", "i915")}
		allow := cfg
		allow.AllowIDs = []string{"0x56a0"}
		assert.Equal(t, []string{"0000:03:00.0"}, pcis(build(devs, nil, empty, &allow, never, qualify)))
		deny := cfg
		deny.DenyIDs = []string{"0x56a0"}
		assert.Equal(t, []string{"0000:00:02.0"}, pcis(build(devs, nil, empty, &deny, never, qualify)))
	})

	t.Run("a GPU whose card left while its function stayed lingers unhealthy under its driver", func(t *testing.T) {
		prev := build([]discovery.Device{dev("0000:00:02.0", "card0", "0x46a6", "i915"), dev("0000:03:00.0", "card1", "0x56a0", "xe")}, nil, empty, &cfg, never, qualify)
		next := build([]discovery.Device{dev("0000:00:02.0", "card0", "0x46a6", "i915")}, nil, prev, &cfg, never, qualify)
		require.Equal(t, []string{"0000:00:02.0", "0000:03:00.0"}, pcis(next))
		g := next.GPU("0000:03:00.0")
		assert.False(t, g.Healthy)
		assert.Equal(t, lingerReason, g.Reason)
		assert.Equal(t, "xe", g.Driver)
		assert.Equal(t, []string{"0000:00:02.0"}, pcis(&Snapshot{GPUs: next.Healthy()}))

		gone := func(pci string) bool { return pci == "0000:03:00.0" }
		assert.Equal(t, []string{"0000:00:02.0"}, pcis(build([]discovery.Device{dev("0000:00:02.0", "card0", "0x46a6", "i915")}, nil, next, &cfg, gone, qualify)),
			"it leaves once its function left the bus")
	})

	t.Run("a GPU whose driver is unbound keeps the driver it had, and one never bound is left out", func(t *testing.T) {
		prev := build([]discovery.Device{dev("0000:03:00.0", "card1", "0x56a0", "xe")}, nil, empty, &cfg, never, qualify)
		unbound := dev("0000:03:00.0", "card1", "0x56a0", "")
		unbound.Ready, unbound.Reason = false, "no driver bound to 0000:03:00.0"
		s := build([]discovery.Device{unbound}, nil, prev, &cfg, never, qualify)
		require.Len(t, s.GPUs, 1)
		assert.Equal(t, "xe", s.GPUs[0].Driver)
		assert.False(t, s.GPUs[0].Healthy)
		assert.Empty(t, build([]discovery.Device{unbound}, nil, empty, &cfg, never, qualify).GPUs)
	})
}

func TestUnionKeepsLeavingGPUsAndGivesACardNameToTheNewcomer(t *testing.T) {
	cfg := validConfig(t)
	never := func(string) bool { return false }
	prev := build([]discovery.Device{dev("0000:03:00.0", "card1", "0x56a0", "i915")}, nil, &Snapshot{}, &cfg, never, qualify)
	next := build([]discovery.Device{dev("0000:0a:00.0", "card2", "0x56a0", "i915")}, nil, prev, &cfg, func(string) bool { return true }, qualify)
	var got []string
	for _, d := range union(next.specDevices(), prev) {
		got = append(got, d.PCIAddress+"/"+d.Card)
	}
	assert.Equal(t, []string{"0000:03:00.0/card1", "0000:0a:00.0/card2"}, got)

	taken := build([]discovery.Device{dev("0000:0a:00.0", "card1", "0x56a0", "i915")}, nil, prev, &cfg, func(string) bool { return true }, qualify)
	got = nil
	for _, d := range union(taken.specDevices(), prev) {
		got = append(got, d.PCIAddress+"/"+d.Card)
	}
	assert.Equal(t, []string{"0000:0a:00.0/card1"}, got, "the newcomer keeps card1; the leaving GPU's entry would clash with it")

	// The same GPUs again, or none before: the next snapshot's devices
	// as they are, not a copy.
	same := build([]discovery.Device{dev("0000:03:00.0", "card1", "0x56a0", "i915")}, nil, prev, &cfg, never, qualify)
	devs := same.specDevices()
	assert.Same(t, &devs[0], &union(devs, prev)[0])
	assert.Same(t, &devs[0], &union(devs, &Snapshot{})[0])
}

func TestSameGPUsSeesEveryChangeThatMattersToASubscriber(t *testing.T) {
	cfg := validConfig(t)
	never := func(string) bool { return false }
	base := build([]discovery.Device{dev("0000:03:00.0", "card1", "0x56a0", "i915")}, nil, &Snapshot{}, &cfg, never, qualify)
	for name, change := range map[string]func(*discovery.Device){
		"a new card name": func(d *discovery.Device) { d.Card = "card2" },
		"a by-path link":  func(d *discovery.Device) { d.ByPath = []discovery.Link{{Path: "/dev/dri/by-path/x", HostPath: "/x"}} },
		"not ready":       func(d *discovery.Device) { d.Ready, d.Reason = false, "gone" },
		"another NUMA":    func(d *discovery.Device) { d.NUMANode = 1 },
		"a new minor":     func(d *discovery.Device) { d.CardNode.Minor = 7 },
	} {
		d := dev("0000:03:00.0", "card1", "0x56a0", "i915")
		change(&d)
		other := build([]discovery.Device{d}, nil, &Snapshot{}, &cfg, never, qualify)
		assert.False(t, sameGPUs(base, other), name)
	}
	again := build([]discovery.Device{dev("0000:03:00.0", "card1", "0x56a0", "i915")}, nil, &Snapshot{}, &cfg, never, qualify)
	assert.True(t, sameGPUs(base, again))
}

func TestAGPUTheKernelCallsUnwellIsUnhealthyButStaysInTheSpec(t *testing.T) {
	cfg := validConfig(t)
	never := func(string) bool { return false }
	devs := []discovery.Device{dev("0000:00:02.0", "card0", "0x46a6", "i915"), dev("0000:03:00.0", "card1", "0x56a0", "xe")}
	statuses := []health.Status{
		{PCIAddress: "0000:00:02.0", Healthy: true},
		{PCIAddress: "0000:03:00.0", Reason: health.ReasonWedged, Message: "wedged: the driver asks for rebind", WedgedMethods: []string{"rebind"}},
	}
	s := build(devs, statuses, &Snapshot{}, &cfg, never, qualify)
	require.Len(t, s.GPUs, 2)
	assert.True(t, s.GPUs[0].Healthy)
	w := s.GPUs[1]
	assert.False(t, w.Healthy)
	assert.Equal(t, "wedged: the driver asks for rebind", w.Reason)
	require.NotNil(t, w.Health)
	assert.Equal(t, health.ReasonWedged, w.Health.Reason)
	var inSpec []string
	for _, d := range s.specDevices() {
		inSpec = append(inSpec, d.PCIAddress)
	}
	assert.Equal(t, []string{"0000:00:02.0", "0000:03:00.0"}, inSpec, "a container given the GPU before can still start")

	recovered := build(devs, []health.Status{{Healthy: true}, {Healthy: true}}, s, &cfg, never, qualify)
	assert.False(t, sameGPUs(s, recovered), "a recovery is a change subscribers hear of")
	assert.True(t, recovered.GPUs[1].Healthy)
}
