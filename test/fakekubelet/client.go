package fakekubelet

import (
	"context"
	"fmt"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// IDs renders a device list as "ID/Health" strings, for assertions and
// failure messages.
func IDs(l []*pluginapi.Device) []string {
	out := make([]string, len(l))
	for i, d := range l {
		out[i] = d.ID + "/" + d.Health
	}
	return out
}

// AllocateIDs sends one Allocate with a container request per ID list.
func (c *Client) AllocateIDs(ctx context.Context, idsPerContainer ...[]string) (*pluginapi.AllocateResponse, error) {
	req := &pluginapi.AllocateRequest{}
	for _, ids := range idsPerContainer {
		req.ContainerRequests = append(req.ContainerRequests, &pluginapi.ContainerAllocateRequest{DevicesIds: ids})
	}
	return c.Allocate(ctx, req)
}

// CDINames returns the CDI device names of one container's answer.
func CDINames(r *pluginapi.ContainerAllocateResponse) []string {
	var out []string
	for _, d := range r.CdiDevices {
		out = append(out, d.Name)
	}
	return out
}

// NextList waits up to timeout for a list from a Watch channel that
// satisfies ok and returns it; it fails t when the stream ends or time
// runs out, naming what it waited for and the last list seen. extra, when
// set, adds context to the failure (a plugin log).
func NextList(t testing.TB, ch <-chan []*pluginapi.Device, timeout time.Duration, what string, ok func([]*pluginapi.Device) bool, extra fmt.Stringer) []*pluginapi.Device {
	t.Helper()
	deadline := time.After(timeout)
	var last []*pluginapi.Device
	tail := ""
	if extra != nil {
		tail = "\nlog:\n" + extra.String()
	}
	for {
		select {
		case l, open := <-ch:
			if !open {
				t.Fatalf("ListAndWatch ended while waiting for %s; last list %v%s", what, IDs(last), tail)
			}
			last = l
			if ok(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s; last list %v%s", what, IDs(last), tail)
		}
	}
}
