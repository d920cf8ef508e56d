package spec_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// devicesOf scans a fake node built from the fixtures.
func devicesOf(t testing.TB, fixtures ...func(*fakenode.Node) error) []discovery.Device {
	t.Helper()
	n := fakenode.NewT(t)
	n.MustApply(t, fixtures...)
	res, err := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev)).Scan()
	if err != nil {
		t.Fatal(err)
	}
	return res.Devices
}

func newBuilder(t testing.TB, opts ...spec.Option) *spec.Builder {
	t.Helper()
	b, err := spec.NewBuilder(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func deviceNames(s *specs.Spec) []string {
	var out []string
	for _, d := range s.Devices {
		out = append(out, d.Name)
	}
	return out
}

func TestBuildNamesEveryUsableGPUTwiceAndAll(t *testing.T) {
	tests := []struct {
		name    string
		fixture func(*fakenode.Node) error
		want    []string
	}{
		{name: "an integrated GPU is card0, its PCI address and all", fixture: fakenode.IGPU,
			want: []string{"card0", "0000:00:02.0", "all"}},
		{name: "an integrated and a discrete GPU come in card order", fixture: fakenode.DiscreteXe,
			want: []string{"card0", "0000:00:02.0", "card1", "0000:03:00.0", "all"}},
		{name: "a PF with VFs enabled contributes only its VFs", fixture: fakenode.SRIOV,
			want: []string{"card2", "0000:03:00.1", "card3", "0000:03:00.2", "all"}},
		{name: "the Tricky node leaves out other vendors, simpledrm and the GPU without nodes", fixture: fakenode.Tricky,
			want: []string{"card2", "0000:00:02.0", "card10", "0000:03:00.0", "all"}},
		{name: "the Demo node has three GPUs", fixture: fakenode.Demo,
			want: []string{"card0", "0000:00:02.0", "card1", "0000:03:00.0", "card2", "0000:07:00.0", "all"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devs := devicesOf(t, tt.fixture)
			s, err := newBuilder(t).Build(devs)
			if err != nil {
				t.Fatal(err)
			}
			if got := deviceNames(s); !slices.Equal(got, tt.want) {
				t.Errorf("device names = %v, want %v", got, tt.want)
			}
			if s.Kind != "intel.com/gpu" || s.Version != "0.5.0" {
				t.Errorf("kind %q cdiVersion %q, want intel.com/gpu and 0.5.0", s.Kind, s.Version)
			}
			// "all" holds the nodes of every named GPU exactly once.
			var want []*specs.DeviceNode
			for _, d := range s.Devices[:len(s.Devices)-1] {
				if !strings.HasPrefix(d.Name, "card") {
					continue
				}
				want = append(want, d.ContainerEdits.DeviceNodes...)
			}
			if all := s.Devices[len(s.Devices)-1]; !reflect.DeepEqual(all.ContainerEdits.DeviceNodes, want) {
				t.Errorf("all has nodes %v, want %v", paths(all.ContainerEdits.DeviceNodes), paths(want))
			}
			for _, f := range []spec.Format{spec.FormatYAML, spec.FormatJSON} {
				data, err := spec.Marshal(s, f)
				if err != nil {
					t.Fatal(err)
				}
				if err := spec.Validate(data); err != nil {
					t.Errorf("%s spec rejected: %v", f, err)
				}
			}
		})
	}
}

func paths(nodes []*specs.DeviceNode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Path)
	}
	return out
}

