// Package spec turns discovered GPUs into a CDI spec and writes it so that a
// runtime reading the spec directory never sees a partial file.
package spec

import (
	"errors"
	"fmt"
	"path/filepath"
	"unicode/utf8"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

// Defaults for the spec kind.
const (
	DefaultVendor = "intel.com"
	DefaultClass  = "gpu"
	// AllDevice is the name of the device that holds every usable GPU.
	AllDevice = "all"
)

// ErrNoDevices is returned when there is no usable GPU to put in a spec: a
// CDI spec without devices is invalid.
var ErrNoDevices = errors.New("no usable Intel GPU")

// ErrBadDevice is returned (wrapped, naming the device) for a device that
// no valid spec can carry: the CDI library refuses a whole spec for one bad
// or duplicate name, so Build refuses it first and says which device.
var ErrBadDevice = errors.New("device cannot go in a CDI spec")

// ByPath says which udev by-path links go into the spec.
type ByPath string

// By-path modes.
const (
	// ByPathSingle bind-mounts each GPU's own by-path links into containers
	// that get that GPU.
	ByPathSingle ByPath = "single"
	// ByPathNone leaves the links out.
	ByPathNone ByPath = "none"
)

// ParseByPath checks a --by-path value.
func ParseByPath(s string) (ByPath, error) {
	switch v := ByPath(s); v {
	case ByPathSingle, ByPathNone:
		return v, nil
	}
	return "", fmt.Errorf("invalid by-path mode %q: want %q or %q", s, ByPathSingle, ByPathNone)
}

// Builder builds CDI specs of one kind.
type Builder struct {
	vendor string
	class  string
	byPath ByPath
}

// Option configures a Builder.
type Option func(*Builder)

// WithVendor sets the vendor part of the kind (default intel.com).
func WithVendor(v string) Option { return func(b *Builder) { b.vendor = v } }

// WithClass sets the class part of the kind (default gpu).
func WithClass(c string) Option { return func(b *Builder) { b.class = c } }

// WithByPath sets which by-path links are mounted (default single).
func WithByPath(m ByPath) Option { return func(b *Builder) { b.byPath = m } }

// NewBuilder returns a Builder, or an error naming the vendor, class or
// by-path value that CDI would not accept.
func NewBuilder(opts ...Option) (*Builder, error) {
	b := &Builder{vendor: DefaultVendor, class: DefaultClass, byPath: ByPathSingle}
	for _, o := range opts {
		o(b)
	}
	if err := parser.ValidateVendorName(b.vendor); err != nil {
		return nil, fmt.Errorf("vendor %q: %w", b.vendor, err)
	}
	if err := parser.ValidateClassName(b.class); err != nil {
		return nil, fmt.Errorf("class %q: %w", b.class, err)
	}
	if _, err := ParseByPath(string(b.byPath)); err != nil {
		return nil, err
	}
	return b, nil
}

// Kind returns vendor/class, e.g. intel.com/gpu.
func (b *Builder) Kind() string { return b.vendor + "/" + b.class }

// ByPathMode returns which by-path links the specs carry.
func (b *Builder) ByPathMode() ByPath { return b.byPath }

// QualifiedName returns the fully qualified CDI name of a device:
// intel.com/gpu=card0.
func (b *Builder) QualifiedName(device string) string {
	return parser.QualifiedName(b.vendor, b.class, device)
}

// FileName returns the spec's base name without extension: intel.com-gpu.
func (b *Builder) FileName() string { return cdiapi.GenerateSpecName(b.vendor, b.class) }

// Names returns the CDI device names a GPU is known by: its card name and
// its PCI address. The card name is convenient by hand; the PCI address is
// stable across reboots and is what the kubelet plugin hands out.
func Names(d *discovery.Device) []string { return []string{d.Card, d.PCIAddress} }

// Build returns the spec for the usable devices in devs: two entries per
// GPU (card name and PCI address) and "all". It returns ErrNoDevices when
// none is usable, and ErrBadDevice for a usable device whose name the CDI
// library would refuse or another device already has, or whose paths are
// not absolute or not UTF-8. cdiVersion is the lowest that expresses the
// spec, so older runtimes still read it.
func (b *Builder) Build(devs []discovery.Device) (*specs.Spec, error) {
	usable := 0
	for i := range devs {
		if devs[i].Usable() {
			usable++
		}
	}
	if usable == 0 {
		return nil, ErrNoDevices
	}
	s := &specs.Spec{Kind: b.Kind(), Devices: make([]specs.Device, 0, 2*usable+1)}
	all := specs.ContainerEdits{DeviceNodes: make([]*specs.DeviceNode, 0, 2*usable)}
	owner := make(map[string]string, 2*usable+1)
	owner[AllDevice] = "the device of all GPUs"
	for i := range devs {
		d := &devs[i]
		if !d.Usable() {
			continue
		}
		if err := b.check(d, owner); err != nil {
			return nil, err
		}
		edits := b.edits(d, len(Names(d))+1)
		for j, name := range Names(d) {
			s.Devices = append(s.Devices, specs.Device{Name: name, ContainerEdits: edits[j]})
		}
		last := edits[len(edits)-1]
		all.DeviceNodes = append(all.DeviceNodes, last.DeviceNodes...)
		all.Mounts = append(all.Mounts, last.Mounts...)
	}
	s.Devices = append(s.Devices, specs.Device{Name: AllDevice, ContainerEdits: all})

	v, err := specs.MinimumRequiredVersion(s)
	if err != nil {
		return nil, fmt.Errorf("computing cdiVersion: %w", err)
	}
	s.Version = v
	return s, nil
}

// check refuses a device that no valid spec can carry, and records its
// names in owner.
func (b *Builder) check(d *discovery.Device, owner map[string]string) error {
	who := func() string { return fmt.Sprintf("GPU %q (%q)", d.PCIAddress, d.Card) }
	names := Names(d)
	for _, name := range names {
		if err := parser.ValidateDeviceName(name); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadDevice, who(), err)
		}
		if other, taken := owner[name]; taken {
			return fmt.Errorf("%w: %s: CDI name %q is already %s", ErrBadDevice, who(), name, other)
		}
	}
	badPath := func(p string) error {
		switch {
		case !filepath.IsAbs(p):
			return fmt.Errorf("%w: %s: path %q is not absolute", ErrBadDevice, who(), p)
		case !utf8.ValidString(p):
			// JSON and YAML hold only UTF-8: the runtime would read
			// another path than the one on the node.
			return fmt.Errorf("%w: %s: path %q is not valid UTF-8", ErrBadDevice, who(), p)
		}
		return nil
	}
	for _, n := range d.Nodes() {
		if err := errors.Join(badPath(n.Path), badPath(n.HostPath)); err != nil {
			return err
		}
	}
	if b.byPath == ByPathSingle {
		for _, l := range d.ByPath {
			if err := errors.Join(badPath(l.Path), badPath(l.HostPath)); err != nil {
				return err
			}
		}
	}
	w := who()
	for _, name := range names {
		owner[name] = w
	}
	return nil
}

