package fakenode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// What the kernel shows of a GPU's health and telemetry, for the health monitor and the metrics
// collector to read. For a GPU added at <PCI> (its directory <fn> under Sys/devices) these add:
//
//	<fn>/aer_dev_{correctable,nonfatal,fatal}           SetAER (PCIe error counters, TOTAL_ERR_* last)
//	<fn>/survivability_mode                             SetSurvivabilityMode (xe: firmware flash needed)
//	<fn>/config                                         WriteConfig, BreakConfig (all ones: no answer)
//	<fn>/power/runtime_status                           SetRuntimeStatus
//	Sys/devices/virtual/devcoredump/devcdN/{data,failing_device -> <fn>}, <fn>/devcoredump -> devcdN,
//	Sys/class/devcoredump/devcdN -> …, Sys/class/devcoredump/disabled      AddCoredump, RemoveCoredump
//	<fn>/hwmon/hwmonN/{name,tempK_input,tempK_label,powerK_input,energyK_input,…},
//	Sys/class/hwmon/hwmonN -> …                         AddHwmon
//	i915: Sys/class/drm/cardN/gt_{cur,max,act}_freq_mhz (gt0) and cardN/gt/gtK/rps_{cur,max,act}_freq_mhz
//	xe:   <fn>/tile0/gtK/freq0/{cur,max,act}_freq       SetGTFrequency
//
// RebindGPU re-creates the GPU's DRM minors as a driver unbind and bind do; the *Event methods
// return the uevent the kernel sends for a change, byte for byte.

// healthState numbers what the kernel numbers from global counters.
type healthState struct {
	coredumps int // devcdN handed out so far; the kernel never reuses N
	hwmons    int // hwmonN handed out so far
	graves    int // directories moved aside by RebindGPU
	seqnum    uint64
}

// AER is one function's PCIe error totals.
type AER struct {
	Correctable, Nonfatal, Fatal uint64
}

// The error names the kernel's aer_dev_* files list, in its order (drivers/pci/pcie/aer.c).
var (
	aerCorrectableNames   = []string{"RxErr", "BadTLP", "BadDLLP", "Rollover", "Timeout", "NonFatalErr", "CorrIntErr", "HeaderOF"}
	aerUncorrectableNames = []string{"Undefined", "DLP", "SDES", "TLP", "FCP", "CmpltTO", "CmpltAbrt", "UnxCmplt", "RxOF",
		"MalfTLP", "ECRC", "UnsupReq", "ACSViol", "UncorrIntErr", "BlockedTLP", "AtomicOpBlocked", "TLPBlockedErr", "PoisonTLPBlocked"}
)

// aerFile renders an aer_dev_* file with count charged to the error type at index at.
func aerFile(names []string, at int, total string, count uint64) string {
	var b strings.Builder
	for i, name := range names {
		n := uint64(0)
		if i == at {
			n = count
		}
		fmt.Fprintf(&b, "%s %d\n", name, n)
	}
	fmt.Fprintf(&b, "%s %d\n", total, count)
	return b.String()
}

// function returns the state of the GPU at pci; n.mu is held.
func (n *Node) function(pci string) (*fn, error) {
	f, ok := n.gpus[pci]
	if !ok {
		return nil, fmt.Errorf("%s: %w", pci, ErrUnknownGPU)
	}
	return f, nil
}

// SetAER writes the function's three aer_dev_* files: correctable errors as RxErr, non-fatal ones as
// CmpltTO (completion timeout), fatal ones as SDES (surprise down), each file ending in its total.
func (n *Node) SetAER(pci string, a AER) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return fmt.Errorf("fakenode: set AER: %w", err)
	}
	files := map[string]string{
		"aer_dev_correctable": aerFile(aerCorrectableNames, 0, "TOTAL_ERR_COR", a.Correctable),
		"aer_dev_nonfatal":    aerFile(aerUncorrectableNames, 5, "TOTAL_ERR_NONFATAL", a.Nonfatal),
		"aer_dev_fatal":       aerFile(aerUncorrectableNames, 2, "TOTAL_ERR_FATAL", a.Fatal),
	}
	for name, content := range files {
		if err := writeRaw(filepath.Join(f.dir, name), content); err != nil {
			return fmt.Errorf("fakenode: set AER of %s: %w", pci, err)
		}
	}
	return nil
}

// SetSurvivabilityMode adds (on) or removes the function's survivability_mode attribute, which xe
// shows, mode 0400, only while the firmware needs flashing.
func (n *Node) SetSurvivabilityMode(pci string, on bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return fmt.Errorf("fakenode: set survivability mode: %w", err)
	}
	p := filepath.Join(f.dir, "survivability_mode")
	if !on {
		err = removeIfExists(p)
	} else {
		err = os.WriteFile(p, []byte("Survivability mode type: Runtime\n"), 0o400)
	}
	if err != nil {
		return fmt.Errorf("fakenode: set survivability mode of %s: %w", pci, err)
	}
	return nil
}

