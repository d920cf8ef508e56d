package dra_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// Devices of the fixtures, by name.
const (
	igpu     = "gpu-0000-00-02-0" // i915, in every fixture but SRIOV
	discrete = "gpu-0000-03-00-0" // xe in DiscreteXe
	vf1      = "gpu-0000-03-00-1" // SRIOV
	vf2      = "gpu-0000-03-00-2" // SRIOV
)

func TestRegistersWithTheKubeletAfterTheSpecIsOnDisk(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	require.Error(t, r.plugin.Driver.Ready(), "ready before the kubelet accepted the registration")
	// The driver registers only after the node's first snapshot, which it
	// gets once the spec holding it is on disk. Checked the moment the
	// registration socket appears: after the registration, a spec written
	// late would be there too.
	require.NoError(t, drakubelet.WaitSocket(r.ctx(), r.cfg().RegistrationSocket()))
	assert.True(t, specDevices(t, r.root)["0000:03:00.0"], "the registration socket is there before the spec holding the GPU")
	k := r.register()
	assert.Equal(t, registerapi.DRAPlugin, k.Info.Type)
	assert.Equal(t, "gpu.intel.com", k.Info.Name)
	assert.Equal(t, r.cfg().DRASocket(), k.Info.Endpoint)
	assert.Contains(t, k.Info.SupportedVersions, "v1.DRAPlugin")
	assert.NoError(t, r.plugin.Driver.Ready())
}

func TestPrepareAnswersWithTheCDINamesOfTheNodesSpec(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	k := r.register()
	a := dratest.Claim("team-a", "gpu-claim", "uid-a", dratest.Exclusive("gpu", discrete))
	// A claim may hold devices of other drivers: they are not ours to prepare.
	other := dratest.Exclusive("nic", "eth0")
	other.Driver = "nic.example.com"
	a.Status.Allocation.Devices.Results = append(a.Status.Allocation.Devices.Results, other)
	r.create(a)

	got := prepare(t, k, a)["uid-a"]
	require.Empty(t, got.Error)
	require.Len(t, got.Devices, 1)
	d := got.Devices[0]
	assert.Equal(t, []string{"gpu"}, d.RequestNames)
	assert.Equal(t, dratest.NodeName, d.PoolName)
	assert.Equal(t, discrete, d.DeviceName)
	assert.Equal(t, []string{"intel.com/gpu=0000:03:00.0"}, d.CdiDeviceIds)
	assert.True(t, specDevices(t, r.root)["0000:03:00.0"], "the CDI name does not resolve in the node's spec")

	// No per-claim spec: the CDI directory holds the node's one spec.
	entries, err := os.ReadDir(filepath.Join(r.root, "cdi"))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "CDI directory: %v", entries)

	ckpt := r.plugin.Driver.CheckpointPath()
	require.Contains(t, checkpointClaims(t, ckpt), "uid-a")
	fi, err := os.Stat(ckpt)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	t.Run("again, it gives the same answer and leaves the checkpoint alone", func(t *testing.T) {
		before, err := os.ReadFile(ckpt)
		require.NoError(t, err)
		// A file written again would get a new inode through the rename.
		st0, err := os.Stat(ckpt)
		require.NoError(t, err)
		again := prepare(t, k, a)["uid-a"]
		assert.Equal(t, got.String(), again.String())
		after, err := os.ReadFile(ckpt)
		require.NoError(t, err)
		assert.Equal(t, string(before), string(after))
		st1, err := os.Stat(ckpt)
		require.NoError(t, err)
		assert.True(t, os.SameFile(st0, st1), "the checkpoint was rewritten")
	})
	t.Run("unprepare forgets it; again is no error", func(t *testing.T) {
		for range 2 {
			res := unprepare(t, k, a)
			assert.Empty(t, res["uid-a"].Error)
			assert.NotContains(t, checkpointClaims(t, ckpt), "uid-a")
		}
	})
}

