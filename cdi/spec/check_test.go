package spec_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

// libraryVerdict is what the CDI library says of s as a runtime reads it:
// the file Marshal would write (without Check), read back by cdi.ReadSpec.
// ok is false when s cannot be encoded at all (a string that is not
// UTF-8), so that no file could hold it.
func libraryVerdict(t *testing.T, s *specs.Spec, f spec.Format) (verdict error, ok bool) {
	t.Helper()
	data, err := spec.MarshalUnchecked(s, f)
	switch {
	case err != nil && strings.Contains(err.Error(), "not valid UTF-8"):
		return nil, false
	case err != nil:
		// Any other failure would leave Check unchecked against the
		// library: the specs here use only fields the encoder writes.
		t.Fatalf("encoding the spec in %s: %v", f, err)
	}
	return spec.Validate(data), true
}

// agrees fails t unless Check and the library give s the same verdict in
// both encodings, and returns Check's.
func agrees(t *testing.T, s *specs.Spec) error {
	t.Helper()
	checked := spec.Check(s)
	if checked != nil && !errors.Is(checked, spec.ErrRefused) {
		t.Errorf("Check = %v, which is not ErrRefused", checked)
	}
	for _, f := range []spec.Format{spec.FormatJSON, spec.FormatYAML} {
		lib, ok := libraryVerdict(t, s, f)
		if !ok {
			continue
		}
		if (checked == nil) != (lib == nil) {
			data, _ := spec.MarshalUnchecked(s, f)
			t.Fatalf("in %s, Check says %v but the CDI library says %v of\n%s", f, checked, lib, data)
		}
	}
	return checked
}

// The refusals this table names are every class of the CDI library's
// validation that a spec of device nodes and mounts can meet, and each
// is produced for real: a case states the verdict it expects as well.
func TestCheckAgreesWithTheCDILibrary(t *testing.T) {
	node := func(s *specs.Spec) *specs.DeviceNode { return s.Devices[0].ContainerEdits.DeviceNodes[0] }
	tests := []struct {
		name   string
		edit   func(s *specs.Spec)
		refuse bool
	}{
		{"our own spec is accepted", func(*specs.Spec) {}, false},
		{"an unknown cdiVersion is refused", func(s *specs.Spec) { s.Version = "0.99.0" }, true},
		{"a cdiVersion that is no version is refused", func(s *specs.Spec) { s.Version = "latest" }, true},
		{"a cdiVersion older than the content needs is refused", func(s *specs.Spec) { s.Version = "0.3.0" }, true},
		{"a newer cdiVersion than needed is accepted", func(s *specs.Spec) { s.Version = "0.6.0" }, false},
		{"a kind without a class is refused", func(s *specs.Spec) { s.Kind = "intel.com" }, true},
		{"an empty kind is refused", func(s *specs.Spec) { s.Kind = "" }, true},
		{"a vendor starting with a dash is refused", func(s *specs.Spec) { s.Kind = "-intel.com/gpu" }, true},
		{"a class with a dot is refused", func(s *specs.Spec) { s.Kind = "intel.com/g.pu" }, true},
		{"a device name with a slash is refused", func(s *specs.Spec) { s.Devices[0].Name = "card/0" }, true},
		{"an empty device name is refused", func(s *specs.Spec) { s.Devices[0].Name = "" }, true},
		{"a device name ending in a dash is refused", func(s *specs.Spec) { s.Devices[0].Name = "card0-" }, true},
		{"two devices of one name are refused", func(s *specs.Spec) { s.Devices[1].Name = s.Devices[0].Name }, true},
		{"a device without edits is refused", func(s *specs.Spec) { s.Devices[0].ContainerEdits = specs.ContainerEdits{} }, true},
		{"a device with only mounts is accepted", func(s *specs.Spec) { s.Devices[0].ContainerEdits.DeviceNodes = nil }, false},
		{"no device at all is refused", func(s *specs.Spec) { s.Devices = nil }, true},
		{"a node without a path is refused", func(s *specs.Spec) { node(s).Path = "" }, true},
		{"a relative node path is accepted, as the library does", func(s *specs.Spec) { node(s).Path = "dri/card0" }, false},
		{"a node of an unknown type is refused", func(s *specs.Spec) { node(s).Type = "x" }, true},
		{"a char node type is accepted", func(s *specs.Spec) { node(s).Type = "c" }, false},
		{"a fifo node type is accepted", func(s *specs.Spec) { node(s).Type = "p" }, false},
		{"permissions beyond rwm are refused", func(s *specs.Spec) { node(s).Permissions = "rwx" }, true},
		{"permissions rwm are accepted", func(s *specs.Spec) { node(s).Permissions = "rwm" }, false},
		{"no permissions are accepted", func(s *specs.Spec) { node(s).Permissions = "" }, false},
		{"numbers on a node are accepted", func(s *specs.Spec) { node(s).Major, node(s).Minor = 226, 0 }, false},
		{"a mount without a host path is refused", func(s *specs.Spec) { s.Devices[0].ContainerEdits.Mounts[0].HostPath = "" }, true},
		{"a mount without a container path is refused", func(s *specs.Spec) { s.Devices[0].ContainerEdits.Mounts[0].ContainerPath = "" }, true},
		{"a mount type and options are accepted", func(s *specs.Spec) {
			m := s.Devices[0].ContainerEdits.Mounts[0]
			m.Type, m.Options = "bind", []string{"ro", "rbind"}
		}, false},
		{"spec-wide edits with a bad node are refused", func(s *specs.Spec) {
			s.ContainerEdits.DeviceNodes = []*specs.DeviceNode{{Path: "/dev/x", Permissions: "z"}}
		}, true},
		{"spec-wide edits with a good mount are accepted", func(s *specs.Spec) {
			s.ContainerEdits.Mounts = []*specs.Mount{{HostPath: "/a", ContainerPath: "/b"}}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := igpuSpec(t)
			tt.edit(s)
			if err := agrees(t, s); (err != nil) != tt.refuse {
				t.Errorf("Check = %v, want refused %v", err, tt.refuse)
			}
		})
	}
}

