package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Scanner finds Intel GPUs below a sysfs root and checks their nodes below
// a dev root. The zero value is not usable; build one with New.
type Scanner struct {
	sysfsRoot string
	devRoot   string
	// driDir is <dev-root>/dri, joined once: every node and link of a
	// scan is below it.
	driDir string
}

// Option configures a Scanner.
type Option func(*Scanner)

// WithSysfsRoot sets where sysfs is mounted (default /sys).
func WithSysfsRoot(root string) Option { return func(s *Scanner) { s.sysfsRoot = root } }

// WithDevRoot sets where /dev is (default /dev).
func WithDevRoot(root string) Option { return func(s *Scanner) { s.devRoot = root } }

// New returns a Scanner over the given roots.
func New(opts ...Option) *Scanner {
	s := &Scanner{sysfsRoot: "/sys", devRoot: "/dev"}
	for _, o := range opts {
		o(s)
	}
	s.driDir = filepath.Join(s.devRoot, "dri")
	return s
}

// SysfsRoot returns the sysfs root the scanner reads.
func (s *Scanner) SysfsRoot() string { return s.sysfsRoot }

// DevRoot returns the dev root the scanner reads.
func (s *Scanner) DevRoot() string { return s.devRoot }

// DRIDir returns the directory that holds the DRM nodes: <dev-root>/dri.
func (s *Scanner) DRIDir() string { return s.driDir }

// ClassDRMDir returns <sysfs-root>/class/drm.
func (s *Scanner) ClassDRMDir() string { return filepath.Join(s.sysfsRoot, "class", "drm") }

// errNotOurs marks a card that is not an Intel GPU on i915/xe.
type errNotOurs struct{ reason string }

func (e *errNotOurs) Error() string { return e.reason }

func notOurs(format string, args ...any) error {
	return &errNotOurs{reason: fmt.Sprintf(format, args...)}
}

// Scan lists every Intel GPU. It fails only when the DRM class directory
// exists but cannot be read; a machine without one has no GPUs. A card that
// cannot be read is skipped with a reason and never stops the scan.
func (s *Scanner) Scan() (*Result, error) {
	dir := s.ClassDRMDir()
	names, err := readDirNames(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return &Result{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading DRM class directory %s: %w", dir, err)
	}

	cards := make([]card, 0, len(names)/2)
	for _, name := range names {
		// Connectors (card0-DP-1), renderD*, controlD*, version and ttm are
		// not cards; the parser takes only "card" followed by digits.
		if n, ok := ParseCardName(name); ok {
			cards = append(cards, card{name, n})
		}
	}
	sort.Slice(cards, func(i, j int) bool { return cards[i].index < cards[j].index })

	// Links in class/drm are joined to the real class directory, so that
	// resolving one is a readlink, not a walk of every path component.
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving DRM class directory %s: %w", dir, err)
	}
	dirs := scanDirs{class: openDir(realDir), dri: openDir(s.driDir)}
	defer dirs.close()
	outs := s.readCards(dirs, cards)

	res := &Result{Devices: make([]Device, 0, len(cards))}
	// A PCI function is one device: its address is its CDI name and its
	// kubelet ID, and a spec naming it twice is refused whole.
	owner := map[string]string{}
	for i, c := range cards {
		var no *errNotOurs
		switch err := outs[i].err; {
		case errors.As(err, &no):
			res.Ignored = append(res.Ignored, Skip{Name: c.name, Reason: no.reason})
		case err != nil:
			res.Skipped = append(res.Skipped, Skip{Name: c.name, Reason: err.Error()})
		case owner[outs[i].dev.PCIAddress] != "":
			pci := outs[i].dev.PCIAddress
			res.Skipped = append(res.Skipped, Skip{Name: c.name, Reason: fmt.Sprintf("PCI function %s is already %s", pci, owner[pci])})
		default:
			owner[outs[i].dev.PCIAddress] = c.name
			res.Devices = append(res.Devices, *outs[i].dev)
		}
	}
	return res, nil
}

type card struct {
	name  string
	index int
}

type cardOut struct {
	dev *Device
	err error
}

// scanDirs are the directories whose entries a scan reads for every card,
// each opened once (O_PATH), so that reading an entry is a lookup of its
// own name, not a walk of its whole path from the root (a scan of a fake
// node of 512 GPUs: 26-30 CPU-ms, 31-33 before). A directory that cannot
// be opened is read by whole paths, so what is missing is reported as
// before.
type scanDirs struct{ class, dri attrDir }