func TestPrepareRefusesWhatItCannotServe(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	k := r.register()
	require.NoError(t, r.node.RemoveDevNodes("0000:03:00.0"))
	r.devices("the discrete GPU is tainted", func(d []resourceapi.Device) bool {
		return len(byName(d)[discrete].Taints) == 1
	})

	wrongPool := dratest.Exclusive("gpu", igpu)
	wrongPool.Pool = "gpu-node-2"
	tests := []struct {
		name  string
		claim *resourceapi.ResourceClaim
		want  []string
	}{
		{"a GPU that is not on the node", dratest.Claim("ns", "gone", "uid-gone", dratest.Exclusive("gpu", "gpu-0000-09-00-0")),
			[]string{"gpu-0000-09-00-0", "not on this node"}},
		{"an unhealthy GPU, naming why", dratest.Claim("ns", "sick", "uid-sick", dratest.Exclusive("gpu", discrete)),
			[]string{discrete, "0000:03:00.0", "unhealthy", "/dev/dri"}},
		{"a device of another node's pool", dratest.Claim("ns", "elsewhere", "uid-elsewhere", wrongPool),
			[]string{"gpu-node-2", dratest.NodeName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.create(tt.claim)
			got := prepare(t, k, tt.claim)[string(tt.claim.UID)]
			for _, w := range tt.want {
				assert.Contains(t, got.Error, w)
			}
			assert.Empty(t, got.Devices)
			assert.NotContains(t, checkpointClaims(t, r.plugin.Driver.CheckpointPath()), string(tt.claim.UID))
		})
	}
	t.Run("one bad claim does not fail the others in the same call", func(t *testing.T) {
		good := dratest.Claim("ns", "good", "uid-good", dratest.Exclusive("gpu", igpu))
		bad := dratest.Claim("ns", "bad", "uid-bad", dratest.Exclusive("gpu", discrete))
		r.create(good, bad)
		got := prepare(t, k, good, bad)
		assert.Empty(t, got["uid-good"].Error)
		assert.Equal(t, []string{"intel.com/gpu=0000:00:02.0"}, cdiIDs(got["uid-good"]))
		assert.NotEmpty(t, got["uid-bad"].Error)
	})
	t.Run("a GPU that comes back is served again", func(t *testing.T) {
		require.NoError(t, r.node.AddDevNodes("0000:03:00.0"))
		r.devices("the taint is removed", func(d []resourceapi.Device) bool {
			dev, ok := byName(d)[discrete]
			return ok && len(dev.Taints) == 0
		})
		c := dratest.Claim("ns", "back", "uid-back", dratest.Exclusive("gpu", discrete))
		r.create(c)
		got := prepare(t, k, c)["uid-back"]
		assert.Empty(t, got.Error)
		assert.Equal(t, []string{"intel.com/gpu=0000:03:00.0"}, cdiIDs(got))
	})
}

