package spec_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// parsers are the two ways runtimes read a spec: the CDI library this
// module builds with (go.yaml.in/yaml/v3, unknown fields refused), and
// sigs.k8s.io/yaml's strict unmarshal (YAML 1.1 through JSON), which is
// how CDI 0.5.x reads, the version podman 4.3 to 4.6 bundle.
var parsers = []struct {
	name  string
	parse func([]byte) (*specs.Spec, error)
}{
	{"the CDI library's ParseSpec", cdiapi.ParseSpec},
	{"sigs.k8s.io/yaml's UnmarshalStrict, as CDI 0.5 reads", func(b []byte) (*specs.Spec, error) {
		var s *specs.Spec
		err := yaml.UnmarshalStrict(b, &s)
		return s, err
	}},
}

// readsBack fails t unless data, by every parser, is exactly s.
func readsBack(t *testing.T, data []byte, s *specs.Spec) {
	t.Helper()
	for _, p := range parsers {
		got, err := p.parse(data)
		if err != nil {
			t.Fatalf("%s refuses what Marshal wrote: %v\n%s", p.name, err, data)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("%s reads back another spec:\n%s\nwant\n%s\nfrom\n%s", p.name, mustJSON(t, got), mustJSON(t, s), data)
		}
	}
}

func TestMarshalReadsBackAsTheSpecItWasGiven(t *testing.T) {
	many := func(n *fakenode.Node) error { return fakenode.Many(n, 64) }
	fixtures := []struct {
		name    string
		fixture func(*fakenode.Node) error
	}{
		{"IGPU", fakenode.IGPU}, {"DiscreteXe", fakenode.DiscreteXe}, {"SRIOV", fakenode.SRIOV},
		{"Tricky", fakenode.Tricky}, {"Demo", fakenode.Demo}, {"Many(64)", many},
	}
	for _, fx := range fixtures {
		devs := devicesOf(t, fx.fixture)
		for _, byPath := range []spec.ByPath{spec.ByPathSingle, spec.ByPathNone} {
			s, err := newBuilder(t, spec.WithByPath(byPath)).Build(devs)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
				t.Run(fmt.Sprintf("the %s node, by-path %s, in %s", fx.name, byPath, f), func(t *testing.T) {
					data, err := spec.Marshal(s, f)
					if err != nil {
						t.Fatal(err)
					}
					readsBack(t, data, s)
					if err := spec.Validate(data); err != nil {
						t.Errorf("the CDI library refuses the spec: %v", err)
					}
				})
			}
		}
	}
}

func TestMarshalLayout(t *testing.T) {
	s := igpuSpec(t)
	t.Run("JSON has one device per line and ends in a newline", func(t *testing.T) {
		data, err := spec.Marshal(s, spec.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		want := []string{`{"cdiVersion":"0.5.0","kind":"intel.com/gpu","devices":[`, `{"name":"card0",`, `{"name":"0000:00:02.0",`, `{"name":"all",`, "]}"}
		if len(lines) != len(want) || !strings.HasSuffix(string(data), "]}\n") {
			t.Fatalf("JSON lines:\n%s\nwant %d lines starting %q", data, len(want), want)
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]) {
				t.Errorf("line %d is %q, want it to start %q", i+1, l, want[i])
			}
		}
	})
	t.Run("YAML is block style in the order of the spec's fields", func(t *testing.T) {
		data, err := spec.Marshal(s, spec.FormatYAML)
		if err != nil {
			t.Fatal(err)
		}
		start := "cdiVersion: \"0.5.0\"\nkind: intel.com/gpu\ndevices:\n- name: card0\n  containerEdits:\n    deviceNodes:\n    - path: /dev/dri/card0\n"
		if !strings.HasPrefix(string(data), start) || !strings.HasSuffix(string(data), "\n") {
			t.Errorf("YAML:\n%s\nwant it to start\n%s", data, start)
		}
	})
	t.Run("an unknown format is an error", func(t *testing.T) {
		if _, err := spec.Marshal(s, "toml"); err == nil || !strings.Contains(err.Error(), `"toml"`) {
			t.Errorf("Marshal toml: %v", err)
		}
	})
}

