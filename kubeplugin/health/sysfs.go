package health

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
)

// The sysfs files the Monitor reads. Every one is world-readable on a real
// kernel except survivability_mode, whose presence (not content) is what
// counts.
const (
	aerCorrectable    = "aer_dev_correctable"
	aerNonfatal       = "aer_dev_nonfatal"
	aerFatal          = "aer_dev_fatal"
	survivabilityFile = "survivability_mode"
	configFile        = "config"
	runtimeStatus     = "power/runtime_status"
	failingDevice     = "failing_device"
	coredumpPrefix    = "devcd"
)

// FunctionDir is where sysfs keeps the PCI function at addr:
// <root>/bus/pci/devices/<addr>, a link into the device tree.
func FunctionDir(root, addr string) string {
	return filepath.Join(root, "bus", "pci", "devices", addr)
}

// CardDir is <root>/class/drm/<card>, a link to the card's directory.
func CardDir(root, card string) string { return filepath.Join(root, "class", "drm", card) }

// coredumpDir is <root>/class/devcoredump.
func coredumpDir(root string) string { return filepath.Join(root, "class", "devcoredump") }

// ReadAER reads the three aer_dev_* files of the function directory fnDir.
// It returns an error wrapping fs.ErrNotExist when the function has no
// AER counters, and one naming the file when a file is malformed.
func ReadAER(fnDir string) (AER, error) {
	var r attrReader
	return r.readAER(fnDir)
}

func (r *attrReader) readAER(fnDir string) (AER, error) {
	var out AER
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{aerCorrectable, &out.Correctable},
		{aerNonfatal, &out.Nonfatal},
		{aerFatal, &out.Fatal},
	} {
		p := fnDir + "/" + f.name
		b, err := r.read(p)
		if err != nil {
			return AER{}, err
		}
		n, err := aerTotal(b)
		if err != nil {
			return AER{}, fmt.Errorf("%s: %w", p, err)
		}
		*f.dst = n
	}
	return out, nil
}

// ParseAERTotal reads the TOTAL_ERR_* line of an aer_dev_* file: one
// "<name> <count>" line per error type (names may hold spaces in older
// kernels), then the total.
func ParseAERTotal(content string) (uint64, error) { return aerTotal([]byte(content)) }

// aerTotal is ParseAERTotal of the bytes as read: a GPU's three files are
// about 1.5 kB, read at every Check, so only the total's line becomes a
// string.
func aerTotal(content []byte) (uint64, error) {
	for line := range bytes.Lines(content) {
		name, count, ok := twoFields(line)
		if !ok || !bytes.HasPrefix(name, []byte("TOTAL_ERR_")) {
			continue
		}
		n, err := strconv.ParseUint(string(count), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("count in %q is not a number", bytes.TrimSpace(line))
		}
		return n, nil
	}
	return 0, errors.New("no TOTAL_ERR_ line")
}

// twoFields splits a line that holds exactly two fields separated by
// white space, as strings.Fields would, without allocating.
func twoFields(line []byte) (first, second []byte, ok bool) {
	f := bytes.TrimSpace(line)
	i := bytes.IndexFunc(f, unicode.IsSpace)
	if i < 0 {
		return nil, nil, false
	}
	first, second = f[:i], bytes.TrimLeftFunc(f[i:], unicode.IsSpace)
	if bytes.IndexFunc(second, unicode.IsSpace) >= 0 {
		return nil, nil, false
	}
	return first, second, true
}

// maxAttr bounds a sysfs attribute read: sysfs serves at most a page.
const maxAttr = 4096

// attrReader reads sysfs attributes into one buffer of its own, reused
// from file to file: a Check reads six files per GPU, and an os.File and
// a fresh buffer for each were most of what a Check allocated. What read
// returns is valid until the next read.
type attrReader struct{ buf []byte }

// read reads a sysfs attribute of at most a page. Its errors are those of
// os.Open and os.File.Read, naming the file.
func (r *attrReader) read(p string) ([]byte, error) {
	b, err := r.readUpTo(p, maxAttr+1)
	if err == nil && len(b) > maxAttr {
		return nil, fmt.Errorf("%s is longer than a sysfs attribute", p)
	}
	return b, err
}

