package fakenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// GPU describes one PCI display function to add. Zero values mean the documented defaults.
type GPU struct {
	Card   int    // N of cardN
	Render int    // M of renderDM (>=128); -1 means the function has no render node; 0 means default 128+Card
	PCI    string // full BDF "0000:03:00.0"
	Parent string // sysfs path of the bridge under /sys/devices, default "pci0000:00" (discrete cards: e.g. "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0")
	Vendor string // default "0x8086"
	Device string // e.g. "0x56a0"; default "0x46a6"
	Class  string // default "0x030000"
	Driver string // "i915" (default), "xe", or "-" for an unbound function (no driver link, no DRM minors, no dev nodes; Card and Render are ignored)
	NUMA   string // raw content of numa_node, default "-1"

	TotalVFs, NumVFs int    // >0 TotalVFs writes sriov_totalvfs / sriov_numvfs (a PF)
	PhysFn           string // for a VF: the PF's PCI address (added before); writes the physfn link and the PF's next free virtfnK link

	Connectors []string // e.g. {"DP-1","eDP-1"}: creates cardN-DP-1 entries under the card AND in class/drm
	NoDevNodes bool     // do not create <dev>/dri nodes (a GPU that is not ready); by-path links are not created either
	NoByPath   bool     // do not create <dev>/dri/by-path/pci-<PCI>-card|render links
}

const unbound = "-"

var bdfPattern = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// withDefaults validates g and fills in its defaults.
func (g GPU) withDefaults() (GPU, error) {
	if !bdfPattern.MatchString(g.PCI) {
		return g, fmt.Errorf("PCI address %q is not a lower-case DDDD:BB:DD.F address", g.PCI)
	}
	if g.Parent == "" {
		g.Parent = "pci0000:00"
	}
	if !filepath.IsLocal(g.Parent) {
		return g, fmt.Errorf("parent %q is not a relative path inside sys/devices", g.Parent)
	}
	g.Parent = filepath.Clean(g.Parent)
	if g.Vendor == "" {
		g.Vendor = "0x8086"
	}
	if g.Device == "" {
		g.Device = "0x46a6"
	}
	if g.Class == "" {
		g.Class = "0x030000"
	}
	if g.Driver == "" {
		g.Driver = "i915"
	}
	if !isName(g.Driver) {
		return g, fmt.Errorf("driver %q is not a plain name", g.Driver)
	}
	if g.NUMA == "" {
		g.NUMA = "-1"
	}
	if g.Driver != unbound {
		if g.Card < 0 {
			return g, fmt.Errorf("card number %d is negative", g.Card)
		}
		switch {
		case g.Render == 0:
			g.Render = 128 + g.Card
		case g.Render == -1:
		case g.Render < 128:
			return g, fmt.Errorf("render minor %d is below 128", g.Render)
		}
	}
	if g.TotalVFs < 0 || g.NumVFs < 0 || g.NumVFs > g.TotalVFs {
		return g, fmt.Errorf("SR-IOV counts numvfs=%d totalvfs=%d are not 0 <= numvfs <= totalvfs", g.NumVFs, g.TotalVFs)
	}
	if g.PhysFn != "" {
		if !bdfPattern.MatchString(g.PhysFn) {
			return g, fmt.Errorf("physfn %q is not a lower-case DDDD:BB:DD.F address", g.PhysFn)
		}
		if g.PhysFn == g.PCI {
			return g, errors.New("a function cannot be its own physfn")
		}
	}
	for _, c := range g.Connectors {
		if !isName(c) {
			return g, fmt.Errorf("connector %q is not a plain name", c)
		}
	}
	return g, nil
}

func isName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsRune(s, '/')
}

// fn is the state of one PCI function (or platform device) the node holds.
type fn struct {
	spec   GPU     // with defaults applied
	dir    string  // the function's directory under Sys/devices
	minors []minor // card first, then render; empty when unbound
	byPath string  // udev by-path prefix ("pci-0000:00:02.0"), "" for none
	vfs    []*fn   // a PF's VFs
	virtfn int     // a VF's K in its PF's virtfnK link
	pf     *fn     // a VF's PF
}

