package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoDRMClass is matched (errors.Is) when the sysfs root has no
// class/drm. The root is otherwise sysfs, so either no DRM driver is loaded
// yet (a caller that waits for one may wait) or the tree is not the
// host's sysfs; a scan would find no GPU either way, and that is no reason
// to act as if the node had none.
var ErrNoDRMClass = errors.New("no class/drm directory: no DRM driver is loaded, or this is not the host's sysfs")

// ErrNoDRI is matched (errors.Is) by a dev root without dri/ while sysfs
// lists Intel GPUs: a wrong --dev-root, or the moment between a driver
// loading and the kernel making its nodes.
var ErrNoDRI = errors.New("has no usable dri/")

// Roots named in a RootError.
const (
	RootSysfs = "sysfs"
	RootDev   = "dev"
)

// RootError is a sysfs or dev root that does not describe a node.
type RootError struct {
	// Root is RootSysfs or RootDev.
	Root string
	Path string
	Err  error
}

func (e *RootError) Error() string { return fmt.Sprintf("%s root %s: %v", e.Root, e.Path, e.Err) }

func (e *RootError) Unwrap() error { return e.Err }

// CheckRoots tells whether the roots can be trusted before anything acts on
// a scan of them: a scan of a wrong root finds no GPU, and removing a spec
// or advertising nothing because of it would destroy what is right. Each
// error is a *RootError:
//   - a sysfs root that is not a directory with class/ and devices/ in it;
//   - a sysfs root without class/drm, which also matches ErrNoDRMClass;
//   - a dev root that is not a directory, or has no dri/ while the sysfs
//     root lists an Intel DRM card (the kernel makes /dev/dri with the
//     first card).
func (s *Scanner) CheckRoots() error {
	sysErr := func(err error) error { return &RootError{Root: RootSysfs, Path: s.sysfsRoot, Err: err} }
	devErr := func(err error) error { return &RootError{Root: RootDev, Path: s.devRoot, Err: err} }

	if err := isDir(s.sysfsRoot); err != nil {
		return sysErr(err)
	}
	var missing []string
	for _, d := range []string{"class", "devices"} {
		if isDir(filepath.Join(s.sysfsRoot, d)) != nil {
			missing = append(missing, d+"/")
		}
	}
	if len(missing) > 0 {
		return sysErr(fmt.Errorf("does not look like sysfs: it has no %s", strings.Join(missing, " and no ")))
	}
	if err := isDir(s.ClassDRMDir()); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return sysErr(ErrNoDRMClass)
		}
		return sysErr(err)
	}

	if err := isDir(s.devRoot); err != nil {
		return devErr(err)
	}
	if err := isDir(s.DRIDir()); err != nil {
		if cards := s.intelCards(); len(cards) > 0 {
			return devErr(fmt.Errorf("%w (%v), but %s lists Intel GPU %s", ErrNoDRI, err, s.ClassDRMDir(), strings.Join(cards, ", ")))
		}
	}
	return nil
}

// isDir returns nil for a directory (or a link to one) and an error saying
// what is wrong otherwise.
func isDir(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", p)
	}
	return nil
}

// intelCards lists the cards in class/drm whose PCI function has Intel's
// vendor ID, without reading anything else: enough to know the node has
// Intel GPUs whatever state they are in.
func (s *Scanner) intelCards() []string {
	names, err := readDirNames(s.ClassDRMDir())
	if err != nil {
		return nil
	}
	var cards []string
	for _, name := range names {
		if _, ok := ParseCardName(name); !ok {
			continue
		}
		raw, err := readAttr(filepath.Join(s.ClassDRMDir(), name, "device", "vendor"))
		if err != nil {
			continue
		}
		if v, err := ParseHexID(raw, 4); err == nil && v == IntelVendorID {
			cards = append(cards, name)
		}
	}
	return cards
}
