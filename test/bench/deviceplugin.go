package bench

import (
	"context"
	"fmt"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
)

// DevicePluginReady is Candidate.Ready for a v1beta1 device plugin: ready
// once it registered resource with the kubelet and listed env.GPUs devices
// on ListAndWatch, which the kubelet holds open as long as the plugin runs.
// The session's calls are Allocates of one device each, cycling over the
// listed IDs, as the kubelet makes them for one container.
func DevicePluginReady(resource string) func(ctx context.Context, env *Env) (Session, error) {
	return func(ctx context.Context, env *Env) (Session, error) {
		reg, err := env.Kubelet.WaitRegistration(ctx, resource, 1)
		if err != nil {
			return nil, err
		}
		c, err := env.Kubelet.Dial(reg.Endpoint)
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithCancel(context.Background())
		s := &allocateSession{c: c, cancel: cancel}
		lists, err := c.Watch(wctx)
		if err != nil {
			s.Close()
			return nil, err
		}
		for {
			select {
			case l, ok := <-lists:
				if !ok {
					s.Close()
					return nil, fmt.Errorf("ListAndWatch of %s ended before %d devices were listed", resource, env.GPUs)
				}
				if len(l) != env.GPUs {
					continue
				}
				for _, d := range l {
					s.reqs = append(s.reqs, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{d.ID}}}})
				}
				return s, nil
			case <-ctx.Done():
				s.Close()
				return nil, fmt.Errorf("waiting for %d devices of %s: %w", env.GPUs, resource, ctx.Err())
			}
		}
	}
}

type allocateSession struct {
	c      *fakekubelet.Client
	cancel context.CancelFunc
	reqs   []*pluginapi.AllocateRequest
}

func (s *allocateSession) Call(ctx context.Context, i int) error {
	resp, err := s.c.Allocate(ctx, s.reqs[i%len(s.reqs)])
	if err == nil && len(resp.ContainerResponses) != 1 {
		err = fmt.Errorf("%d container responses for one container", len(resp.ContainerResponses))
	}
	return err
}

func (s *allocateSession) Close() error {
	s.cancel()
	return s.c.Close()
}
