package plugin_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var demo = []func(*fakenode.Node) error{fakenode.Demo}

func TestRegistersEachResourceWithItsOwnSocketAfterWritingTheSpec(t *testing.T) {
	r := startRig(t, demo)

	i915, _ := r.registered(deviceplugin.ResourceI915, 1)
	xe, _ := r.registered(deviceplugin.ResourceXe, 1)

	for _, req := range []*pluginapi.RegisterRequest{i915, xe} {
		assert.Equal(t, pluginapi.Version, req.Version)
		assert.NotContains(t, req.Endpoint, "/", "endpoint is a socket name in the kubelet dir")
		assert.FileExists(t, filepath.Join(r.kubelet.Dir(), req.Endpoint))
		require.NotNil(t, req.Options)
		assert.True(t, req.Options.GetPreferredAllocationAvailable)
	}
	assert.NotEqual(t, i915.Endpoint, xe.Endpoint)
	assert.Len(t, r.kubelet.Registrations(), 2, "no monitoring resource unless asked")

	spec, err := cdiapi.ReadSpec(r.plugin.SpecPath(), 0)
	require.NoError(t, err)
	for _, name := range []string{"card0", "0000:00:02.0", "card1", "0000:03:00.0", "card2", "0000:07:00.0", "all"} {
		assert.NotNil(t, spec.GetDevice(name), "spec device %s", name)
	}
	st, err := os.Stat(r.plugin.SpecPath())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
}

func TestListAndWatchSendsStableIDsHealthAndNUMATopology(t *testing.T) {
	r := startRig(t, demo)
	_, i915 := r.registered(deviceplugin.ResourceI915, 1)
	_, xe := r.registered(deviceplugin.ResourceXe, 1)

	l := r.nextList(r.watch(i915), "the i915 list", func(l []*pluginapi.Device) bool { return len(l) > 0 })
	require.Len(t, l, 2)
	assert.Equal(t, "0000:00:02.0", l[0].ID)
	assert.Equal(t, pluginapi.Healthy, l[0].Health)
	assert.Nil(t, l[0].Topology, "NUMA -1 means no topology")
	assert.Equal(t, "0000:03:00.0", l[1].ID)
	require.NotNil(t, l[1].Topology)
	assert.Equal(t, int64(0), l[1].Topology.Nodes[0].ID)

	l = r.nextList(r.watch(xe), "the xe list", func(l []*pluginapi.Device) bool { return len(l) > 0 })
	assert.Equal(t, []string{"0000:07:00.0/Healthy"}, ids(l))
}

func TestSharedDevNumMakesEachGPUThatManyIDsAndInjectsItOnce(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU}, plugintest.WithSharedDevNum(3))
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	l := r.nextList(r.watch(c), "three shares", func(l []*pluginapi.Device) bool { return len(l) == 3 })
	assert.Equal(t, []string{"0000:00:02.0-0/Healthy", "0000:00:02.0-1/Healthy", "0000:00:02.0-2/Healthy"}, ids(l))

	resp, err := allocate(r.ctx(), c, []string{"0000:00:02.0-0", "0000:00:02.0-2"})
	require.NoError(t, err)
	assert.Equal(t, []string{"intel.com/gpu=0000:00:02.0"}, cdiNames(resp.ContainerResponses[0]))
}

func TestAllocateUnderEachDeviceListStrategy(t *testing.T) {
	const gpu = "0000:03:00.0"
	tests := []struct {
		name       string
		strategies deviceplugin.Strategies
	}{
		{"cdi-cri alone fills only CDIDevices", deviceplugin.Strategies{CRI: true}},
		{"cdi-annotations alone sets only the cdi.k8s.io annotation", deviceplugin.Strategies{Annotations: true}},
		{"device-specs alone gives legacy nodes and by-path mounts", deviceplugin.Strategies{DeviceSpecs: true}},
		{"all three together fill every field", deviceplugin.Strategies{CRI: true, Annotations: true, DeviceSpecs: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := startRig(t, demo, plugintest.WithStrategies(tc.strategies))
			_, c := r.registered(deviceplugin.ResourceI915, 1)
			resp, err := allocate(r.ctx(), c, []string{gpu})
			require.NoError(t, err)
			cr := resp.ContainerResponses[0]

			if tc.strategies.CRI {
				assert.Equal(t, []string{"intel.com/gpu=" + gpu}, cdiNames(cr))
			} else {
				assert.Empty(t, cr.CdiDevices)
			}

			if tc.strategies.Annotations {
				assert.Equal(t, map[string]string{"cdi.k8s.io/gpu.intel.com_i915": "intel.com/gpu=" + gpu}, cr.Annotations)
				_, devices, err := cdiapi.ParseAnnotations(cr.Annotations)
				require.NoError(t, err, "the CDI library reads our annotation back")
				assert.Equal(t, []string{"intel.com/gpu=" + gpu}, devices)
			} else {
				assert.Empty(t, cr.Annotations)
			}

			if tc.strategies.DeviceSpecs {
				var paths []string
				for _, d := range cr.Devices {
					paths = append(paths, d.ContainerPath)
					assert.Equal(t, "rw", d.Permissions)
					assert.FileExists(t, d.HostPath)
				}
				assert.Equal(t, []string{"/dev/dri/card1", "/dev/dri/renderD129"}, paths)
				var mounts []string
				for _, m := range cr.Mounts {
					mounts = append(mounts, m.ContainerPath)
				}
				assert.ElementsMatch(t, []string{"/dev/dri/by-path/pci-" + gpu + "-card", "/dev/dri/by-path/pci-" + gpu + "-render"}, mounts)
			} else {
				assert.Empty(t, cr.Devices)
				assert.Empty(t, cr.Mounts)
			}
		})
	}
}

