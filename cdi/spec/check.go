package spec

import (
	"errors"
	"fmt"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	specs "tags.cncf.io/container-device-interface/specs-go"
)

// ErrRefused is matched (errors.Is) by every refusal of Check: a spec the
// CDI library would refuse whole when a runtime reads it.
var ErrRefused = errors.New("CDI spec rejected by the CDI library's rules")

// Check refuses a spec that the CDI library would refuse when it reads
// the spec from a file (cdi.ReadSpec), with the library's own exported
// validators, in the order the library applies them: the cdiVersion must
// be known and express the content, the kind must be vendor/class with
// valid names, the edits of the spec and of every device must be valid,
// every device must have a valid name of its own and edits, and there
// must be a device.
//
// It is what Marshal checks, instead of reading the encoded bytes back
// through the library: that allocated as much as the file is large and,
// in the plugin, most of what start-up allocated. The bytes Marshal
// writes read back to exactly the spec checked (encode_test.go), and
// TestCheckAgreesWithTheCDILibrary and FuzzCheckAgreesWithTheCDILibrary
// hold Check to the library's verdict on the file.
//
// The library's spec annotations check accepts every map of strings, so
// none is made here; Marshal refuses annotations anyway.
func Check(s *specs.Spec) error {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
	}
	if err := specs.ValidateVersion(s); err != nil {
		return refuse("cdiVersion: %v", err)
	}
	vendor, class := parser.ParseQualifier(s.Kind)
	if err := parser.ValidateVendorName(vendor); err != nil {
		return refuse("kind %q: %v", s.Kind, err)
	}
	if err := parser.ValidateClassName(class); err != nil {
		return refuse("kind %q: %v", s.Kind, err)
	}
	if err := validEdits(&s.ContainerEdits); err != nil {
		return refuse("containerEdits: %v", err)
	}
	seen := make(map[string]struct{}, len(s.Devices))
	for i := range s.Devices {
		d := &s.Devices[i]
		if err := parser.ValidateDeviceName(d.Name); err != nil {
			return refuse("device %q: %v", d.Name, err)
		}
		if noEdits(&d.ContainerEdits) {
			return refuse("device %q: no container edits", d.Name)
		}
		if err := validEdits(&d.ContainerEdits); err != nil {
			return refuse("device %q: %v", d.Name, err)
		}
		if _, dup := seen[d.Name]; dup {
			return refuse("device %q is defined twice", d.Name)
		}
		seen[d.Name] = struct{}{}
	}
	if len(s.Devices) == 0 {
		return refuse("no devices")
	}
	return nil
}

// validEdits is the library's check of container edits. A nil node, mount,
// hook or net device (a file's `null`) would make it panic.
func validEdits(e *specs.ContainerEdits) error {
	for _, n := range e.DeviceNodes {
		if n == nil {
			return errors.New("a device node is nil")
		}
	}
	for _, m := range e.Mounts {
		if m == nil {
			return errors.New("a mount is nil")
		}
	}
	for _, h := range e.Hooks {
		if h == nil {
			return errors.New("a hook is nil")
		}
	}
	for _, d := range e.NetDevices {
		if d == nil {
			return errors.New("a net device is nil")
		}
	}
	return (&cdiapi.ContainerEdits{ContainerEdits: e}).Validate()
}

// noEdits is the library's test for a device without edits (unexported
// there): nothing in any field.
func noEdits(e *specs.ContainerEdits) bool {
	return len(e.Env) == 0 && len(e.DeviceNodes) == 0 && len(e.Hooks) == 0 && len(e.Mounts) == 0 &&
		len(e.AdditionalGIDs) == 0 && e.IntelRdt == nil && len(e.NetDevices) == 0
}