func TestAGPUIsNeverPreparedForTwoClaims(t *testing.T) {
	t.Run("a second claim on the same GPU is refused, naming the first, until the first is gone", func(t *testing.T) {
		r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
		k := r.register()
		a := dratest.Claim("ns", "a", "uid-a", dratest.Exclusive("gpu", discrete))
		b := dratest.Claim("ns", "b", "uid-b", dratest.Exclusive("gpu", discrete))
		r.create(a, b)
		require.Empty(t, prepare(t, k, a)["uid-a"].Error)
		got := prepare(t, k, b)["uid-b"]
		assert.Contains(t, got.Error, "ns/a")
		assert.Contains(t, got.Error, "uid-a")
		// A force-deleted claim is never unprepared; the API server says it
		// is gone, and the GPU is free.
		r.deleteClaim(a)
		got = prepare(t, k, b)["uid-b"]
		assert.Empty(t, got.Error)
		claims := checkpointClaims(t, r.plugin.Driver.CheckpointPath())
		assert.NotContains(t, claims, "uid-a")
		assert.Contains(t, claims, "uid-b")
	})
	t.Run("a claim replaced by one of the same name, or no longer allocated, no longer holds the GPU", func(t *testing.T) {
		r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
		k := r.register()
		a := dratest.Claim("ns", "a", "uid-a", dratest.Exclusive("gpu", discrete))
		b := dratest.Claim("ns", "b", "uid-b", dratest.Exclusive("gpu", discrete))
		c := dratest.Claim("ns", "c", "uid-c", dratest.Exclusive("gpu", discrete))
		r.create(a, b, c)
		require.Empty(t, prepare(t, k, a)["uid-a"].Error)
		// a is replaced: same name, another UID.
		r.deleteClaim(a)
		r.create(dratest.Claim("ns", "a", "uid-a2", dratest.Exclusive("gpu", igpu)))
		require.Empty(t, prepare(t, k, b)["uid-b"].Error)
		// b is deallocated.
		b.Status.Allocation = nil
		_, err := r.client.ResourceV1().ResourceClaims("ns").UpdateStatus(r.ctx(), b, metav1.UpdateOptions{})
		require.NoError(t, err)
		assert.Empty(t, prepare(t, k, c)["uid-c"].Error)
	})
	t.Run("SR-IOV: a VF is refused while its PF is prepared for another claim", func(t *testing.T) {
		r := startRig(t, []func(*fakenode.Node) error{func(n *fakenode.Node) error {
			return n.AddGPU(fakenode.GPU{Card: 1, PCI: "0000:03:00.0", Device: "0x56c0", TotalVFs: 7})
		}})
		k := r.register()
		pf := dratest.Claim("ns", "pf", "uid-pf", dratest.Exclusive("gpu", discrete))
		r.create(pf)
		require.Empty(t, prepare(t, k, pf)["uid-pf"].Error)

		// The admin enables a VF under the running workload: the PF leaves
		// the slice and the VF joins it.
		require.NoError(t, os.WriteFile(filepath.Join(r.node.Sys, "bus", "pci", "devices", "0000:03:00.0", "sriov_numvfs"), []byte("1\n"), 0o644))
		require.NoError(t, r.node.AddGPU(fakenode.GPU{Card: 2, PCI: "0000:03:00.1", Device: "0x56c0", PhysFn: "0000:03:00.0"}))
		r.devices("the VF replaces its PF", func(d []resourceapi.Device) bool {
			m := byName(d)
			_, hasPF := m[discrete]
			_, hasVF := m[vf1]
			return hasVF && !hasPF
		})
		vf := dratest.Claim("ns", "vf", "uid-vf", dratest.Exclusive("gpu", vf1))
		r.create(vf)
		got := prepare(t, k, vf)["uid-vf"]
		assert.Contains(t, got.Error, "SR-IOV physical function 0000:03:00.0")
		assert.Contains(t, got.Error, "ns/pf")
		require.Empty(t, unprepare(t, k, pf)["uid-pf"].Error)
		assert.Empty(t, prepare(t, k, vf)["uid-vf"].Error)
	})
}

func TestSharedClaimsShareAGPUUpToItsShares(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe}, dratest.WithSharedDevNum(3))
	k := r.register()
	s1 := dratest.Claim("ns", "s1", "uid-s1", dratest.Shared("gpu", discrete, "share-1", 1))
	s2 := dratest.Claim("ns", "s2", "uid-s2", dratest.Shared("gpu", discrete, "share-2", 1))
	big := dratest.Claim("ns", "big", "uid-big", dratest.Shared("gpu", discrete, "share-3", 2))
	whole := dratest.Claim("ns", "whole", "uid-whole", dratest.Exclusive("gpu", discrete))
	r.create(s1, s2, big, whole)

	got := prepare(t, k, s1, s2)
	for _, uid := range []string{"uid-s1", "uid-s2"} {
		require.Empty(t, got[uid].Error, uid)
		assert.Equal(t, []string{"intel.com/gpu=0000:03:00.0"}, cdiIDs(got[uid]))
	}
	assert.Equal(t, "share-1", got["uid-s1"].Devices[0].GetShareId())
	assert.Equal(t, "share-2", got["uid-s2"].Devices[0].GetShareId())

	over := prepare(t, k, big)["uid-big"]
	assert.Contains(t, over.Error, "2 of its 3 shares")
	excl := prepare(t, k, whole)["uid-whole"]
	assert.Contains(t, excl.Error, "already prepared")

	require.Empty(t, unprepare(t, k, s2)["uid-s2"].Error)
	assert.Empty(t, prepare(t, k, big)["uid-big"].Error)
}