func TestMarshalRefusesWhatItCannotWrite(t *testing.T) {
	mode := os.FileMode(0o600)
	id := uint32(7)
	tests := []struct {
		name string
		edit func(s *specs.Spec)
		want string
	}{
		{"annotations on the spec", func(s *specs.Spec) { s.Annotations = map[string]string{"a": "b"} }, "the spec sets annotations"},
		{"annotations on a device", func(s *specs.Spec) { s.Devices[0].Annotations = map[string]string{"a": "b"} }, `device "card0" sets annotations`},
		{"env", func(s *specs.Spec) { s.Devices[1].ContainerEdits.Env = []string{"A=1"} }, `"0000:00:02.0" sets containerEdits.env`},
		{"hooks on the spec", func(s *specs.Spec) { s.ContainerEdits.Hooks = []*specs.Hook{{HookName: "x", Path: "/x"}} }, "the spec sets containerEdits.hooks"},
		{"net devices", func(s *specs.Spec) { s.Devices[0].ContainerEdits.NetDevices = []*specs.LinuxNetDevice{{Name: "eth1"}} }, "containerEdits.netDevices"},
		{"intelRdt", func(s *specs.Spec) { s.Devices[0].ContainerEdits.IntelRdt = &specs.IntelRdt{ClosID: "x"} }, "containerEdits.intelRdt"},
		{"additional GIDs", func(s *specs.Spec) { s.Devices[0].ContainerEdits.AdditionalGIDs = []uint32{5} }, "containerEdits.additionalGids"},
		{"a node's file mode", func(s *specs.Spec) { s.Devices[2].ContainerEdits.DeviceNodes[1].FileMode = &mode }, `"all" sets containerEdits.deviceNodes.fileMode`},
		{"a node's uid", func(s *specs.Spec) { s.Devices[0].ContainerEdits.DeviceNodes[0].UID = &id }, "deviceNodes.uid"},
		{"a node's gid", func(s *specs.Spec) { s.Devices[0].ContainerEdits.DeviceNodes[0].GID = &id }, "deviceNodes.gid"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused, named", func(t *testing.T) {
			s := igpuSpec(t)
			tt.edit(s)
			for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
				data, err := spec.Marshal(s, f)
				if !errors.Is(err, spec.ErrUnsupportedField) || !strings.Contains(err.Error(), tt.want) || data != nil {
					t.Errorf("Marshal %s = %q, %v; want ErrUnsupportedField naming %q", f, data, err, tt.want)
				}
			}
		})
	}
	others := []struct {
		name string
		edit func(s *specs.Spec)
		want string
	}{
		{"a nil node", func(s *specs.Spec) { s.Devices[0].ContainerEdits.DeviceNodes[0] = nil }, `"card0": a device node is nil`},
		{"a nil mount", func(s *specs.Spec) { s.Devices[0].ContainerEdits.Mounts[0] = nil }, `"card0": a mount is nil`},
		{"a path that is not UTF-8", func(s *specs.Spec) { s.Devices[0].ContainerEdits.Mounts[0].HostPath = "/dev/\xff" }, `"/dev/\xff" is not valid UTF-8`},
	}
	for _, tt := range others {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			s := igpuSpec(t)
			tt.edit(s)
			for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
				data, err := spec.Marshal(s, f)
				if err == nil || !strings.Contains(err.Error(), tt.want) || data != nil {
					t.Errorf("Marshal %s = %q, %v; want an error containing %q", f, data, err, tt.want)
				}
			}
		})
	}
}