func (d scanDirs) close() {
	d.class.close()
	d.dri.close()
}

// parallelFrom is the number of cards from which a scan spreads over
// several goroutines; below it the goroutines cost more than they save.
const parallelFrom = 16

// readCards reads every card, on up to GOMAXPROCS goroutines for a big
// node: reading sysfs is syscall-bound, and each card's files are its own.
// The result is in the order of cards whatever the goroutines' order.
func (s *Scanner) readCards(dirs scanDirs, cards []card) []cardOut {
	outs := make([]cardOut, len(cards))
	read := func(i int) {
		d, err := s.readCard(dirs, cards[i].name, cards[i].index)
		outs[i] = cardOut{d, err}
	}
	workers := min(runtime.GOMAXPROCS(0), len(cards)/parallelFrom)
	if workers < 2 {
		for i := range cards {
			read(i)
		}
		return outs
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(cards); i = int(next.Add(1)) - 1 {
				read(i)
			}
		})
	}
	wg.Wait()
	return outs
}

// readCard reads one class/drm/cardN entry.
func (s *Scanner) readCard(dirs scanDirs, name string, index int) (*Device, error) {
	cardDir, fn, err := openFunction(dirs.class, name)
	if err != nil {
		return nil, err
	}
	defer fn.close()
	fnDir := fn.dir

	raw, err := fn.readAttr("vendor")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notOurs("not a PCI device: %s has no vendor file", fnDir)
	}
	if err != nil {
		return nil, err
	}
	vendor, err := ParseHexID(raw, 4)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn.path("vendor"), err)
	}
	if vendor != IntelVendorID {
		return nil, notOurs("vendor %s is not Intel", vendor)
	}

	addr := filepath.Base(fnDir)
	if !IsPCIAddress(addr) {
		return nil, notOurs("%s is not a PCI function", fnDir)
	}

	class, err := readHexAttr(fn, "class", 6)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(class, "0x03") {
		return nil, notOurs("PCI class %s of %s is not a display controller", class, addr)
	}

	d := &Device{
		Card:       name,
		CardIndex:  index,
		PCIAddress: addr,
		VendorID:   vendor,
		Class:      class,
		NUMANode:   -1,
		SRIOV:      SRIOV{Role: RoleNone},
	}
	if d.DeviceID, err = readHexAttr(fn, "device", 4); err != nil {
		return nil, err
	}

	target, err := fn.readlink("driver")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The card is still listed but no driver holds the function: the
		// GPU is there and unusable until a driver binds again.
	case err != nil:
		return nil, fmt.Errorf("reading driver link %s: %w", fn.path("driver"), err)
	default:
		d.Driver = filepath.Base(target)
		if d.Driver != DriverI915 && d.Driver != DriverXe {
			return nil, notOurs("%s is bound to %s, not i915 or xe", addr, d.Driver)
		}
	}

	if err := readNUMA(fn, d); err != nil {
		return nil, err
	}
	if err := readSRIOV(fn, d); err != nil {
		return nil, err
	}

	// The card's dev attribute, by the shortest lookup that names it.
	cardAt, devName := cwd, join(cardDir, "dev")
	if inFn := "drm/" + name; cardDir == fn.path(inFn) {
		cardAt, devName = fn, inFn+"/dev"
	}
	major, minor, err := readDevAttr(cardAt, devName)
	if err != nil {
		return nil, err
	}
	d.CardNode = s.node(name, major, minor)

	render, err := renderOf(fn)
	if err != nil {
		return nil, err
	}
	if render != "" {
		major, minor, err := readDevAttr(fn, "drm/"+render+"/dev")
		if err != nil {
			return nil, err
		}
		n := s.node(render, major, minor)
		d.Render, d.RenderNode = render, &n
	}

	d.Ready, d.Reason = checkNodes(dirs.dri, d)
	if d.Ready {
		d.ByPath = byPathLinks(dirs.dri, d)
	}
	switch {
	case d.Driver == "":
		d.Reason = "no driver bound to " + addr
	case d.Reason != "":
	case d.SRIOV.Role == RolePF:
		d.Reason = fmt.Sprintf("physical function with %d VFs enabled: its VFs are handed out instead", d.SRIOV.NumVFs)
	}
	return d, nil
}

