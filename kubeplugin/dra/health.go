package dra

import (
	"context"
	"slices"
	"strings"
	"time"

	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/latest"
)

// hub holds the current inventory and wakes the health streams when a new
// one is published.
type hub = latest.Value[*inventory]

// goneMessage is the health message of a prepared device whose GPU left
// the node.
const goneMessage = "the GPU is no longer on the node"

// WatchHealthStatus streams the health of every device to the kubelet,
// which shows it in the status of the pods that use them
// (allocatedResourcesStatus): a report at once, one on every change of the
// node, and the same again every HealthResend, because the kubelet takes a
// device whose health was not refreshed within 30 s as Unknown. A GPU that
// left the node while a claim still holds it is reported Unhealthy until
// that claim is unprepared, so its pod shows why its GPU is gone.
func (d *Driver) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	resend := time.NewTicker(d.cfg.HealthResend)
	defer resend.Stop()
	for {
		inv, changed := d.hub.Load()
		select {
		case <-ctx.Done():
			return nil
		case reports <- d.healthReport(inv, time.Now()):
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-resend.C:
		}
	}
}

// healthReport covers every device of inv and every prepared device that
// left it.
func (d *Driver) healthReport(inv *inventory, now time.Time) kubeletplugin.DeviceHealthReport {
	pool := d.cfg.NodeName
	devs := make([]kubeletplugin.DeviceHealth, 0, len(inv.byName))
	for name, g := range inv.byName {
		h := kubeletplugin.DeviceHealth{PoolName: pool, DeviceName: name, Health: kubeletplugin.HealthStatusHealthy, LastUpdated: now}
		if !g.Healthy {
			h.Health, h.Message = kubeletplugin.HealthStatusUnhealthy, g.Reason
		}
		devs = append(devs, h)
	}
	for name := range *d.preparedNames.Load() {
		if _, ok := inv.byName[name]; !ok {
			devs = append(devs, kubeletplugin.DeviceHealth{
				PoolName: pool, DeviceName: name, Health: kubeletplugin.HealthStatusUnhealthy, LastUpdated: now, Message: goneMessage,
			})
		}
	}
	slices.SortFunc(devs, func(a, b kubeletplugin.DeviceHealth) int { return strings.Compare(a.DeviceName, b.DeviceName) })
	return kubeletplugin.DeviceHealthReport{Devices: devs}
}
