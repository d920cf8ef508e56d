package deviceplugin

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

func serviceWith(t *testing.T, strategies Strategies, gpus ...*node.GPU) *service {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Strategies = strategies
	require.NoError(t, cfg.Validate())
	cfg = cfg.withDefaults()
	h := newHub()
	h.Publish(newInventory(&node.Snapshot{GPUs: gpus, AllCDIName: "intel.com/gpu=all"}, &cfg))
	return &service{resource: ResourceI915, cfg: &cfg, hub: h}
}

func gpu(pci, cdiName string) *node.GPU {
	return &node.GPU{
		Device:  discovery.Device{PCIAddress: pci, Card: "card0", CardNode: discovery.Node{Path: "/dev/dri/card0", HostPath: "/dev/dri/card0", Major: 226}},
		Driver:  discovery.DriverI915,
		Healthy: true,
		CDIName: cdiName,
	}
}

func allocateOne(s *service, id string) (*pluginapi.AllocateResponse, error) {
	return s.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{id}}},
	})
}

// An answer that leaves out what a strategy could not express would start
// the container without its GPU: with cdi-annotations alone, that is a
// container with no device at all.
func TestAllocateFailsWhenTheAnnotationsCannotBeBuilt(t *testing.T) {
	s := serviceWith(t, Strategies{Annotations: true}, gpu("0000:03:00.0", "not a CDI name"))
	resp, err := allocateOne(s, "0000:03:00.0")
	assert.Nil(t, resp)
	require.Error(t, err)
	assert.Equal(t, codes.Internal, status.Code(err))
	assert.Contains(t, err.Error(), "not a CDI name", "the error names the device it could not express")
}

func TestAllocateAnswersWithAnnotationsWhenTheyCanBeBuilt(t *testing.T) {
	s := serviceWith(t, Strategies{Annotations: true}, gpu("0000:03:00.0", "intel.com/gpu=0000:03:00.0"))
	resp, err := allocateOne(s, "0000:03:00.0")
	require.NoError(t, err)
	require.Len(t, resp.ContainerResponses, 1)
	assert.Equal(t, map[string]string{"cdi.k8s.io/gpu.intel.com_i915": "intel.com/gpu=0000:03:00.0"}, resp.ContainerResponses[0].Annotations)
	assert.Empty(t, resp.ContainerResponses[0].CdiDevices, "cdi-cri is off")
}
