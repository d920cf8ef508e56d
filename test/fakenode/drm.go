package fakenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// minor is one DRM minor (cardN, renderDM, controlDK).
type minor struct {
	name string // "card0", "renderD128"
	kind string // "card", "render", "control": the by-path suffix
	num  devNum // what sysfs `dev` holds
	host string // HostDevices mode: the host char device the /dev/dri entry links to
}

// addMinors creates devDir/drm/<minor> for each minor and its class/drm link; deviceLink adds the
// minor's `device` link to devDir, which virtual devices lack. In HostDevices mode it also picks each
// minor's host device, replacing the 226:x number with the host one.
func (n *Node) addMinors(devDir string, minors []minor, deviceLink bool) error {
	classDir := filepath.Join(n.Sys, "class", "drm")
	for i := range minors {
		m := &minors[i]
		if n.mode == HostDevices {
			h := n.hosts[n.nextHost%len(n.hosts)]
			n.nextHost++
			m.num, m.host = h.Num, h.Path
		}
		dir := filepath.Join(devDir, "drm", m.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := writeAttr(filepath.Join(dir, "dev"), m.num.String()); err != nil {
			return err
		}
		uevent := fmt.Sprintf("MAJOR=%d\nMINOR=%d\nDEVNAME=dri/%s\nDEVTYPE=drm_minor\n", m.num.Major, m.num.Minor, m.name)
		if err := writeRaw(filepath.Join(dir, "uevent"), uevent); err != nil {
			return err
		}
		if deviceLink {
			// The kernel's own spelling of this link climbs to the device's parent and back down.
			if err := os.Symlink(filepath.Join("..", "..", "..", filepath.Base(devDir)), filepath.Join(dir, "device")); err != nil {
				return err
			}
		}
		if err := relSymlink(classDir, filepath.Join(dir, "subsystem")); err != nil {
			return err
		}
		if err := relSymlink(dir, filepath.Join(classDir, m.name)); err != nil {
			return err
		}
	}
	return nil
}

// addConnectors creates card-N-<connector> under the card and in class/drm.
func (n *Node) addConnectors(devDir, card string, connectors []string) error {
	for _, c := range connectors {
		name := card + "-" + c
		dir := filepath.Join(devDir, "drm", card, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := writeAttr(filepath.Join(dir, "status"), "disconnected"); err != nil {
			return err
		}
		if err := relSymlink(dir, filepath.Join(n.Sys, "class", "drm", name)); err != nil {
			return err
		}
	}
	return nil
}

// createDevNodes (re)creates the /dev/dri entries of f's minors and their by-path links.
func (n *Node) createDevNodes(f *fn, byPathAfter time.Duration) error {
	dri := filepath.Join(n.Dev, "dri")
	// devtmpfs creates dri with the first node (and removes it with the last).
	if err := os.MkdirAll(dri, 0o755); err != nil {
		return err
	}
	for _, m := range f.minors {
		path := filepath.Join(dri, m.name)
		if err := removeIfExists(path); err != nil {
			return err
		}
		switch n.mode {
		case Mknod:
			if err := mknodChar(path, m.num); err != nil {
				return err
			}
		case HostDevices:
			if err := os.Symlink(m.host, path); err != nil {
				return err
			}
		}
	}
	if f.byPath == "" {
		return nil
	}
	// udev adds the links after the kernel made the nodes.
	time.Sleep(byPathAfter)
	for _, m := range f.minors {
		if m.kind == "control" {
			continue
		}
		byPath := filepath.Join(dri, "by-path")
		if err := os.MkdirAll(byPath, 0o755); err != nil {
			return err
		}
		link := filepath.Join(byPath, f.byPath+"-"+m.kind)
		if err := removeIfExists(link); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join("..", m.name), link); err != nil {
			return err
		}
	}
	return nil
}

// removeDevNodes removes what createDevNodes made, as udev does when a device goes away.
func (n *Node) removeDevNodes(f *fn) error {
	dri := filepath.Join(n.Dev, "dri")
	var errs []error
	for _, m := range f.minors {
		errs = append(errs, removeIfExists(filepath.Join(dri, m.name)))
		if f.byPath != "" {
			errs = append(errs, removeIfExists(filepath.Join(dri, "by-path", f.byPath+"-"+m.kind)))
		}
	}
	return errors.Join(errs...)
}

// AddSimpleDRM adds a firmware framebuffer card as simpledrm shows it: platform device
// devices/platform/simple-framebuffer.K (K counts up from 0 per call) bound to driver
// simple-framebuffer, with no vendor file, one minor drm/cardN (no render node), class/drm/cardN,
// Dev/dri/cardN and by-path link platform-simple-framebuffer.K-card.
func (n *Node) AddSimpleDRM(card int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.addSimpleDRM(card); err != nil {
		return fmt.Errorf("fakenode: add simpledrm card%d: %w", card, err)
	}
	return nil
}

func (n *Node) addSimpleDRM(card int) error {
	if card < 0 {
		return fmt.Errorf("card number %d is negative", card)
	}
	name := fmt.Sprintf("simple-framebuffer.%d", n.simpleDRM)
	f := &fn{
		dir:    filepath.Join(n.Sys, "devices", "platform", name),
		minors: []minor{{name: fmt.Sprintf("card%d", card), kind: "card", num: devNum{drmMajor, uint32(card)}}},
		byPath: "platform-" + name,
	}
	if err := n.checkFree(f.dir, f.minors, card, nil); err != nil {
		return err
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}
	if err := writeRaw(filepath.Join(f.dir, "uevent"), "DRIVER=simple-framebuffer\nMODALIAS=platform:simple-framebuffer\n"); err != nil {
		return err
	}
	bus := filepath.Join(n.Sys, "bus", "platform")
	if err := os.MkdirAll(filepath.Join(bus, "devices"), 0o755); err != nil {
		return err
	}
	if err := relSymlink(bus, filepath.Join(f.dir, "subsystem")); err != nil {
		return err
	}
	if err := relSymlink(f.dir, filepath.Join(bus, "devices", name)); err != nil {
		return err
	}
	if err := bindDriver(filepath.Join(bus, "drivers", "simple-framebuffer"), f.dir); err != nil {
		return err
	}
	if err := n.addMinors(f.dir, f.minors, true); err != nil {
		return err
	}
	if err := n.createDevNodes(f, 0); err != nil {
		return err
	}
	n.simpleDRM++
	return nil
}

// AddControlNode adds the legacy control minor controlD<minor> (64..127) that old kernels made: a
// device under devices/virtual/drm with its class/drm link and a Dev/dri entry (no by-path link).
func (n *Node) AddControlNode(minorNum int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if minorNum < 64 || minorNum > 127 {
		return fmt.Errorf("fakenode: add controlD%d: control minors are 64..127", minorNum)
	}
	m := minor{name: fmt.Sprintf("controlD%d", minorNum), kind: "control", num: devNum{drmMajor, uint32(minorNum)}}
	f := &fn{dir: filepath.Join(n.Sys, "devices", "virtual"), minors: []minor{m}}
	if err := n.checkFree(filepath.Join(f.dir, "drm", m.name), f.minors, 0, nil); err != nil {
		return fmt.Errorf("fakenode: add %s: %w", m.name, err)
	}
	if err := n.addMinors(f.dir, f.minors, false); err != nil {
		return fmt.Errorf("fakenode: add %s: %w", m.name, err)
	}
	if err := n.createDevNodes(f, 0); err != nil {
		return fmt.Errorf("fakenode: add %s: %w", m.name, err)
	}
	return nil
}

// WriteVersion writes the class/drm/version file DRM core exposes ("drm 1.1.0 20060810").
func (n *Node) WriteVersion() error {
	if err := writeAttr(filepath.Join(n.Sys, "class", "drm", "version"), "drm 1.1.0 20060810"); err != nil {
		return fmt.Errorf("fakenode: write class/drm/version: %w", err)
	}
	return nil
}
