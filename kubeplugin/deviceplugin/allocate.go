package deviceplugin

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// annotationPlugin is the plugin part of the cdi.k8s.io/ annotation key.
const annotationPlugin = ResourceDomain

// allocateContainer answers one container's request from the inventory.
func (s *inventory) allocateContainer(c *Config, resource string, ids []string) (*pluginapi.ContainerAllocateResponse, error) {
	if len(ids) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "no device IDs in the request for %s", resource)
	}
	var gpus []*node.GPU
	if resource == ResourceMonitoring {
		for _, id := range ids {
			if id != MonitoringDeviceID {
				return nil, status.Errorf(codes.InvalidArgument, "unknown device ID %q for %s", id, resource)
			}
		}
		if !s.monitoringHealthy {
			return nil, status.Errorf(codes.FailedPrecondition, "device %q of %s is unhealthy: no GPU is ready", MonitoringDeviceID, resource)
		}
		return s.respond(c, resource, []string{s.node.AllCDIName}, s.node.Healthy())
	}
	for _, id := range ids {
		e, ok := s.byID[id]
		if !ok || e.resource != resource {
			return nil, status.Errorf(codes.InvalidArgument, "unknown device ID %q for %s", id, resource)
		}
		if !e.gpu.Healthy {
			return nil, status.Errorf(codes.FailedPrecondition, "device %q (GPU %s) is unhealthy: %s", id, e.gpu.PCIAddress(), e.gpu.Reason)
		}
		// Several shares of one GPU still inject that GPU once.
		if !slices.Contains(gpus, e.gpu) {
			gpus = append(gpus, e.gpu)
		}
	}
	names := make([]string, len(gpus))
	for i, g := range gpus {
		names[i] = g.CDIName
	}
	return s.respond(c, resource, names, gpus)
}

// respond builds the answer under every configured strategy. It fails
// rather than leave out what a strategy could not express.
func (s *inventory) respond(c *Config, resource string, cdiNames []string, gpus []*node.GPU) (*pluginapi.ContainerAllocateResponse, error) {
	r := &pluginapi.ContainerAllocateResponse{}
	if c.Strategies.CRI {
		for _, n := range cdiNames {
			r.CdiDevices = append(r.CdiDevices, &pluginapi.CDIDevice{Name: n})
		}
	}
	if c.Strategies.Annotations {
		// The key carries the resource so that a container given both
		// i915 and xe GPUs gets one annotation per resource.
		key := resource[strings.LastIndexByte(resource, '/')+1:]
		ann, err := cdiapi.UpdateAnnotations(nil, annotationPlugin, key, cdiNames)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "building the CDI annotations for %s (devices %v): %v", resource, cdiNames, err)
		}
		r.Annotations = ann
	}
	if c.Strategies.DeviceSpecs {
		for _, g := range gpus {
			for _, n := range g.Device.Nodes() {
				r.Devices = append(r.Devices, &pluginapi.DeviceSpec{ContainerPath: n.Path, HostPath: n.HostPath, Permissions: "rw"})
			}
			if s.node.ByPathLinks {
				for _, l := range g.Device.ByPath {
					r.Mounts = append(r.Mounts, &pluginapi.Mount{ContainerPath: l.Path, HostPath: l.HostPath})
				}
			}
		}
	}
	return r, nil
}

// preferred picks size devices out of available for one container under
// the configured policy, always keeping mustInclude.
func (s *inventory) preferred(p Policy, available, mustInclude []string, size int) ([]string, error) {
	if size < 0 {
		return nil, fmt.Errorf("allocation size %d is negative", size)
	}
	if size > len(available) {
		return nil, fmt.Errorf("allocation size %d exceeds the %d available devices", size, len(available))
	}
	if len(mustInclude) > size {
		return nil, fmt.Errorf("%d must-include devices exceed the allocation size %d", len(mustInclude), size)
	}
	picked := slices.Clone(mustInclude)
	taken := map[string]bool{}
	for _, id := range mustInclude {
		taken[id] = true
	}

	// Free shares per GPU, each list in share order, GPUs in PCI order.
	type group struct {
		pci  string
		free []string
		used int // shares already picked for this request
	}
	var groups []*group
	index := map[string]*group{}
	for _, id := range available {
		pci := id
		if e, ok := s.byID[id]; ok {
			pci = e.gpu.PCIAddress()
		}
		g := index[pci]
		if g == nil {
			g = &group{pci: pci}
			index[pci] = g
			groups = append(groups, g)
		}
		if taken[id] {
			g.used++
		} else {
			g.free = append(g.free, id)
		}
	}
	slices.SortFunc(groups, func(a, b *group) int { return strings.Compare(a.pci, b.pci) })
	for _, g := range groups {
		slices.SortFunc(g.free, func(a, b string) int { return s.shareOf(a) - s.shareOf(b) })
	}

	for len(picked) < size {
		var best *group
		for _, g := range groups {
			if len(g.free) == 0 {
				continue
			}
			if best == nil || better(p, g.used, len(g.free), best.used, len(best.free)) {
				best = g
			}
		}
		if best == nil {
			return nil, fmt.Errorf("allocation size %d exceeds the available devices", size)
		}
		picked = append(picked, best.free[0])
		best.free = best.free[1:]
		best.used++
	}
	return picked, nil
}

// better reports whether a GPU with (used, free) beats the current best
// under policy p. Ties keep the earlier GPU in PCI order.
func better(p Policy, used, free, bestUsed, bestFree int) bool {
	switch p {
	case PolicyPacked:
		// Keep filling a GPU this request started, then the fullest GPU,
		// then the first in PCI order.
		if (used > 0) != (bestUsed > 0) {
			return used > 0
		}
		return free < bestFree
	case PolicyBalanced:
		return free > bestFree
	default:
		// Spread: the GPU this request has used least.
		return used < bestUsed
	}
}

func (s *inventory) shareOf(id string) int {
	if e, ok := s.byID[id]; ok {
		return e.share
	}
	return 0
}