// igpuDevice is a ready integrated GPU as discovery reports it.
func igpuDevice() discovery.Device {
	return discovery.Device{
		Card: "card0", Render: "renderD128", PCIAddress: "0000:00:02.0",
		VendorID: "0x8086", DeviceID: "0x46a6", Class: "0x030000", Driver: "i915", NUMANode: -1,
		SRIOV:      discovery.SRIOV{Role: discovery.RoleNone},
		CardNode:   discovery.Node{Path: "/dev/dri/card0", HostPath: "/host/dev/dri/card0", Major: 226, Minor: 0},
		RenderNode: &discovery.Node{Path: "/dev/dri/renderD128", HostPath: "/host/dev/dri/renderD128", Major: 226, Minor: 128},
		ByPath: []discovery.Link{
			{Path: "/dev/dri/by-path/pci-0000:00:02.0-card", HostPath: "/host/dev/dri/by-path/pci-0000:00:02.0-card"},
			{Path: "/dev/dri/by-path/pci-0000:00:02.0-render", HostPath: "/host/dev/dri/by-path/pci-0000:00:02.0-render"},
		},
		Ready: true,
	}
}

func TestBuildContainerEdits(t *testing.T) {
	nodes := []*specs.DeviceNode{
		{Path: "/dev/dri/card0", HostPath: "/host/dev/dri/card0", Permissions: "rw"},
		{Path: "/dev/dri/renderD128", HostPath: "/host/dev/dri/renderD128", Permissions: "rw"},
	}
	mounts := []*specs.Mount{
		{HostPath: "/host/dev/dri/by-path/pci-0000:00:02.0-card", ContainerPath: "/dev/dri/by-path/pci-0000:00:02.0-card", Options: []string{"bind"}},
		{HostPath: "/host/dev/dri/by-path/pci-0000:00:02.0-render", ContainerPath: "/dev/dri/by-path/pci-0000:00:02.0-render", Options: []string{"bind"}},
	}
	noRender := igpuDevice()
	noRender.Render, noRender.RenderNode, noRender.ByPath = "", nil, noRender.ByPath[:1]
	atHome := igpuDevice()
	atHome.CardNode.HostPath, atHome.RenderNode.HostPath = atHome.CardNode.Path, atHome.RenderNode.Path
	tests := []struct {
		name   string
		byPath spec.ByPath
		dev    discovery.Device
		want   specs.ContainerEdits
	}{
		{name: "single mode binds the GPU's own by-path links", byPath: spec.ByPathSingle, dev: igpuDevice(),
			want: specs.ContainerEdits{DeviceNodes: nodes, Mounts: mounts}},
		{name: "none mode leaves the by-path links out", byPath: spec.ByPathNone, dev: igpuDevice(),
			want: specs.ContainerEdits{DeviceNodes: nodes}},
		{name: "a GPU without a render node gets only its card", byPath: spec.ByPathSingle, dev: noRender,
			want: specs.ContainerEdits{DeviceNodes: nodes[:1], Mounts: mounts[:1]}},
		{name: "a host path equal to the path is left out, as the runtime takes the path then", byPath: spec.ByPathNone, dev: atHome,
			want: specs.ContainerEdits{DeviceNodes: []*specs.DeviceNode{
				{Path: "/dev/dri/card0", Permissions: "rw"},
				{Path: "/dev/dri/renderD128", Permissions: "rw"},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newBuilder(t, spec.WithByPath(tt.byPath)).Build([]discovery.Device{tt.dev})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range s.Devices {
				if !reflect.DeepEqual(d.ContainerEdits, tt.want) {
					t.Errorf("%s: edits\n%s\nwant\n%s", d.Name, mustJSON(t, d.ContainerEdits), mustJSON(t, tt.want))
				}
			}
		})
	}
}

func TestBuildGivesEachDeviceItsOwnEdits(t *testing.T) {
	s, err := newBuilder(t).Build([]discovery.Device{igpuDevice()})
	if err != nil {
		t.Fatal(err)
	}
	before := mustJSON(t, s.Devices[1:])
	s.Devices[0].ContainerEdits.DeviceNodes[0].HostPath = "/elsewhere"
	s.Devices[0].ContainerEdits.Mounts[0].Options[0] = "rbind"
	s.Devices[0].ContainerEdits.DeviceNodes = append(s.Devices[0].ContainerEdits.DeviceNodes[:1], &specs.DeviceNode{Path: "/dev/x"})
	if after := mustJSON(t, s.Devices[1:]); after != before {
		t.Errorf("editing card0 changed the other devices:\n%s\nwas\n%s", after, before)
	}
}

func TestBuildKindAndVersion(t *testing.T) {
	tests := []struct {
		name                  string
		opts                  []spec.Option
		kind, file, qualified string
		version               string
	}{
		{name: "the default kind is intel.com/gpu at cdiVersion 0.5.0",
			kind: "intel.com/gpu", file: "intel.com-gpu", qualified: "intel.com/gpu=card0", version: "0.5.0"},
		{name: "vendor and class can be chosen", opts: []spec.Option{spec.WithVendor("example.com"), spec.WithClass("igpu")},
			kind: "example.com/igpu", file: "example.com-igpu", qualified: "example.com/igpu=card0", version: "0.5.0"},
		{name: "a class with a dot needs cdiVersion 0.6.0", opts: []spec.Option{spec.WithClass("gpu.v2")},
			kind: "intel.com/gpu.v2", file: "intel.com-gpu.v2", qualified: "intel.com/gpu.v2=card0", version: "0.6.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t, tt.opts...)
			s, err := b.Build([]discovery.Device{igpuDevice()})
			if err != nil {
				t.Fatal(err)
			}
			got := []string{b.Kind(), s.Kind, b.FileName(), b.QualifiedName("card0"), s.Version}
			want := []string{tt.kind, tt.kind, tt.file, tt.qualified, tt.version}
			if !slices.Equal(got, want) {
				t.Errorf("kind, spec kind, file name, qualified name, cdiVersion = %q, want %q", got, want)
			}
		})
	}
}