// WriteConfig writes the function's config file as an unprivileged reader sees it: the 64-byte
// standard header with vendor, device and class (little-endian, as PCI lays them out), command and
// status set as for a device in use.
func (n *Node) WriteConfig(pci string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return fmt.Errorf("fakenode: write config: %w", err)
	}
	hdr := make([]byte, 64)
	vendor, _ := strconv.ParseUint(strings.TrimPrefix(f.spec.Vendor, "0x"), 16, 16)
	device, _ := strconv.ParseUint(strings.TrimPrefix(f.spec.Device, "0x"), 16, 16)
	class, _ := strconv.ParseUint(strings.TrimPrefix(f.spec.Class, "0x"), 16, 24)
	binary.LittleEndian.PutUint16(hdr[0:], uint16(vendor))
	binary.LittleEndian.PutUint16(hdr[2:], uint16(device))
	binary.LittleEndian.PutUint16(hdr[4:], 0x0407) // memory space, bus master, I/O space
	binary.LittleEndian.PutUint16(hdr[6:], 0x0010) // capabilities list
	hdr[9], hdr[10], hdr[11] = byte(class), byte(class>>8), byte(class>>16)
	if err := os.WriteFile(filepath.Join(f.dir, "config"), hdr, 0o644); err != nil {
		return fmt.Errorf("fakenode: write config of %s: %w", pci, err)
	}
	return nil
}

// BreakConfig makes the function's config header read all ones, as reads of a device that fell off
// the bus complete.
func (n *Node) BreakConfig(pci string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return fmt.Errorf("fakenode: break config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "config"), bytes.Repeat([]byte{0xff}, 64), 0o644); err != nil {
		return fmt.Errorf("fakenode: break config of %s: %w", pci, err)
	}
	return nil
}

// SetRuntimeStatus writes the function's power/runtime_status ("active", "suspended", …).
func (n *Node) SetRuntimeStatus(pci, status string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return fmt.Errorf("fakenode: set runtime status: %w", err)
	}
	dir := filepath.Join(f.dir, "power")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fakenode: set runtime status of %s: %w", pci, err)
	}
	if err := writeAttr(filepath.Join(dir, "runtime_status"), status); err != nil {
		return fmt.Errorf("fakenode: set runtime status of %s: %w", pci, err)
	}
	return nil
}

// ErrCoredumpPending is returned (wrapped) by AddCoredump for a device that still has a dump: the
// kernel drops a new dump until the pending one is read or expires.
var ErrCoredumpPending = errors.New("device already has a devcoredump")

// AddCoredump adds a devcoredump for the GPU at pci as dev_coredumpm does and returns its name
// (devcd1, devcd2, … in the order of calls on this node).
func (n *Node) AddCoredump(pci string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return "", fmt.Errorf("fakenode: add coredump: %w", err)
	}
	back := filepath.Join(f.dir, "devcoredump")
	if _, err := os.Lstat(back); err == nil {
		target, _ := os.Readlink(back)
		return "", fmt.Errorf("fakenode: add coredump of %s: %w (%s)", pci, ErrCoredumpPending, filepath.Base(target))
	}
	n.health.coredumps++
	name := fmt.Sprintf("devcd%d", n.health.coredumps)
	dir := filepath.Join(n.Sys, "devices", "virtual", "devcoredump", name)
	class := filepath.Join(n.Sys, "class", "devcoredump")
	steps := []func() error{
		func() error { return os.MkdirAll(dir, 0o755) },
		func() error { return os.MkdirAll(class, 0o755) },
		func() error { return writeRaw(filepath.Join(dir, "data"), "**** Xe Device Coredump ****\n") },
		func() error { return writeAttr(filepath.Join(class, "disabled"), "0") },
		func() error { return relSymlink(f.dir, filepath.Join(dir, "failing_device")) },
		func() error { return relSymlink(class, filepath.Join(dir, "subsystem")) },
		func() error { return relSymlink(dir, filepath.Join(class, name)) },
		func() error { return relSymlink(dir, back) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return "", fmt.Errorf("fakenode: add coredump of %s: %w", pci, err)
		}
	}
	return name, nil
}