func TestAllocateRejectsUnknownAndUnhealthyIDs(t *testing.T) {
	r := startRig(t, demo)
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "the first list", func(l []*pluginapi.Device) bool { return len(l) == 2 })

	_, err := allocate(r.ctx(), c, []string{"0000:99:00.0"})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), `"0000:99:00.0"`, "the error names the ID")

	_, err = allocate(r.ctx(), c, []string{"0000:07:00.0"})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "an xe GPU is not an i915 device")

	require.NoError(t, r.node.RemoveDevNodes("0000:03:00.0"))
	r.nextList(ch, "0000:03:00.0 unhealthy", func(l []*pluginapi.Device) bool {
		return slices.Contains(ids(l), "0000:03:00.0/Unhealthy")
	})
	_, err = allocate(r.ctx(), c, []string{"0000:03:00.0"})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "0000:03:00.0")

	resp, err := allocate(r.ctx(), c, []string{"0000:00:02.0"})
	require.NoError(t, err, "the healthy GPU is still handed out")
	assert.Equal(t, []string{"intel.com/gpu=0000:00:02.0"}, cdiNames(resp.ContainerResponses[0]))
}

func TestANotReadyGPUTurnsUnhealthyAndRecoversWithoutLeavingTheList(t *testing.T) {
	r := startRig(t, demo)
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "both healthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", "0000:03:00.0/Healthy"})
	})

	require.NoError(t, r.node.RemoveDevNodes("0000:03:00.0"))
	r.nextList(ch, "unhealthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", "0000:03:00.0/Unhealthy"})
	})
	// The list changes first, then the spec.
	require.Eventually(t, func() bool {
		spec, err := cdiapi.ReadSpec(r.plugin.SpecPath(), 0)
		return err == nil && spec.GetDevice("0000:03:00.0") == nil && spec.GetDevice("0000:00:02.0") != nil
	}, waitFor, 5e6, "a GPU without nodes leaves the spec")

	require.NoError(t, r.node.AddDevNodes("0000:03:00.0"))
	r.nextList(ch, "healthy again", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", "0000:03:00.0/Healthy"})
	})
}

func TestAResourceAppearsWhenItsFirstGPUIsPluggedIn(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU})
	r.registered(deviceplugin.ResourceI915, 1)

	r.node.MustAddGPU(t, fakenode.GPU{Card: 1, PCI: "0000:03:00.0", Device: "0xe20b", Driver: "xe"})
	_, xe := r.registered(deviceplugin.ResourceXe, 1)
	l := r.nextList(r.watch(xe), "the xe GPU", func(l []*pluginapi.Device) bool { return len(l) == 1 })
	assert.Equal(t, "0000:03:00.0", l[0].ID)
}

func TestWithoutGPUsThereIsNoSpecAndAStaleOneIsRemoved(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU})
	r.registered(deviceplugin.ResourceI915, 1)
	require.FileExists(t, r.plugin.SpecPath())

	require.NoError(t, r.node.RemoveGPU("0000:00:02.0"))
	require.Eventually(t, func() bool {
		_, err := os.Stat(r.plugin.SpecPath())
		return os.IsNotExist(err)
	}, waitFor, 5e6, "the spec of the last GPU is removed")
}