// TestTheEncoderKnowsEveryFieldOfTheCDISpec fails when an update of the
// CDI library adds a field: Marshal must then learn to write it or refuse
// it (encode.go, supported), so that no field is dropped silently.
func TestTheEncoderKnowsEveryFieldOfTheCDISpec(t *testing.T) {
	known := []struct {
		typ    any
		fields []string
	}{
		{specs.Spec{}, []string{"Version", "Kind", "Annotations", "Devices", "ContainerEdits"}},
		{specs.Device{}, []string{"Name", "Annotations", "ContainerEdits"}},
		{specs.ContainerEdits{}, []string{"Env", "DeviceNodes", "NetDevices", "Hooks", "Mounts", "IntelRdt", "AdditionalGIDs"}},
		{specs.DeviceNode{}, []string{"Path", "HostPath", "Type", "Major", "Minor", "FileMode", "Permissions", "UID", "GID"}},
		{specs.Mount{}, []string{"HostPath", "ContainerPath", "Options", "Type"}},
	}
	for _, k := range known {
		rt := reflect.TypeOf(k.typ)
		var got []string
		for i := range rt.NumField() {
			got = append(got, rt.Field(i).Name)
		}
		if !slices.Equal(got, k.fields) {
			t.Errorf("specs.%s has fields %v; the encoder knows %v", rt.Name(), got, k.fields)
		}
	}
}

// tricky are strings that YAML or JSON could read as something else, or
// that need escaping in one of them.
var tricky = []string{
	"", "card0", "0000:00:02.0", "/dev/dri/by-path/pci-0000:00:02.0-card", "intel.com/gpu", "0.5.0", "rw", "c",
	"bind", "yes", "No", "ON", "off", "y", "n", "true", "False", "null", "Null", "~", "-", "- x", "-x", "a: b",
	"a:b", "a:", ":", "#x", "x #y", "x#y", "[x]", "{x}", "x,y", "'q'", `"dq"`, `back\slash`, "tab\tx", "nl\nx",
	"cr\rx", "\x00", "\x1f", "\x7f", "\u0085", "\u00a0", "\u2028", "\u2029", "\ufeff", "\ufffe", "\uffff", "é",
	"日本", "😀", "0x1f", "0o17", "017", "1e3", "1_000", "1:20", "1:20.5", ".inf", "-.Inf", ".NaN", "2001-12-14",
	"<<", "=", "!tag", "!!str", "&a", "*a", "%x", "@x", "`x", "|", ">", "?", "? x", " lead", "trail ", "/", "//",
	"/a/../b", "a/b", "_x", "x_", "--", "---", "...", "a.b", "Y", "NULL", "<x>", "&", "\\u0041",
}

// specFrom turns fuzz input into a spec that uses every field the encoder
// writes, with strings from tricky or raw bytes (UTF-8 or not).
func specFrom(data []byte) *specs.Spec {
	b := fuzzBytes(data)
	str := func() string {
		c := b.next()
		if c < 224 {
			return tricky[int(c)%len(tricky)]
		}
		n := min(int(b.next()%16), len(b))
		s := string(b[:n])
		b = b[n:]
		return s
	}
	num := func() int64 {
		var v int64
		for range 8 {
			v = v<<8 | int64(b.next())
		}
		if b.next()%2 == 0 {
			return v % 4096
		}
		return v
	}
	edits := func() specs.ContainerEdits {
		var e specs.ContainerEdits
		for range b.next() % 4 {
			e.DeviceNodes = append(e.DeviceNodes, &specs.DeviceNode{Path: str(), HostPath: str(), Type: str(), Major: num(), Minor: num(), Permissions: str()})
		}
		for range b.next() % 3 {
			m := &specs.Mount{HostPath: str(), ContainerPath: str(), Type: str()}
			for range b.next() % 3 {
				m.Options = append(m.Options, str())
			}
			e.Mounts = append(e.Mounts, m)
		}
		return e
	}
	s := &specs.Spec{Version: str(), Kind: str()}
	for range 1 + b.next()%3 {
		s.Devices = append(s.Devices, specs.Device{Name: str(), ContainerEdits: edits()})
	}
	if b.next()%2 == 1 {
		s.ContainerEdits = edits()
	}
	return s
}

