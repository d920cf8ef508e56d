package deviceplugin

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/latest"
)

// hub holds the current inventory and wakes ListAndWatch streams when a
// new one is published.
type hub = latest.Value[*inventory]

func newHub() *hub { return latest.New(emptyInventory()) }

// service answers the kubelet for one resource. It owns no lifecycle: the
// server that serves it does.
type service struct {
	pluginapi.UnimplementedDevicePluginServer
	resource string
	cfg      *Config
	hub      *hub
	// done is closed when the serving server stops, ending the streams.
	done <-chan struct{}
}

var _ pluginapi.DevicePluginServer = (*service)(nil)

func (s *service) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the device list at once and again on every change.
func (s *service) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	var last []*pluginapi.Device
	first := true
	for {
		inv, changed := s.hub.Load()
		list := inv.lists[s.resource]
		if first || !sameList(last, list) {
			if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: list}); err != nil {
				return err
			}
			first, last = false, list
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		case <-s.done:
			return nil
		}
	}
}

// Allocate answers from the current inventory alone. It answers for every
// container or fails whole: a partial answer would start a container
// without its GPU.
func (s *service) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	inv := s.hub.Current()
	resp := &pluginapi.AllocateResponse{ContainerResponses: make([]*pluginapi.ContainerAllocateResponse, 0, len(req.ContainerRequests))}
	for _, cr := range req.ContainerRequests {
		r, err := inv.allocateContainer(s.cfg, s.resource, cr.DevicesIds)
		if err != nil {
			s.cfg.Observer.Allocation(s.resource, err)
			return nil, err
		}
		resp.ContainerResponses = append(resp.ContainerResponses, r)
	}
	s.cfg.Observer.Allocation(s.resource, nil)
	return resp, nil
}

func (s *service) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	inv := s.hub.Current()
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		ids, err := inv.preferred(s.cfg.Policy, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, int(cr.AllocationSize))
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %v", s.resource, err)
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

func (s *service) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