// AddGPU adds one PCI function with its DRM minors, class/drm links, driver link, SR-IOV links and,
// unless g says otherwise, its /dev/dri nodes and by-path links.
func (n *Node) AddGPU(g GPU) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.addGPU(g); err != nil {
		return fmt.Errorf("fakenode: add GPU %s: %w", g.PCI, err)
	}
	return nil
}

// otherVendors gives a driver and device ID for vendors whose cards share /sys/class/drm.
var otherVendors = map[string]struct{ driver, device string }{
	"0x10de": {driver: "nvidia", device: "0x2684"}, // GeForce RTX 4090
	"0x1002": {driver: "amdgpu", device: "0x744c"}, // Radeon RX 7900 XTX
}

// AddOtherVendorGPU is AddGPU for a non-Intel card: Vendor must be set and not 0x8086. For NVIDIA
// (0x10de) Driver defaults to "nvidia" and Device to "0x2684"; for AMD (0x1002) to "amdgpu" and
// "0x744c". Other vendors must set both.
func (n *Node) AddOtherVendorGPU(g GPU) error {
	v := strings.ToLower(g.Vendor)
	switch {
	case v == "":
		return fmt.Errorf("fakenode: add other-vendor GPU %s: Vendor is not set", g.PCI)
	case v == "0x8086":
		return fmt.Errorf("fakenode: add other-vendor GPU %s: Vendor 0x8086 is Intel; use AddGPU", g.PCI)
	}
	g.Vendor = v
	if known, ok := otherVendors[v]; ok {
		if g.Driver == "" {
			g.Driver = known.driver
		}
		if g.Device == "" {
			g.Device = known.device
		}
	}
	if g.Driver == "" || g.Device == "" {
		return fmt.Errorf("fakenode: add other-vendor GPU %s: vendor %s needs Driver and Device set", g.PCI, v)
	}
	return n.AddGPU(g)
}

// MustAddGPU is AddGPU that fails the test on error.
func (n *Node) MustAddGPU(t testing.TB, g GPU) {
	t.Helper()
	if err := n.AddGPU(g); err != nil {
		t.Fatal(err)
	}
}

func (n *Node) addGPU(g GPU) error {
	g, err := g.withDefaults()
	if err != nil {
		return err
	}
	if _, ok := n.gpus[g.PCI]; ok {
		return errors.New("a GPU with that address already exists")
	}
	var pf *fn
	if g.PhysFn != "" {
		if pf = n.gpus[g.PhysFn]; pf == nil {
			return fmt.Errorf("physfn %s: %w", g.PhysFn, ErrUnknownGPU)
		}
	}
	f := &fn{
		spec: g,
		dir:  filepath.Join(n.Sys, "devices", g.Parent, g.PCI),
		pf:   pf,
	}
	if !g.NoByPath {
		f.byPath = "pci-" + g.PCI
	}
	if g.Driver != unbound {
		f.minors = append(f.minors, minor{name: fmt.Sprintf("card%d", g.Card), kind: "card", num: devNum{drmMajor, uint32(g.Card)}})
		if g.Render >= 0 {
			f.minors = append(f.minors, minor{name: fmt.Sprintf("renderD%d", g.Render), kind: "render", num: devNum{drmMajor, uint32(g.Render)}})
		}
	}
	if err := n.checkFree(f.dir, f.minors, g.Card, g.Connectors); err != nil {
		return err
	}

	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}
	attrs := [][2]string{
		{"vendor", g.Vendor},
		{"device", g.Device},
		{"class", g.Class},
		{"numa_node", g.NUMA},
	}
	if g.TotalVFs > 0 {
		attrs = append(attrs,
			[2]string{"sriov_totalvfs", fmt.Sprint(g.TotalVFs)},
			[2]string{"sriov_numvfs", fmt.Sprint(g.NumVFs)})
	}
	for _, a := range attrs {
		if err := writeAttr(filepath.Join(f.dir, a[0]), a[1]); err != nil {
			return err
		}
	}
	if err := writeRaw(filepath.Join(f.dir, "uevent"), pciUevent(g)); err != nil {
		return err
	}
	bus := filepath.Join(n.Sys, "bus", "pci")
	if err := relSymlink(bus, filepath.Join(f.dir, "subsystem")); err != nil {
		return err
	}
	if err := relSymlink(f.dir, filepath.Join(bus, "devices", g.PCI)); err != nil {
		return err
	}
	if g.Driver != unbound {
		if err := bindDriver(filepath.Join(bus, "drivers", g.Driver), f.dir); err != nil {
			return err
		}
	}
	if pf != nil {
		if err := n.linkVF(pf, f); err != nil {
			return err
		}
	}
	if len(f.minors) > 0 {
		if err := n.addMinors(f.dir, f.minors, true); err != nil {
			return err
		}
		if err := n.addConnectors(f.dir, f.minors[0].name, g.Connectors); err != nil {
			return err
		}
		if !g.NoDevNodes {
			if err := n.createDevNodes(f, 0); err != nil {
				return err
			}
		}
	}
	n.gpus[g.PCI] = f
	return nil
}