// RemoveCoredump removes a devcoredump as the kernel does once it is read or 5 minutes pass.
func (n *Node) RemoveCoredump(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !strings.HasPrefix(name, "devcd") || strings.ContainsRune(name, '/') {
		return fmt.Errorf("fakenode: remove coredump %q: not a devcdN name", name)
	}
	dir := filepath.Join(n.Sys, "devices", "virtual", "devcoredump", name)
	failing, err := filepath.EvalSymlinks(filepath.Join(dir, "failing_device"))
	if err != nil {
		return fmt.Errorf("fakenode: remove coredump %s: %w", name, err)
	}
	errs := []error{
		removeIfExists(filepath.Join(failing, "devcoredump")),
		removeIfExists(filepath.Join(n.Sys, "class", "devcoredump", name)),
		os.RemoveAll(dir),
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fakenode: remove coredump %s: %w", name, err)
	}
	return nil
}

// Sensor is one hwmon channel: its label (empty for none) and its raw value in the hwmon ABI's
// units — millidegrees Celsius, microwatts, microjoules.
type Sensor struct {
	Label string
	Value int64
}

// Hwmon is a GPU's hwmon device. Channels are numbered from 1 in order: Temps become temp1_input,
// temp2_input, …; Powers power*_input; Energies energy*_input.
type Hwmon struct {
	Name     string // "i915" or "xe"
	Temps    []Sensor
	Powers   []Sensor
	Energies []Sensor
}

// AddHwmon adds a hwmon device below the GPU's function, as i915 and xe register theirs, and returns
// its directory.
func (n *Node) AddHwmon(pci string, h Hwmon) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return "", fmt.Errorf("fakenode: add hwmon: %w", err)
	}
	name := fmt.Sprintf("hwmon%d", n.health.hwmons)
	n.health.hwmons++
	dir := filepath.Join(f.dir, "hwmon", name)
	if err := n.writeHwmon(dir, name, h); err != nil {
		return "", fmt.Errorf("fakenode: add hwmon of %s: %w", pci, err)
	}
	return dir, nil
}

func (n *Node) writeHwmon(dir, name string, h Hwmon) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeAttr(filepath.Join(dir, "name"), h.Name); err != nil {
		return err
	}
	for _, kind := range []struct {
		prefix  string
		sensors []Sensor
	}{{"temp", h.Temps}, {"power", h.Powers}, {"energy", h.Energies}} {
		for i, s := range kind.sensors {
			base := filepath.Join(dir, fmt.Sprintf("%s%d_", kind.prefix, i+1))
			if err := writeAttr(base+"input", strconv.FormatInt(s.Value, 10)); err != nil {
				return err
			}
			if s.Label != "" {
				if err := writeAttr(base+"label", s.Label); err != nil {
					return err
				}
			}
		}
	}
	class := filepath.Join(n.Sys, "class", "hwmon")
	if err := os.MkdirAll(class, 0o755); err != nil {
		return err
	}
	return relSymlink(dir, filepath.Join(class, name))
}

// GTFreq is one GT's frequencies in MHz: the current request, the maximum request and the actual
// frequency.
type GTFreq struct {
	GT            int
	Cur, Max, Act int
}

// SetGTFrequency writes a GT's frequency files where the GPU's driver keeps them: i915 on the card
// (cardN/gt/gtK/rps_*_freq_mhz, and for gt0 also the older cardN/gt_*_freq_mhz), xe below the
// function (tile0/gtK/freq0/*_freq).
func (n *Node) SetGTFrequency(pci string, g GTFreq) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return fmt.Errorf("fakenode: set GT frequency: %w", err)
	}
	if len(f.minors) == 0 || g.GT < 0 {
		return fmt.Errorf("fakenode: set GT frequency of %s: no card, or GT %d is negative", pci, g.GT)
	}
	values := map[string]int{"cur": g.Cur, "max": g.Max, "act": g.Act}
	files := map[string]int{}
	card := filepath.Join(f.dir, "drm", f.minors[0].name)
	switch f.spec.Driver {
	case "xe":
		dir := filepath.Join(f.dir, "tile0", fmt.Sprintf("gt%d", g.GT), "freq0")
		for k, v := range values {
			files[filepath.Join(dir, k+"_freq")] = v
		}
	default:
		dir := filepath.Join(card, "gt", fmt.Sprintf("gt%d", g.GT))
		for k, v := range values {
			files[filepath.Join(dir, "rps_"+k+"_freq_mhz")] = v
			if g.GT == 0 {
				files[filepath.Join(card, "gt_"+k+"_freq_mhz")] = v
			}
		}
	}
	for p, v := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("fakenode: set GT frequency of %s: %w", pci, err)
		}
		if err := writeAttr(p, strconv.Itoa(v)); err != nil {
			return fmt.Errorf("fakenode: set GT frequency of %s: %w", pci, err)
		}
	}
	return nil
}