func TestAdminAccessGetsADeviceBesideItsUser(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	k := r.register()
	user := dratest.Claim("ns", "user", "uid-user", dratest.Exclusive("gpu", discrete))
	r.create(user)
	require.Empty(t, prepare(t, k, user)["uid-user"].Error)

	// A monitoring claim (allocationMode All, adminAccess) gets every GPU,
	// including one another claim holds.
	mon := dratest.Claim("monitoring", "all-gpus", "uid-mon", dratest.Admin("gpu", igpu), dratest.Admin("gpu", discrete))
	r.create(mon)
	got := prepare(t, k, mon)["uid-mon"]
	require.Empty(t, got.Error)
	assert.ElementsMatch(t, []string{"intel.com/gpu=0000:00:02.0", "intel.com/gpu=0000:03:00.0"}, cdiIDs(got))

	t.Run("and a user claim still gets a GPU the monitor sees", func(t *testing.T) {
		u2 := dratest.Claim("ns", "user2", "uid-user2", dratest.Exclusive("gpu", igpu))
		r.create(u2)
		assert.Empty(t, prepare(t, k, u2)["uid-user2"].Error)
	})
	t.Run("an unhealthy GPU is left out of a monitoring claim rather than failing it", func(t *testing.T) {
		require.NoError(t, r.node.RemoveDevNodes("0000:03:00.0"))
		r.devices("the discrete GPU is tainted", func(d []resourceapi.Device) bool {
			return len(byName(d)[discrete].Taints) == 1
		})
		mon2 := dratest.Claim("monitoring", "all-gpus-2", "uid-mon2", dratest.Admin("gpu", igpu), dratest.Admin("gpu", discrete))
		r.create(mon2)
		got := prepare(t, k, mon2)["uid-mon2"]
		require.Empty(t, got.Error)
		assert.Equal(t, []string{"intel.com/gpu=0000:00:02.0"}, cdiIDs(got))
		assert.Len(t, got.Devices, 2, "both devices are prepared, one without a CDI device")
	})
}

func TestACheckpointThatCannotBeWrittenFailsThePrepare(t *testing.T) {
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	k := r.register()
	ckpt := r.plugin.Driver.CheckpointPath()
	// A directory in the checkpoint's place makes the rename fail, also
	// for root.
	require.NoError(t, os.MkdirAll(filepath.Join(ckpt, "blocker"), 0o755))
	a := dratest.Claim("ns", "a", "uid-a", dratest.Exclusive("gpu", discrete))
	r.create(a)
	got := prepare(t, k, a)["uid-a"]
	assert.Contains(t, got.Error, "checkpoint")
	assert.Empty(t, got.Devices)
	// Nothing was recorded, so nothing blocks the GPU once the file can be
	// written.
	require.NoError(t, os.RemoveAll(ckpt))
	b := dratest.Claim("ns", "b", "uid-b", dratest.Exclusive("gpu", discrete))
	r.create(b)
	assert.Empty(t, prepare(t, k, b)["uid-b"].Error)
	entries, err := os.ReadDir(filepath.Dir(ckpt))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), ".checkpoint-"), "temporary file %s left behind", e.Name())
	}
}