// readUpTo reads the first limit bytes of a file, or all of a shorter one.
func (r *attrReader) readUpTo(p string, limit int) ([]byte, error) {
	var fd int
	err := ignoringEINTR(func() (err error) {
		// O_NONBLOCK: a FIFO in a fake or hostile tree must not block.
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if r.buf == nil {
		r.buf = make([]byte, maxAttr+1)
	}
	n := 0
	for n < limit {
		var m int
		err := ignoringEINTR(func() (err error) {
			m, err = unix.Read(fd, r.buf[n:limit])
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, &fs.PathError{Op: "read", Path: p, Err: err})
		}
		if m <= 0 {
			break
		}
		n += m
	}
	return r.buf[:n], nil
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// configHeader is what an unprivileged reader gets of a config file: the
// standard header.
const configHeader = 64

// configAllOnes reports whether the function's config header reads all
// ones — every byte 0xff, as reads of a device that does not answer
// complete. (An SR-IOV VF reads 0xffff as vendor and device ID by design,
// so the vendor ID alone proves nothing.) A runtime-suspended function is
// not read: the read would power it up. Anything else unreadable is not
// evidence either way and reports false.
func (r *attrReader) configAllOnes(fnDir string) bool {
	if b, err := r.read(fnDir + "/" + runtimeStatus); err == nil && string(bytes.TrimSpace(b)) == "suspended" {
		return false
	}
	b, err := r.readUpTo(fnDir+"/"+configFile, configHeader)
	if err != nil || len(b) < 4 {
		return false
	}
	return len(bytes.Trim(b, "\xff")) == 0
}

// binding identifies one driver binding of a GPU: the inode numbers of its
// PCI function's and its card's sysfs directories. The kernel creates the
// card's directory anew at every bind (and the function's at every
// re-enumeration), and sysfs numbers directories from a cyclic counter, so
// a new directory does not get the number of the one it replaces: a
// changed number proves a rebind even when the uevent saying so was lost.
// 0 means unknown.
type binding struct{ fn, card uint64 }

// differs reports whether b and o are known to be different bindings.
func (b binding) differs(o binding) bool {
	return b.fn != 0 && o.fn != 0 && b.fn != o.fn || b.card != 0 && o.card != 0 && b.card != o.card
}

// merge fills what b does not know from o.
func (b binding) merge(o binding) binding {
	if b.fn == 0 {
		b.fn = o.fn
	}
	if b.card == 0 {
		b.card = o.card
	}
	return b
}

func inode(p string) uint64 {
	var st unix.Stat_t
	if unix.Stat(p, &st) != nil {
		return 0
	}
	return st.Ino
}

// signals are what sysfs says about one GPU at one Check.
type signals struct {
	gone          bool
	noResponse    bool
	survivability bool
	aer           AER
	hasAER        bool
	binding       binding
}

// readSignals reads the sysfs signals of dev that the sources ask for.
func (m *Monitor) readSignals(dev *discovery.Device, r *attrReader) signals {
	var s signals
	if !discovery.IsPCIAddress(dev.PCIAddress) {
		return s
	}
	fnDir := FunctionDir(m.cfg.root, dev.PCIAddress)
	fnIno := inode(fnDir)
	s.binding = binding{fn: fnIno}
	if dev.Card != "" {
		s.binding.card = inode(CardDir(m.cfg.root, dev.Card))
	}
	if fnIno == 0 {
		// Nothing more to read: whether that makes the GPU Unhealthy is
		// SourceGone's call.
		s.gone = m.cfg.sources&SourceGone != 0 && vanished(fnDir)
		return s
	}
	if m.cfg.sources&SourceGone != 0 {
		s.noResponse = r.configAllOnes(fnDir)
	}
	if m.cfg.sources&SourceWedge != 0 {
		s.survivability = exists(fnDir + "/" + survivabilityFile)
	}
	if m.cfg.sources&SourceAER != 0 {
		aer, err := r.readAER(fnDir)
		switch {
		case err == nil:
			s.aer, s.hasAER = aer, true
		case !errors.Is(err, fs.ErrNotExist):
			m.log.Debug("unreadable PCIe error counters", "pci", dev.PCIAddress, "err", err)
		}
	}
	return s
}

// exists reports whether p is there; an error other than "not there" (a
// permission problem) counts as there, so it cannot take a GPU out.
func exists(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) != unix.ENOENT
}

// vanished reports whether the link p, or what it leads to, is gone.
func vanished(p string) bool {
	_, err := os.Stat(p)
	return errors.Is(err, fs.ErrNotExist)
}

// failingFunction resolves a devcoredump's failing_device link to the PCI
// address of the device that failed; "" when the dump has vanished or
// does not name a PCI function.
func failingFunction(root, dump string) string {
	target, err := filepath.EvalSymlinks(filepath.Join(coredumpDir(root), dump, failingDevice))
	if err != nil {
		return ""
	}
	if addr := filepath.Base(target); discovery.IsPCIAddress(addr) {
		return addr
	}
	return ""
}

// isCoredumpName accepts devcdN.
func isCoredumpName(name string) bool {
	digits, ok := strings.CutPrefix(name, coredumpPrefix)
	if !ok || digits == "" || len(digits) > 10 {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// listCoredumps returns the devcdN names in class/devcoredump.
func listCoredumps(root string) []string {
	entries, err := os.ReadDir(coredumpDir(root))
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if isCoredumpName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names
}