// checkFree refuses to reuse a device directory or a class/drm name, which real Linux never does.
func (n *Node) checkFree(dir string, minors []minor, card int, connectors []string) error {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists", dir)
	}
	names := make([]string, 0, len(minors)+len(connectors))
	for _, m := range minors {
		names = append(names, m.name)
	}
	if len(minors) > 0 {
		for _, c := range connectors {
			names = append(names, fmt.Sprintf("card%d-%s", card, c))
		}
	}
	for _, name := range names {
		if _, err := os.Lstat(filepath.Join(n.Sys, "class", "drm", name)); err == nil {
			return fmt.Errorf("class/drm/%s already exists", name)
		}
	}
	return nil
}

// pciUevent renders the function's uevent the way the PCI core does.
func pciUevent(g GPU) string {
	hex := func(s string) string { return strings.ToUpper(strings.TrimPrefix(strings.ToLower(s), "0x")) }
	var b strings.Builder
	if g.Driver != unbound {
		fmt.Fprintf(&b, "DRIVER=%s\n", g.Driver)
	}
	class := strings.TrimLeft(hex(g.Class), "0")
	fmt.Fprintf(&b, "PCI_CLASS=%s\nPCI_ID=%s:%s\nPCI_SLOT_NAME=%s\n", class, hex(g.Vendor), hex(g.Device), g.PCI)
	return b.String()
}

// bindDriver makes the driver directory and the links both ways between it and the device.
func bindDriver(drvDir, devDir string) error {
	if err := os.MkdirAll(drvDir, 0o755); err != nil {
		return err
	}
	if err := relSymlink(drvDir, filepath.Join(devDir, "driver")); err != nil {
		return err
	}
	return relSymlink(devDir, filepath.Join(drvDir, filepath.Base(devDir)))
}

// linkVF writes the VF's physfn link and the PF's lowest free virtfnK link.
func (n *Node) linkVF(pf, vf *fn) error {
	k := 0
	for taken := true; taken; {
		taken = false
		for _, other := range pf.vfs {
			if other.virtfn == k {
				taken = true
				k++
				break
			}
		}
	}
	vf.virtfn = k
	if err := relSymlink(pf.dir, filepath.Join(vf.dir, "physfn")); err != nil {
		return err
	}
	if err := relSymlink(vf.dir, filepath.Join(pf.dir, fmt.Sprintf("virtfn%d", k))); err != nil {
		return err
	}
	pf.vfs = append(pf.vfs, vf)
	return nil
}

// RemoveGPU hot-unplugs the function at pci: its /dev/dri nodes and by-path links, its class/drm
// entries (minors and connectors), its bus and driver links, its PF's virtfnK link if it is a VF, and
// its directory under devices. Its VFs, and any function whose Parent lies below it, go first, as the
// kernel removes children before their parent. A PF's sriov_numvfs is left as it was.
func (n *Node) RemoveGPU(pci string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, ok := n.gpus[pci]
	if !ok {
		return fmt.Errorf("fakenode: remove GPU %s: %w", pci, ErrUnknownGPU)
	}
	if err := n.removeGPU(f); err != nil {
		return fmt.Errorf("fakenode: remove GPU %s: %w", pci, err)
	}
	return nil
}

