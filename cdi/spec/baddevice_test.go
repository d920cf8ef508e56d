package spec_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

func TestBuildRefusesADeviceNoSpecCanCarry(t *testing.T) {
	other := func(edit func(d *discovery.Device)) discovery.Device {
		d := igpuDevice()
		d.Card, d.PCIAddress = "card1", "0000:03:00.0"
		d.CardNode.Path, d.CardNode.HostPath = "/dev/dri/card1", "/host/dev/dri/card1"
		d.Render, d.RenderNode, d.ByPath = "", nil, nil
		edit(&d)
		return d
	}
	tests := []struct {
		name  string
		devs  []discovery.Device
		wants []string // in the error
	}{
		{"a second GPU at the same PCI address", []discovery.Device{igpuDevice(), other(func(d *discovery.Device) { d.PCIAddress = "0000:00:02.0" })}, []string{`"0000:00:02.0"`, "already"}},
		{"a second GPU with the same card name", []discovery.Device{igpuDevice(), other(func(d *discovery.Device) { d.Card = "card0" })}, []string{`"card0"`, "already"}},
		{"a card named like the device of all GPUs", []discovery.Device{other(func(d *discovery.Device) { d.Card = spec.AllDevice })}, []string{`"all"`, "already"}},
		{"an empty card name", []discovery.Device{other(func(d *discovery.Device) { d.Card = "" })}, []string{`"0000:03:00.0"`, "empty"}},
		{"a card name with a slash", []discovery.Device{other(func(d *discovery.Device) { d.Card = "card/1" })}, []string{`"card/1"`}},
		{"a relative host path", []discovery.Device{other(func(d *discovery.Device) { d.CardNode.HostPath = "dev/dri/card1" })}, []string{`"dev/dri/card1"`, "not absolute"}},
		{"a relative by-path link", []discovery.Device{other(func(d *discovery.Device) {
			d.ByPath = []discovery.Link{{Path: "/dev/dri/by-path/pci-0000:03:00.0-card", HostPath: "by-path/x"}}
		})}, []string{`"by-path/x"`, "not absolute"}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is an error naming it, not a spec the CDI library refuses", func(t *testing.T) {
			s, err := newBuilder(t).Build(tt.devs)
			if !errors.Is(err, spec.ErrBadDevice) {
				t.Fatalf("Build = %v, %v; want ErrBadDevice", s, err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %s", err, w)
				}
			}
		})
	}

	t.Run("an unusable GPU is left out, whatever its names", func(t *testing.T) {
		bad := other(func(d *discovery.Device) { d.PCIAddress, d.Ready, d.Reason = "0000:00:02.0", false, "not ready" })
		if _, err := newBuilder(t).Build([]discovery.Device{igpuDevice(), bad}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a relative by-path link does not matter when links are left out", func(t *testing.T) {
		d := other(func(d *discovery.Device) { d.ByPath = []discovery.Link{{Path: "x", HostPath: "y"}} })
		if _, err := newBuilder(t, spec.WithByPath(spec.ByPathNone)).Build([]discovery.Device{d}); err != nil {
			t.Fatal(err)
		}
	})
}
