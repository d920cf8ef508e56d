package health

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
	var out AER
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{aerCorrectable, &out.Correctable},
		{aerNonfatal, &out.Nonfatal},
		{aerFatal, &out.Fatal},
	} {
		p := filepath.Join(fnDir, f.name)
		b, err := readSmall(p)
		if err != nil {
			return AER{}, err
		}
		n, err := ParseAERTotal(string(b))
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
func ParseAERTotal(content string) (uint64, error) {
	for line := range strings.Lines(content) {
		fields := strings.Fields(line)
		if len(fields) != 2 || !strings.HasPrefix(fields[0], "TOTAL_ERR_") {
			continue
		}
		n, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("count in %q is not a number", strings.TrimSpace(line))
		}
		return n, nil
	}
	return 0, errors.New("no TOTAL_ERR_ line")
}

// maxAttr bounds a sysfs attribute read: sysfs serves at most a page.
const maxAttr = 4096

// readSmall reads a sysfs attribute of at most a page.
func readSmall(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAttr+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if len(b) > maxAttr {
		return nil, fmt.Errorf("%s is longer than a sysfs attribute", p)
	}
	return b, nil
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
func configAllOnes(fnDir string) bool {
	if b, err := readSmall(filepath.Join(fnDir, runtimeStatus)); err == nil && strings.TrimSpace(string(b)) == "suspended" {
		return false
	}
	f, err := os.Open(filepath.Join(fnDir, configFile))
	if err != nil {
		return false
	}
	defer f.Close()
	var hdr [configHeader]byte
	n, err := io.ReadFull(f, hdr[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) || n < 4 {
		return false
	}
	return len(bytes.Trim(hdr[:n], "\xff")) == 0
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
func (m *Monitor) readSignals(dev *discovery.Device) signals {
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
		s.noResponse = configAllOnes(fnDir)
	}
	if m.cfg.sources&SourceWedge != 0 {
		s.survivability = exists(filepath.Join(fnDir, survivabilityFile))
	}
	if m.cfg.sources&SourceAER != 0 {
		aer, err := ReadAER(fnDir)
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
	_, err := os.Lstat(p)
	return !errors.Is(err, fs.ErrNotExist)
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