// stringsOf lists every string of a spec made by specFrom.
func stringsOf(s *specs.Spec) []string {
	out := []string{s.Version, s.Kind}
	add := func(e *specs.ContainerEdits) {
		for _, n := range e.DeviceNodes {
			out = append(out, n.Path, n.HostPath, n.Type, n.Permissions)
		}
		for _, m := range e.Mounts {
			out = append(out, m.HostPath, m.ContainerPath, m.Type)
			out = append(out, m.Options...)
		}
	}
	for i := range s.Devices {
		out = append(out, s.Devices[i].Name)
		add(&s.Devices[i].ContainerEdits)
	}
	add(&s.ContainerEdits)
	return out
}

// FuzzMarshal checks the encoder on specs no scan makes: every string,
// number and shape reads back exactly, in both formats and by both
// parsers, or, for a string that is not UTF-8 (which neither format can
// hold), Marshal refuses.
func FuzzMarshal(f *testing.F) {
	f.Add([]byte{})
	for i := range len(tricky) {
		f.Add([]byte{2, byte(i), byte(i + 1), byte(i), 3, byte(i + 2), byte(i), byte(i + 3), 1, 2, 3, 4, 5, 6, 7, 8, 0, byte(i + 4), 2, byte(i + 5), byte(i + 6), byte(i + 7), 2, byte(i + 8), byte(i + 9)})
	}
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 1})
	f.Add([]byte{250, 3, 0xff, 'a', 'b'})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := specFrom(data)
		utf8OK := !slices.ContainsFunc(stringsOf(s), func(v string) bool { return !utf8.ValidString(v) })
		for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
			out, err := spec.MarshalUnchecked(s, f)
			switch {
			case !utf8OK && (err == nil || !strings.Contains(err.Error(), "not valid UTF-8")):
				t.Fatalf("Marshal %s of a spec with a string that is not UTF-8 = %v\n%s", f, err, out)
			case !utf8OK:
				continue
			case err != nil:
				t.Fatalf("Marshal %s: %v", f, err)
			}
			readsBack(t, out, s)
		}
	})
}

// nodeDevices are count ready GPUs as discovery reports them on a real
// node (host paths below /dev, so equal to the paths): the shape whose
// bytes per GPU BenchmarkMarshal reports.
func nodeDevices(count int) []discovery.Device {
	devs := make([]discovery.Device, count)
	for i := range devs {
		pci := fakenode.ManyPCI(i)
		card, render := fmt.Sprintf("card%d", i), fmt.Sprintf("renderD%d", 128+i)
		devs[i] = discovery.Device{
			Card: card, Render: render, PCIAddress: pci, Ready: true,
			CardNode:   discovery.Node{Path: "/dev/dri/" + card, HostPath: "/dev/dri/" + card, Major: 226, Minor: uint32(i)},
			RenderNode: &discovery.Node{Path: "/dev/dri/" + render, HostPath: "/dev/dri/" + render, Major: 226, Minor: uint32(128 + i)},
			ByPath: []discovery.Link{
				{Path: "/dev/dri/by-path/pci-" + pci + "-card", HostPath: "/dev/dri/by-path/pci-" + pci + "-card"},
				{Path: "/dev/dri/by-path/pci-" + pci + "-render", HostPath: "/dev/dri/by-path/pci-" + pci + "-render"},
			},
		}
	}
	return devs
}

// BenchmarkMarshal is encoding alone, of the spec of count GPUs of a real
// node; bytes/GPU is the size of the file divided by the GPUs.
func BenchmarkMarshal(b *testing.B) {
	for _, count := range benchSizes {
		s, err := newBuilder(b).Build(nodeDevices(count))
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
			b.Run(fmt.Sprintf("gpus=%d/format=%s", count, f), func(b *testing.B) {
				var size int
				loop(b, func() {
					data, err := spec.Marshal(s, f)
					if err != nil {
						b.Fatal(err)
					}
					size = len(data)
				})
				b.ReportMetric(float64(size)/float64(count), "bytes/GPU")
			})
		}
	}
}