// openFunction follows class/drm/<name> to the card's directory in the
// device tree and opens the PCI function that owns it. The kernel's links
// there are relative ("../../devices/pci0000:00/0000:00:02.0/drm/card0"),
// climb out of class/drm and then only descend through real directories,
// so a readlink joined to the real class directory finds the card: the
// function is opened, and one lstat of drm/<name> in it proves the card is
// there. Any other link (absolute, ".." further in, a chain of links, a
// loop, a vanished target, a card outside a drm directory) or an entry
// that is no link at all goes through filepath.EvalSymlinks, which
// resolves it exactly or reports what is wrong.
func openFunction(class attrDir, name string) (string, attrDir, error) {
	if cardDir, ok := plainCardLink(class, name); ok {
		if fn, err := openAttrDir(filepath.Dir(filepath.Dir(cardDir))); err == nil {
			var st unix.Stat_t
			if unix.Fstatat(fn.fd, "drm/"+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
				return cardDir, fn, nil
			}
			fn.close()
		}
	}
	link := class.path(name)
	cardDir, err := resolve(link)
	if err != nil {
		return "", noDir, err
	}
	// The kernel links cardN to a device named cardN; a link to another
	// card would hand that card out twice under two names.
	if filepath.Base(cardDir) != name {
		return "", noDir, fmt.Errorf("%s leads to %s, not to %s", link, cardDir, name)
	}
	fnDir, err := functionDir(cardDir)
	if err != nil {
		return "", noDir, err
	}
	fn, err := openAttrDir(fnDir)
	if err != nil {
		return "", noDir, fmt.Errorf("reading %s: %w", fnDir, err)
	}
	return cardDir, fn, nil
}

// plainCardLink reads class/drm/<name> and returns the card directory it
// names when the link has the kernel's form: relative, only leading "..",
// and ending in drm/<name>.
func plainCardLink(class attrDir, name string) (string, bool) {
	target, err := class.readlink(name)
	if err != nil || filepath.IsAbs(target) {
		return "", false
	}
	rest := target
	for strings.HasPrefix(rest, "../") {
		rest = rest[len("../"):]
	}
	if rest == ".." || strings.HasPrefix(rest, "../") || strings.Contains("/"+rest+"/", "/../") {
		return "", false
	}
	cardDir := filepath.Join(class.dir, target)
	if filepath.Base(cardDir) != name || filepath.Base(filepath.Dir(cardDir)) != "drm" {
		return "", false
	}
	return cardDir, true
}

// resolve follows a symlink to what it names. Symlink loops and vanished
// targets surface as errors.
func resolve(link string) (string, error) {
	p, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", link, err)
	}
	return p, nil
}

// functionDir returns the device directory that owns a card: the card
// lives in <function>/drm/cardN, and its `device` link points there too.
func functionDir(cardDir string) (string, error) {
	if parent := filepath.Dir(cardDir); filepath.Base(parent) == "drm" {
		return filepath.Dir(parent), nil
	}
	return resolve(filepath.Join(cardDir, "device"))
}

// renderOf finds the render node in the function's drm directory. Pairing
// through the directory is what the kernel guarantees; minor arithmetic is
// not (render minors are handed out in probe order).
func renderOf(fn attrDir) (string, error) {
	names, err := fn.readDirNames("drm")
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", fn.path("drm"), err)
	}
	for _, name := range names {
		if _, ok := ParseRenderName(name); ok {
			return name, nil
		}
	}
	return "", nil
}

func readNUMA(fn attrDir, d *Device) error {
	raw, err := fn.readAttr("numa_node")
	if errors.Is(err, fs.ErrNotExist) {
		return nil // kernels without NUMA support have no such file
	}
	if err != nil {
		return err
	}
	if d.NUMANode, err = ParseNUMANode(raw); err != nil {
		return fmt.Errorf("%s: %w", fn.path("numa_node"), err)
	}
	return nil
}

func readSRIOV(fn attrDir, d *Device) error {
	target, err := fn.readlink("physfn")
	switch {
	case err == nil:
		pf := filepath.Base(target)
		if !IsPCIAddress(pf) {
			return fmt.Errorf("%s: link target %q is not a PCI function", fn.path("physfn"), target)
		}
		d.SRIOV = SRIOV{Role: RoleVF, PF: pf}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("reading %s: %w", fn.path("physfn"), err)
	}

	total, err := readCount(fn, "sriov_totalvfs")
	if err != nil {
		return err
	}
	num, err := readCount(fn, "sriov_numvfs")
	if err != nil {
		return err
	}
	d.SRIOV.TotalVFs, d.SRIOV.NumVFs = total, num
	if num > 0 {
		d.SRIOV.Role = RolePF
	}
	return nil
}