func (n *Node) removeGPU(f *fn) error {
	var errs []error
	for len(f.vfs) > 0 {
		if err := n.removeGPU(f.vfs[0]); err != nil {
			return err
		}
	}
	prefix := f.dir + string(filepath.Separator)
	var children []*fn
	for _, other := range n.gpus {
		if strings.HasPrefix(other.dir, prefix) {
			children = append(children, other)
		}
	}
	for _, c := range children {
		if _, still := n.gpus[c.spec.PCI]; still {
			errs = append(errs, n.removeGPU(c))
		}
	}

	errs = append(errs, n.removeDevNodes(f))
	classDir := filepath.Join(n.Sys, "class", "drm")
	for _, m := range f.minors {
		errs = append(errs, removeIfExists(filepath.Join(classDir, m.name)))
	}
	if len(f.minors) > 0 {
		for _, c := range f.spec.Connectors {
			errs = append(errs, removeIfExists(filepath.Join(classDir, f.minors[0].name+"-"+c)))
		}
	}
	bus := filepath.Join(n.Sys, "bus", "pci")
	errs = append(errs, removeIfExists(filepath.Join(bus, "devices", f.spec.PCI)))
	if f.spec.Driver != unbound {
		errs = append(errs, removeIfExists(filepath.Join(bus, "drivers", f.spec.Driver, f.spec.PCI)))
	}
	if pf := f.pf; pf != nil {
		errs = append(errs, removeIfExists(filepath.Join(pf.dir, fmt.Sprintf("virtfn%d", f.virtfn))))
		for i, vf := range pf.vfs {
			if vf == f {
				pf.vfs = append(pf.vfs[:i], pf.vfs[i+1:]...)
				break
			}
		}
	}
	errs = append(errs, os.RemoveAll(f.dir))
	delete(n.gpus, f.spec.PCI)
	return errors.Join(errs...)
}

// RemoveDevNodes removes only the /dev/dri nodes of the GPU at pci and their by-path links, as udev
// does when a device node goes away; sysfs still shows the GPU, which is then not ready.
func (n *Node) RemoveDevNodes(pci string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, ok := n.gpus[pci]
	if !ok {
		return fmt.Errorf("fakenode: remove dev nodes of %s: %w", pci, ErrUnknownGPU)
	}
	if err := n.removeDevNodes(f); err != nil {
		return fmt.Errorf("fakenode: remove dev nodes of %s: %w", pci, err)
	}
	return nil
}

// DevNodesOption changes how AddDevNodes makes the nodes.
type DevNodesOption func(*devNodesOptions)

type devNodesOptions struct{ byPathAfter time.Duration }

// WithByPathAfter makes the by-path links d after the nodes, as udev adds
// them a moment after the kernel made the nodes.
func WithByPathAfter(d time.Duration) DevNodesOption {
	return func(o *devNodesOptions) { o.byPathAfter = d }
}

// AddDevNodes creates the /dev/dri nodes (and, unless the GPU has NoByPath, the by-path links) of the
// GPU at pci, replacing any that exist. It works for a GPU added with NoDevNodes too.
func (n *Node) AddDevNodes(pci string, opts ...DevNodesOption) error {
	var o devNodesOptions
	for _, opt := range opts {
		opt(&o)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	f, ok := n.gpus[pci]
	if !ok {
		return fmt.Errorf("fakenode: add dev nodes of %s: %w", pci, ErrUnknownGPU)
	}
	if len(f.minors) == 0 {
		return fmt.Errorf("fakenode: add dev nodes of %s: an unbound function has no DRM minors", pci)
	}
	if err := n.createDevNodes(f, o.byPathAfter); err != nil {
		return fmt.Errorf("fakenode: add dev nodes of %s: %w", pci, err)
	}
	return nil
}