func TestMonitoringAllocatesEveryGPUThroughTheAllDevice(t *testing.T) {
	r := startRig(t, demo, plugintest.WithMonitoring(true))
	req, c := r.registered(deviceplugin.ResourceMonitoring, 1)
	assert.Equal(t, deviceplugin.ResourceMonitoring, req.ResourceName)
	l := r.nextList(r.watch(c), "the monitoring device", func(l []*pluginapi.Device) bool { return len(l) == 1 })
	assert.Equal(t, []string{"monitoring/Healthy"}, ids(l))

	resp, err := allocate(r.ctx(), c, []string{deviceplugin.MonitoringDeviceID})
	require.NoError(t, err)
	assert.Equal(t, []string{"intel.com/gpu=all"}, cdiNames(resp.ContainerResponses[0]))
}

func TestAllowAndDenyIDsFilterGPUsByPCIDeviceID(t *testing.T) {
	tests := []struct {
		name string
		opt  plugintest.Option
		want []string
	}{
		{"allow-ids keeps only the listed device IDs", plugintest.WithAllowIDs([]string{"0x56a0"}), []string{"0000:03:00.0/Healthy"}},
		{"deny-ids drops the listed device IDs", plugintest.WithDenyIDs([]string{"0x56A0"}), []string{"0000:00:02.0/Healthy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := startRig(t, demo, tc.opt)
			_, c := r.registered(deviceplugin.ResourceI915, 1)
			l := r.nextList(r.watch(c), "the filtered list", func(l []*pluginapi.Device) bool { return len(l) > 0 })
			assert.Equal(t, tc.want, ids(l))
		})
	}
}

func TestTwentyKubeletRestartsInARowEachEndRegisteredAndServing(t *testing.T) {
	r := startRig(t, demo)
	r.registered(deviceplugin.ResourceI915, 1)
	r.registered(deviceplugin.ResourceXe, 1)

	for i := 2; i <= 21; i++ {
		require.NoError(t, r.kubelet.Restart())
		for _, res := range []string{deviceplugin.ResourceI915, deviceplugin.ResourceXe} {
			req, c := r.registered(res, i)
			l := r.nextList(r.watch(c), "the list after restart", func(l []*pluginapi.Device) bool { return len(l) > 0 })
			resp, err := allocate(r.ctx(), c, []string{l[0].ID})
			require.NoError(t, err, "restart %d: %s at %s", i-1, res, req.Endpoint)
			require.Len(t, resp.ContainerResponses[0].CdiDevices, 1)
		}
	}
}

func TestRegistrationIsRetriedUntilTheKubeletAccepts(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.IGPU})
	r.registered(deviceplugin.ResourceI915, 1)
	r.kubelet.SetReject(status.Error(codes.Unavailable, "kubelet busy"))
	require.NoError(t, r.kubelet.Restart())
	// Only once the plugin was turned away twice is the kubelet ready: a
	// plugin that tried once and gave up would never register again.
	require.NoError(t, r.kubelet.WaitRejected(r.ctx(), 2))
	r.kubelet.SetReject(nil)
	r.registered(deviceplugin.ResourceI915, 2)
}

func TestStopRemovesSocketsAndLeavesTheSpec(t *testing.T) {
	r := startRig(t, demo)
	req, _ := r.registered(deviceplugin.ResourceI915, 1)
	r.stop()
	assert.NoFileExists(t, filepath.Join(r.kubelet.Dir(), req.Endpoint))
	assert.FileExists(t, r.plugin.SpecPath(), "running containers still need the spec")
}