// readCount reads an optional count attribute: absent is zero.
func readCount(d attrDir, name string) (int, error) {
	raw, err := d.readAttr(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := ParseCount(raw)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", d.path(name), err)
	}
	return n, nil
}

func readHexAttr(d attrDir, name string, digits int) (string, error) {
	raw, err := d.readAttr(name)
	if err != nil {
		return "", err
	}
	v, err := ParseHexID(raw, digits)
	if err != nil {
		return "", fmt.Errorf("%s: %w", d.path(name), err)
	}
	return v, nil
}

func readDevAttr(d attrDir, name string) (uint32, uint32, error) {
	raw, err := d.readAttr(name)
	if err != nil {
		return 0, 0, err
	}
	major, minor, err := ParseDevNumbers(raw)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", d.path(name), err)
	}
	return major, minor, nil
}

// maxAttr bounds what is read of one attribute; every attribute this
// package reads is a few bytes.
const maxAttr = 64

// attrDir is a directory whose entries are read by name, relative to a
// descriptor opened once (O_PATH): a scan reads ten entries of every PCI
// function, and joining each one's full path and copying it for the
// kernel was half of what a scan allocated. A path is joined only for an
// error that is printed. cwd reads names that are paths.
type attrDir struct {
	fd  int
	dir string
}

var cwd = attrDir{fd: unix.AT_FDCWD}

// openDir opens dir as an attrDir, or, when it cannot be opened, returns
// one that reads by whole paths below it.
func openDir(dir string) attrDir {
	if d, err := openAttrDir(dir); err == nil {
		return d
	}
	return attrDir{fd: unix.AT_FDCWD, dir: dir}
}

// noDir is the attrDir of a failed open: closing it closes nothing.
var noDir = attrDir{fd: -1}

func openAttrDir(dir string) (attrDir, error) {
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return noDir, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return attrDir{fd: fd, dir: dir}, nil
}

func (d attrDir) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
	}
}

// path is the path of the entry name, for messages.
func (d attrDir) path(name string) string { return join(d.dir, name) }

// at is what names the entry name to the kernel: the name itself relative
// to the descriptor, or its whole path when there is no descriptor.
func (d attrDir) at(name string) string {
	if d.fd == unix.AT_FDCWD {
		return join(d.dir, name)
	}
	return name
}

// readAttr reads a small sysfs attribute. The error names the file and
// keeps fs.ErrNotExist visible to errors.Is.
//
// It makes raw syscalls rather than going through os.File, which spends
// several more (fcntl, epoll) per file: a scan opens eight attributes per
// card. One read suffices: sysfs hands out an attribute whole on the first
// read, and a regular file (a fake tree) reads short only at its end.
func readAttr(p string) (string, error) { return cwd.readAttr(p) }

