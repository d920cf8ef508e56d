// Package fakenode lays out a fake node — a sysfs tree and a /dev tree — the way Linux does for
// GPUs driven by i915 and xe (and the other cards that share /sys/class/drm), so discovery, spec
// generation and the device plugin can run in tests, benchmarks and `make demo` without hardware.
//
// A Node is rooted in a directory (usually t.TempDir()); its Sys and Dev fields are what the product
// takes as --sysfs-root and --dev-root. For a PCI function at <PCI> behind <Parent> the tree is:
//
//	Sys/devices/<Parent>/<PCI>/{vendor,device,class,numa_node,uevent}
//	Sys/devices/<Parent>/<PCI>/driver -> ../…/bus/pci/drivers/<driver>    (absent when unbound)
//	Sys/devices/<Parent>/<PCI>/subsystem -> ../…/bus/pci
//	Sys/devices/<Parent>/<PCI>/drm/cardN/{dev,uevent}, device -> ../../../<PCI>, subsystem -> …/class/drm
//	Sys/devices/<Parent>/<PCI>/drm/cardN/cardN-<connector>/status
//	Sys/devices/<Parent>/<PCI>/drm/renderDM/{dev,uevent}, device -> ../../../<PCI>, subsystem
//	Sys/devices/<Parent>/<PCI>/{sriov_totalvfs,sriov_numvfs,virtfnK -> ../<VF>}  (a PF)
//	Sys/devices/<Parent>/<PCI>/physfn -> ../<PF>                                  (a VF)
//	Sys/class/drm/{cardN,renderDM,cardN-<connector>} -> ../../devices/<Parent>/<PCI>/drm/…
//	Sys/bus/pci/devices/<PCI> -> ../../../devices/<Parent>/<PCI>
//	Sys/bus/pci/drivers/<driver>/<PCI> -> ../../../../devices/<Parent>/<PCI>
//	Dev/dri/cardN, Dev/dri/renderDM                     (char nodes, or symlinks in HostDevices mode)
//	Dev/dri/by-path/pci-<PCI>-card -> ../cardN, pci-<PCI>-render -> ../renderDM
//
// Every symlink is relative, as the kernel and udev make them, so the tree can be resolved from
// inside its root. Methods never log and never panic; on error the tree may be partly written.
package fakenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Mode says how device nodes under <dev>/dri are created.
type Mode int

const (
	// Mknod creates real char nodes with mknod(2) (needs root / CAP_MKNOD); sysfs dev files hold 226:N.
	Mknod Mode = iota
	// HostDevices is for unprivileged runs (make demo, tests without root): each /dev/dri node is a
	// symlink to a char device anyone can see on the host (/dev/null 1:3, /dev/zero 1:5, /dev/full 1:7,
	// /dev/random 1:8, /dev/urandom 1:9, cycling), and the sysfs `dev` file holds that device's real
	// MAJOR:MINOR, so a reader that follows the link finds a char device whose numbers match sysfs.
	// Because the five host devices are reused in turn, two minors can share a device number; and a
	// reader that Lstats the node (as CDI injection does) sees a symlink, not a device.
	HostDevices
)

// String names the mode as its constant is spelled.
func (m Mode) String() string {
	switch m {
	case Mknod:
		return "Mknod"
	case HostDevices:
		return "HostDevices"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// ErrUnknownGPU is returned (wrapped) when a method names a PCI address that no AddGPU created.
var ErrUnknownGPU = errors.New("no GPU at that PCI address")

// Option configures New.
type Option func(*options)

type options struct {
	mode    Mode
	modeSet bool
}

// WithMode fixes how /dev/dri nodes are created instead of probing for mknod permission.
func WithMode(m Mode) Option {
	return func(o *options) {
		o.mode = m
		o.modeSet = true
	}
}

// Node is a fake node tree. Its methods are safe for concurrent use.
type Node struct {
	Root string // the temp root
	Sys  string // Root/sys   -> pass as --sysfs-root
	Dev  string // Root/dev   -> pass as --dev-root

	mu        sync.Mutex
	mode      Mode
	hosts     []hostDevice   // HostDevices mode: link targets, used in turn
	nextHost  int            // index into hosts of the next minor's target
	gpus      map[string]*fn // PCI functions added with AddGPU, by address
	simpleDRM int            // platform framebuffers added so far, to name the next one
	health    healthState    // counters of health.go
}

// New creates Root/sys and Root/dev (with sys/class/drm and dev/dri) under root, creating root if
// needed. Without WithMode, the mode is Mknod when mknod works inside root, else HostDevices.
func New(root string, opts ...Option) (*Node, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if root == "" {
		return nil, errors.New("fakenode: new node: empty root")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("fakenode: new node in %q: %w", root, err)
	}
	n := &Node{
		Root: abs,
		Sys:  filepath.Join(abs, "sys"),
		Dev:  filepath.Join(abs, "dev"),
		gpus: make(map[string]*fn),
	}
	for _, d := range []string{
		filepath.Join(n.Sys, "class", "drm"),
		filepath.Join(n.Sys, "devices"),
		filepath.Join(n.Sys, "bus", "pci", "devices"),
		filepath.Join(n.Sys, "bus", "pci", "drivers"),
		filepath.Join(n.Dev, "dri"),
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("fakenode: new node in %s: %w", abs, err)
		}
	}
	n.mode = o.mode
	if !o.modeSet {
		// Probe inside the tree itself: the root's filesystem may refuse device nodes even when
		// os.TempDir's accepts them.
		n.mode = HostDevices
		if canMknodIn(n.Dev) {
			n.mode = Mknod
		}
	}
	switch n.mode {
	case Mknod:
	case HostDevices:
		hosts, err := probeHostDevices()
		if err != nil {
			return nil, fmt.Errorf("fakenode: new node in %s: %w", abs, err)
		}
		n.hosts = hosts
	default:
		return nil, fmt.Errorf("fakenode: new node in %s: unknown %s", abs, n.mode)
	}
	return n, nil
}

// NewT is New(t.TempDir(), opts...) that fails the test on error.
func NewT(t testing.TB, opts ...Option) *Node {
	t.Helper()
	n, err := New(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Mode reports how this node creates /dev/dri entries.
func (n *Node) Mode() Mode { return n.mode }

// MustApply runs fixtures (IGPU, SRIOV, …) on n and fails the test on the first error.
func (n *Node) MustApply(t testing.TB, fixtures ...func(*Node) error) {
	t.Helper()
	for _, f := range fixtures {
		if err := f(n); err != nil {
			t.Fatal(err)
		}
	}
}

// writeAttr writes a sysfs attribute: the value and a newline.
func writeAttr(path, value string) error { return writeRaw(path, value+"\n") }

func writeRaw(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o644)
}

// relSymlink makes link point at target by a relative path, as sysfs and udev links do.
func relSymlink(target, link string) error {
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return fmt.Errorf("symlink %s -> %s: %w", link, target, err)
	}
	return os.Symlink(rel, link)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