func TestBuildWithoutUsableGPUsReturnsErrNoDevices(t *testing.T) {
	notReady := igpuDevice()
	notReady.Ready, notReady.Reason = false, "device node /dev/dri/card0: no such file or directory"
	pf := igpuDevice()
	pf.SRIOV = discovery.SRIOV{Role: discovery.RolePF, NumVFs: 2, TotalVFs: 7}
	pf.Reason = "physical function with 2 VFs enabled: its VFs are handed out instead"
	tests := []struct {
		name string
		devs []discovery.Device
	}{
		{name: "no GPU at all"},
		{name: "only a GPU whose nodes are missing", devs: []discovery.Device{notReady}},
		{name: "only a PF whose VFs are handed out", devs: []discovery.Device{pf}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newBuilder(t).Build(tt.devs)
			if !errors.Is(err, spec.ErrNoDevices) || s != nil {
				t.Errorf("Build = %v, %v; want nil, ErrNoDevices", s, err)
			}
		})
	}
}

func TestNewBuilderRejectsWhatCDIWouldNot(t *testing.T) {
	tests := []struct {
		name string
		opt  spec.Option
		want string
	}{
		{name: "an empty vendor", opt: spec.WithVendor(""), want: `vendor ""`},
		{name: "a vendor that starts with a digit", opt: spec.WithVendor("1ntel.com"), want: `vendor "1ntel.com"`},
		{name: "a vendor with a slash", opt: spec.WithVendor("intel.com/x"), want: `vendor "intel.com/x"`},
		{name: "a class with an equals sign", opt: spec.WithClass("gpu=0"), want: `class "gpu=0"`},
		{name: "a class that ends with a dash", opt: spec.WithClass("gpu-"), want: `class "gpu-"`},
		{name: "an unknown by-path mode", opt: spec.WithByPath("all"), want: `invalid by-path mode "all"`},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			b, err := spec.NewBuilder(tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewBuilder = %v, %v; want an error containing %q", b, err, tt.want)
			}
		})
	}
}

func TestParseByPath(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    spec.ByPath
		wantErr bool
	}{
		{name: "single is a mode", in: "single", want: spec.ByPathSingle},
		{name: "none is a mode", in: "none", want: spec.ByPathNone},
		{name: "an empty value is refused", in: "", wantErr: true},
		{name: "modes are lower-case", in: "Single", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spec.ParseByPath(tt.in)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("ParseByPath(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