// checkedSpec turns fuzz input into specs around every refusal of
// TestCheckAgreesWithTheCDILibrary: versions, kinds, names, node types,
// permissions and paths from valid and invalid choices or raw bytes,
// duplicates, devices with no edits, and specs with no device.
func checkedSpec(data []byte) *specs.Spec {
	b := fuzzBytes(data)
	path := func() string { return b.mostly("/dev/dri/card0", "", "/dev/dri/renderD128", "dri/card1", "/") }
	edits := func() specs.ContainerEdits {
		var e specs.ContainerEdits
		for range b.next() % 3 {
			e.DeviceNodes = append(e.DeviceNodes, &specs.DeviceNode{
				Path: path(), HostPath: b.pick("", "/dev/dri/card0", "/host/dev/dri/card0"),
				Type:        b.mostly("", "c", "b", "u", "p", "x", "C"),
				Major:       int64(b.next() % 3 * 113),
				Minor:       int64(b.next() % 2 * 128),
				Permissions: b.mostly("rw", "", "rwm", "r", "mrw", "rwx", "none", "RW"),
			})
		}
		for range b.next() % 3 {
			e.Mounts = append(e.Mounts, &specs.Mount{
				HostPath: path(), ContainerPath: path(),
				Options: []string{b.pick("bind", "ro", "")},
				Type:    b.pick("", "bind", "tmpfs"),
			})
		}
		return e
	}
	s := &specs.Spec{
		Version: b.mostly("0.5.0", "0.3.0", "0.4.0", "0.6.0", "0.7.0", "1.0.0", "1.1.0", "0.99.0", "v0.5.0", "", "x"),
		Kind:    b.mostly("intel.com/gpu", "intel.com", "/gpu", "intel.com/", "a.b-c.com/g_p-u", "-x.com/gpu", "x.com/g.pu", "x/y/z"),
	}
	for range b.next() % 4 {
		s.Devices = append(s.Devices, specs.Device{
			Name:           b.pick("card0", "0000:03:00.0", "all", "card1", "", "card/0", "-card", "card-", "c.d", "a_b", "card0"),
			ContainerEdits: edits(),
		})
	}
	if b.next()%4 == 0 {
		s.ContainerEdits = edits()
	}
	return s
}

// mostly returns valid for half the bytes, else one of the others or raw
// bytes (see pick), so that a spec of many fields is still often valid.
func (b *fuzzBytes) mostly(valid string, others ...string) string {
	if b.next()%2 == 0 {
		return valid
	}
	return b.pick(others...)
}

// FuzzCheckAgreesWithTheCDILibrary holds Check to the CDI library on
// specs of every shape the encoder writes: whatever Check accepts, the
// library accepts from the file Marshal writes, in JSON and YAML, and
// whatever Check refuses, the library refuses.
func FuzzCheckAgreesWithTheCDILibrary(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{3, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 1, 0, 1, 1, 0, 5, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 5, 0})
	f.Add([]byte{0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0})
	f.Add([]byte{0, 0, 1, 4, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		agrees(t, checkedSpec(data))
	})
}

func ExampleCheck() {
	s := &specs.Spec{Version: "0.5.0", Kind: "intel.com/gpu", Devices: []specs.Device{
		{Name: "card0", ContainerEdits: specs.ContainerEdits{DeviceNodes: []*specs.DeviceNode{{Path: "/dev/dri/card0", Permissions: "rwx"}}}},
	}}
	fmt.Println(spec.Check(s))
	// Output: CDI spec rejected by the CDI library's rules: device "card0": device "/dev/dri/card0": invalid permissions "rwx"
}
