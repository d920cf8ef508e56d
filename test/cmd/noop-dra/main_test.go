package main

import (
	"context"
	"fmt"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
)

func TestResourcesPublishNDevicesAtMost128ToASlice(t *testing.T) {
	for _, n := range []int{1, 64, 128, 129, 300} {
		r := resources("node-a", n)
		pool, ok := r.Pools["node-a"]
		if !ok || len(r.Pools) != 1 {
			t.Fatalf("%d devices: pools %v, want node-a alone", n, r.Pools)
		}
		seen := map[string]bool{}
		for _, s := range pool.Slices {
			if len(s.Devices) > 128 {
				t.Errorf("%d devices: a slice of %d", n, len(s.Devices))
			}
			for _, d := range s.Devices {
				seen[d.Name] = true
			}
		}
		if len(seen) != n {
			t.Errorf("%d devices: %d distinct names published", n, len(seen))
		}
	}
	if got := resources("n", 33).Pools["n"].Slices[0].Devices[32].Name; got != "gpu-0000-02-00-0" {
		t.Errorf("device 32 is %q, want the name intel-gpu-cdi-dra gives 0000:02:00.0", got)
	}
}

func claim(uid string, results ...resourceapi.DeviceRequestAllocationResult) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c-" + uid, UID: types.UID(uid)}}
	if results != nil {
		c.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: results}}
	}
	return c
}

func TestPrepareAnswersTheConstantNameForEachDeviceOfTheDriver(t *testing.T) {
	p := &plugin{driver: "gpu.intel.com"}
	mine := resourceapi.DeviceRequestAllocationResult{Request: "gpu", Driver: "gpu.intel.com", Pool: "node-a", Device: "gpu-0000-01-05-0"}
	other := resourceapi.DeviceRequestAllocationResult{Request: "nic", Driver: "nic.example.com", Pool: "node-a", Device: "eth1"}
	out, err := p.PrepareResourceClaims(context.Background(), []*resourceapi.ResourceClaim{claim("a", mine, other), claim("b")})
	if err != nil {
		t.Fatal(err)
	}
	want := []kubeletplugin.Device{{Requests: []string{"gpu"}, PoolName: "node-a", DeviceName: "gpu-0000-01-05-0", CDIDeviceIDs: []string{CDIName}}}
	if got := out["a"]; got.Err != nil || fmt.Sprint(got.Devices) != fmt.Sprint(want) {
		t.Errorf("claim a: %+v, want %+v", got, want)
	}
	if got := out["b"]; got.Err == nil {
		t.Errorf("an unallocated claim was prepared: %+v", got)
	}
	un, err := p.UnprepareResourceClaims(context.Background(), []kubeletplugin.NamespacedObject{{UID: "a"}})
	if err != nil || len(un) != 1 || un["a"] != nil {
		t.Errorf("Unprepare = %v, %v; want claim a done", un, err)
	}
}