// RebindGPU does what unbinding and binding the driver again does to the tree: the GPU's DRM
// minors (and their connectors) are made anew — new directories, same names and numbers — and
// survivability_mode goes away with the driver that showed it. The old minor directories are moved
// under Root/graveyard rather than deleted, so the new ones cannot reuse their inode numbers, as
// sysfs never does. /dev/dri and every other file of the function stay as they are.
func (n *Node) RebindGPU(pci string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.function(pci)
	if err != nil {
		return fmt.Errorf("fakenode: rebind: %w", err)
	}
	if len(f.minors) == 0 {
		return fmt.Errorf("fakenode: rebind %s: an unbound function has no DRM minors", pci)
	}
	if err := n.rebind(f); err != nil {
		return fmt.Errorf("fakenode: rebind %s: %w", pci, err)
	}
	return nil
}

func (n *Node) rebind(f *fn) error {
	if err := removeIfExists(filepath.Join(f.dir, "survivability_mode")); err != nil {
		return err
	}
	classDir := filepath.Join(n.Sys, "class", "drm")
	n.health.graves++
	grave := filepath.Join(n.Root, "graveyard", strconv.Itoa(n.health.graves))
	if err := os.MkdirAll(grave, 0o755); err != nil {
		return err
	}
	card := f.minors[0].name
	for _, m := range f.minors {
		if err := removeIfExists(filepath.Join(classDir, m.name)); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(f.dir, "drm", m.name), filepath.Join(grave, m.name)); err != nil {
			return err
		}
	}
	for _, c := range f.spec.Connectors {
		if err := removeIfExists(filepath.Join(classDir, card+"-"+c)); err != nil {
			return err
		}
	}
	for _, m := range f.minors {
		if err := n.remakeMinor(f.dir, m); err != nil {
			return err
		}
	}
	return n.addConnectors(f.dir, card, f.spec.Connectors)
}

// remakeMinor creates a minor's directory and class/drm link with the numbers it already has.
func (n *Node) remakeMinor(devDir string, m minor) error {
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
	if err := os.Symlink(filepath.Join("..", "..", "..", filepath.Base(devDir)), filepath.Join(dir, "device")); err != nil {
		return err
	}
	classDir := filepath.Join(n.Sys, "class", "drm")
	if err := relSymlink(classDir, filepath.Join(dir, "subsystem")); err != nil {
		return err
	}
	return relSymlink(dir, filepath.Join(classDir, m.name))
}

// Telemetry is DiscreteXe with what the kernel shows of each GPU's health and sensors:
//   - both GPUs: aer_dev_* files with no errors, a config header, power/runtime_status "active".
//   - card0 (i915 iGPU, 0000:00:02.0): GT0 at cur 300, max 1300, act 300 MHz on the card
//     (cardN/gt_*_freq_mhz and cardN/gt/gt0/rps_*_freq_mhz); no hwmon, as integrated i915 has none.
//   - card1 (xe, 0000:03:00.0): hwmon "xe" with temp1 "pkg" 45500 m°C, temp2 "vram" 52000 m°C,
//     energy1 "card" 123456789 µJ, energy2 "pkg" 100000000 µJ (xe shows no power*_input);
//     GT0 at cur 1200, max 2400, act 1150 MHz and GT1 (media) at cur 800, max 1600, act 0 MHz
//     below the function (tile0/gtK/freq0/*_freq).
func Telemetry(n *Node) error {
	if err := DiscreteXe(n); err != nil {
		return fmt.Errorf("fixture Telemetry: %w", err)
	}
	const i915, xe = "0000:00:02.0", "0000:03:00.0"
	steps := []func() error{
		func() error { return n.SetGTFrequency(i915, GTFreq{GT: 0, Cur: 300, Max: 1300, Act: 300}) },
		func() error { return n.SetGTFrequency(xe, GTFreq{GT: 0, Cur: 1200, Max: 2400, Act: 1150}) },
		func() error { return n.SetGTFrequency(xe, GTFreq{GT: 1, Cur: 800, Max: 1600, Act: 0}) },
		func() error {
			_, err := n.AddHwmon(xe, Hwmon{Name: "xe",
				Temps:    []Sensor{{Label: "pkg", Value: 45500}, {Label: "vram", Value: 52000}},
				Energies: []Sensor{{Label: "card", Value: 123456789}, {Label: "pkg", Value: 100000000}}})
			return err
		},
	}
	for _, pci := range []string{i915, xe} {
		steps = append(steps,
			func() error { return n.SetAER(pci, AER{}) },
			func() error { return n.WriteConfig(pci) },
			func() error { return n.SetRuntimeStatus(pci, "active") })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("fixture Telemetry: %w", err)
		}
	}
	return nil
}