// edits returns n copies of what a container needs for one GPU. Each copy
// has slices and nodes of its own, so that a caller editing one
// device cannot change another; they share backing arrays allocated once.
//
// A node carries its path, its host path where that differs, and "rw": the
// runtime takes the type and numbers from the host's node when it injects
// it, as the CDI library does for any node that leaves them out, and a
// missing host path is the path. "rw" is kept because a node without
// permissions gets "rwm" in the device cgroup. See BENCHMARKS.md, "Bytes
// per GPU".
func (b *Builder) edits(d *discovery.Device, n int) []specs.ContainerEdits {
	nodes := d.Nodes()
	var links []discovery.Link
	if b.byPath == ByPathSingle {
		links = d.ByPath
	}
	out := make([]specs.ContainerEdits, n)
	nodeArr := make([]specs.DeviceNode, n*len(nodes))
	nodePtrs := make([]*specs.DeviceNode, n*len(nodes))
	var (
		mountArr  []specs.Mount
		mountPtrs []*specs.Mount
		options   []string
	)
	if len(links) > 0 {
		mountArr = make([]specs.Mount, n*len(links))
		mountPtrs = make([]*specs.Mount, n*len(links))
		options = make([]string, n*len(links))
	}
	for c := range out {
		for i, node := range nodes {
			k := c*len(nodes) + i
			nodeArr[k] = specs.DeviceNode{Path: node.Path, Permissions: "rw"}
			if node.HostPath != node.Path {
				nodeArr[k].HostPath = node.HostPath
			}
			nodePtrs[k] = &nodeArr[k]
		}
		out[c].DeviceNodes = nodePtrs[c*len(nodes) : (c+1)*len(nodes) : (c+1)*len(nodes)]
		if len(links) == 0 {
			continue
		}
		// The CDI library refuses symlinks as device nodes, so the links
		// go in as bind mounts of the nodes they name.
		for i, l := range links {
			k := c*len(links) + i
			options[k] = "bind"
			mountArr[k] = specs.Mount{HostPath: l.HostPath, ContainerPath: l.Path, Options: options[k : k+1 : k+1]}
			mountPtrs[k] = &mountArr[k]
		}
		out[c].Mounts = mountPtrs[c*len(links) : (c+1)*len(links) : (c+1)*len(links)]
	}
	return out
}