func (d attrDir) readAttr(name string) (string, error) {
	var fd int
	err := ignoringEINTR(func() (err error) {
		// O_NONBLOCK: a FIFO where an attribute belongs would block a
		// plain open forever; sysfs attributes ignore the flag.
		fd, err = unix.Openat(d.fd, d.at(name), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return "", &attrError{pathError{"open", d.dir, name, err}}
	}
	defer unix.Close(fd)
	var (
		buf [maxAttr + 1]byte
		n   int
	)
	err = ignoringEINTR(func() (err error) {
		n, err = unix.Read(fd, buf[:])
		return err
	})
	switch {
	case err != nil:
		return "", &attrError{pathError{"read", d.dir, name, err}}
	case n > maxAttr:
		return "", fmt.Errorf("reading %s: longer than %d bytes", d.path(name), maxAttr)
	}
	return string(buf[:n]), nil
}

// pathError is an *fs.PathError (what Unwrap returns) whose path is
// joined only when the error is printed or unwrapped: most are never
// printed, because a missing optional attribute (sriov_numvfs on a GPU
// without SR-IOV) is an answer, not a failure. errors.Is sees the errno
// without joining.
type pathError struct {
	op, dir, name string
	err           error
}

func (e *pathError) pathErr() *fs.PathError {
	return &fs.PathError{Op: e.op, Path: join(e.dir, e.name), Err: e.err}
}

func (e *pathError) Error() string { return e.pathErr().Error() }

func (e *pathError) Unwrap() error { return e.pathErr() }

func (e *pathError) Is(target error) bool { return errors.Is(e.err, target) }

// attrError is readAttr's error, "reading <path>: open <path>: <errno>".
type attrError struct{ pathError }

func (e *attrError) Error() string {
	return "reading " + join(e.dir, e.name) + ": " + e.pathError.Error()
}

// readlink is os.Readlink (same errors) for the short links of sysfs,
// read into a buffer on the stack; a target that might not fit goes to
// os.Readlink.
func (d attrDir) readlink(name string) (string, error) {
	var (
		buf [256]byte
		n   int
	)
	err := ignoringEINTR(func() (err error) {
		n, err = unix.Readlinkat(d.fd, d.at(name), buf[:])
		return err
	})
	switch {
	case err != nil:
		return "", &pathError{"readlink", d.dir, name, err}
	case n < len(buf):
		return string(buf[:n]), nil
	}
	return os.Readlink(d.path(name))
}

// readDirNames lists a directory of sysfs, sorted. Like readAttr it makes
// raw syscalls: os.ReadDir spends five more (fcntl, epoll) on every
// directory, and a scan lists one per card. O_DIRECTORY refuses anything
// else at once: a FIFO where a directory belongs would block a plain open
// forever. Errors are those os.ReadDir returns.
func readDirNames(dir string) ([]string, error) { return cwd.readDirNames(dir) }

func (d attrDir) readDirNames(name string) ([]string, error) {
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Openat(d.fd, d.at(name), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path(name), Err: err}
	}
	defer unix.Close(fd)
	var (
		buf   [8192]byte
		names []string
	)
	for {
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.Getdents(fd, buf[:])
			return err
		})
		if err != nil {
			sort.Strings(names)
			return names, &fs.PathError{Op: "readdirent", Path: d.path(name), Err: err}
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	sort.Strings(names)
	return names, nil
}

// join is filepath.Join of a clean directory and a clean relative name
// without "..", which is all a scan joins (directory entries, attribute
// names): without Clean's pass over the whole path, which was a tenth of
// a scan's time.
func join(dir, name string) string {
	switch dir {
	case "/":
		return "/" + name
	case ".", "":
		return name
	}
	return dir + "/" + name
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// node builds the Node for a DRM entry; HostPath is filled in by checkNodes.
func (s *Scanner) node(name string, major, minor uint32) Node {
	return Node{
		Path:     "/dev/dri/" + name,
		HostPath: join(s.driDir, name),
		Major:    major,
		Minor:    minor,
	}
}

// checkNodes verifies that each node of d exists in dri (<dev-root>/dri) as a
// char device with the numbers sysfs gives, and points HostPath at the real
// node when the dev-root entry is a symlink.
func checkNodes(dri attrDir, d *Device) (bool, string) {
	if reason := checkNode(dri, &d.CardNode); reason != "" {
		return false, reason
	}
	if d.RenderNode != nil {
		if reason := checkNode(dri, d.RenderNode); reason != "" {
			return false, reason
		}
	}
	return true, ""
}

func checkNode(dri attrDir, n *Node) string {
	p := n.HostPath
	var st unix.Stat_t
	if err := unix.Fstatat(dri.fd, dri.at(filepath.Base(p)), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Sprintf("device node %s: %v", p, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Sprintf("device node %s: %v", p, err)
		}
		if err := unix.Stat(real, &st); err != nil {
			return fmt.Sprintf("device node %s: %v", real, err)
		}
		p = real
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Sprintf("device node %s is not a char device", p)
	}
	if maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev); maj != n.Major || min != n.Minor {
		return fmt.Sprintf("device node %s is %d:%d, sysfs says %d:%d", p, maj, min, n.Major, n.Minor)
	}
	n.HostPath = p
	return ""
}

// byPathLinks returns the GPU's udev by-path links that exist and lead to
// its own nodes (same char device numbers). Names are built exactly; a prefix match would let
// 0000:00:02.0 claim the links of 0000:00:02.1's neighbours.
func byPathLinks(dri attrDir, d *Device) []Link {
	var links []Link
	for _, n := range d.Nodes() {
		suffix := "-card"
		if strings.HasPrefix(filepath.Base(n.Path), "renderD") {
			suffix = "-render"
		}
		name := "pci-" + d.PCIAddress + suffix
		host := dri.path("by-path/" + name)
		var st unix.Stat_t
		if unix.Fstatat(dri.fd, dri.at("by-path/"+name), &st, 0) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR ||
			unix.Major(st.Rdev) != n.Major || unix.Minor(st.Rdev) != n.Minor {
			continue
		}
		links = append(links, Link{Path: "/dev/dri/by-path/" + name, HostPath: host})
	}
	return links
}