func TestPreferredAllocationUnderEachPolicy(t *testing.T) {
	// card10 sits at a lower PCI address than card2, and 0000:10:00.0 is
	// numerically after 0000:0a:00.0: order is by PCI address, numerically.
	gpus := func(n *fakenode.Node) error {
		for _, g := range []fakenode.GPU{
			{Card: 2, PCI: "0000:0a:00.0", Device: "0x56a0"},
			{Card: 10, PCI: "0000:03:00.0", Device: "0x56a0"},
			{Card: 3, PCI: "0000:10:00.0", Device: "0x56a0"},
		} {
			if err := n.AddGPU(g); err != nil {
				return err
			}
		}
		return nil
	}
	a, b, c := "0000:03:00.0", "0000:0a:00.0", "0000:10:00.0"
	share := func(gpu string, k int) string { return gpu + "-" + string(rune('0'+k)) }
	all := []string{share(a, 0), share(a, 1), share(b, 0), share(b, 1), share(c, 0), share(c, 1)}

	tests := []struct {
		name      string
		policy    deviceplugin.Policy
		available []string
		must      []string
		size      int32
		want      []string
	}{
		{"none spreads over distinct GPUs first", deviceplugin.PolicyNone, all, nil, 3, []string{share(a, 0), share(b, 0), share(c, 0)}},
		{"none wraps around once every GPU is used", deviceplugin.PolicyNone, all, nil, 4, []string{share(a, 0), share(b, 0), share(c, 0), share(a, 1)}},
		{"none keeps must-include and spreads the rest", deviceplugin.PolicyNone, all, []string{share(b, 1)}, 2, []string{share(b, 1), share(a, 0)}},
		{"packed fills the first GPU in PCI order before the next", deviceplugin.PolicyPacked, all, nil, 3, []string{share(a, 0), share(a, 1), share(b, 0)}},
		{"packed fills the GPU with the fewest free shares first", deviceplugin.PolicyPacked, []string{share(a, 0), share(a, 1), share(c, 1)}, nil, 1, []string{share(c, 1)}},
		{"packed continues on a must-include GPU", deviceplugin.PolicyPacked, all, []string{share(c, 0)}, 2, []string{share(c, 0), share(c, 1)}},
		{"balanced takes from the GPU with the most free shares", deviceplugin.PolicyBalanced, []string{share(a, 1), share(b, 0), share(b, 1), share(c, 1)}, nil, 1, []string{share(b, 0)}},
		{"balanced alternates as free shares even out", deviceplugin.PolicyBalanced, []string{share(a, 1), share(b, 0), share(b, 1), share(c, 1)}, nil, 3, []string{share(b, 0), share(a, 1), share(b, 1)}},
	}
	for _, policy := range []deviceplugin.Policy{deviceplugin.PolicyNone, deviceplugin.PolicyPacked, deviceplugin.PolicyBalanced} {
		t.Run(string(policy), func(t *testing.T) {
			r := startRig(t, []func(*fakenode.Node) error{gpus}, plugintest.WithSharedDevNum(2), plugintest.WithPolicy(policy))
			_, cl := r.registered(deviceplugin.ResourceI915, 1)
			for _, tc := range tests {
				if tc.policy != policy {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					resp, err := cl.GetPreferredAllocation(r.ctx(), &pluginapi.PreferredAllocationRequest{
						ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
							AvailableDeviceIDs: tc.available, MustIncludeDeviceIDs: tc.must, AllocationSize: tc.size,
						}},
					})
					require.NoError(t, err)
					assert.Equal(t, tc.want, resp.ContainerResponses[0].DeviceIDs)
				})
			}
			t.Run("a size above what is available is an error", func(t *testing.T) {
				_, err := cl.GetPreferredAllocation(r.ctx(), &pluginapi.PreferredAllocationRequest{
					ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: all[:2], AllocationSize: 3}},
				})
				assert.Equal(t, codes.InvalidArgument, status.Code(err))
			})
		})
	}
}

func TestAGPUWhoseDriverIsUnboundStaysListedUnhealthyUntilItLeavesTheBus(t *testing.T) {
	// A function leaving the bus after its nodes are gone makes no /dev/dri
	// event (and sysfs has no inotify): the resync safety net sees it.
	r := startRig(t, demo, plugintest.WithResyncPeriod(node.MinResyncPeriod))
	_, c := r.registered(deviceplugin.ResourceI915, 1)
	ch := r.watch(c)
	r.nextList(ch, "both healthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", "0000:03:00.0/Healthy"})
	})

	// Unbinding the driver: the kernel removes the DRM minors and the
	// driver link but the PCI function stays; udev then removes the nodes.
	const pci = "0000:03:00.0"
	fn, err := filepath.EvalSymlinks(filepath.Join(r.node.Sys, "bus", "pci", "devices", pci))
	require.NoError(t, err)
	for _, p := range []string{
		filepath.Join(r.node.Sys, "class", "drm", "card1"),
		filepath.Join(r.node.Sys, "class", "drm", "renderD129"),
		filepath.Join(fn, "drm"),
		filepath.Join(fn, "driver"),
	} {
		require.NoError(t, os.RemoveAll(p))
	}
	require.NoError(t, r.node.RemoveDevNodes(pci))
	r.nextList(ch, "the unbound GPU unhealthy", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy", pci + "/Unhealthy"})
	})

	require.NoError(t, r.node.RemoveGPU(pci))
	r.nextList(ch, "the GPU gone from the bus", func(l []*pluginapi.Device) bool {
		return slices.Equal(ids(l), []string{"0000:00:02.0/Healthy"})
	})
}
