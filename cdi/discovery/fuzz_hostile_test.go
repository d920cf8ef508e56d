package discovery_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// Fuzz targets for a hostile sysfs, next to FuzzParsers and
// FuzzScanAttribute: links, vanished files, directories and loops where
// attributes belong, a second class/drm entry, and the spec built from what
// the scan returns. Under plain `go test` each runs its seed corpus as a
// unit test; `make fuzz` runs each with -fuzz for a set time.

// maxReason bounds an error quoted from hostile content: a 1 MiB attribute
// must not become a 1 MiB log line. The parsers quote at most 32 bytes, an
// escaped byte takes four characters, and NormalizeDeviceID quotes twice.
const maxReason = 512

func checkBounded(t *testing.T, err error) {
	t.Helper()
	if err != nil && len(err.Error()) > maxReason {
		t.Fatalf("error of %d bytes quotes too much: %.200q…", len(err.Error()), err.Error())
	}
}

// hostileSeeds are attribute contents a broken or hostile tree may hold.
var hostileSeeds = []string{
	"226:0\n", "4095:1048575", "226\n", "", " \n", "226:-1\n", "226:0:1\n", "4096:0\n", "0x8086\n",
	"0X56A0", "0x030000\n", "-1\n", "65535\n", "65536\n", "+1\n", "1e3\n", "0x10\n", "９\n",
	"\x00\n", "\xff\xfe", strings.Repeat("9", 100), "card0", "renderD128", "card01", "0000:03:00.1",
}

// FuzzParsersOnHostileInput adds to FuzzParsers what a scan of a hostile
// tree relies on: a rejection quotes a bounded part of the content (it
// becomes a skip reason and a log line), an accepted value is the one that
// was read and is within range, and no name is both a card and a render node.
func FuzzParsersOnHostileInput(f *testing.F) {
	for _, s := range hostileSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _, err := discovery.ParseDevNumbers(s)
		checkBounded(t, err)
		for _, digits := range []int{4, 6} {
			id, err := discovery.ParseHexID(s, digits)
			checkBounded(t, err)
			if err == nil && (len(id) != 2+digits || !hexDigits.MatchString(id) || !strings.EqualFold(id, strings.TrimSpace(s))) {
				t.Fatalf("ParseHexID(%q, %d) = %q: not the %d hex digits that were read", s, digits, id, digits)
			}
		}
		n, err := discovery.ParseNUMANode(s)
		checkBounded(t, err)
		if err == nil {
			if again, err := discovery.ParseNUMANode(strconv.Itoa(n)); n < -1 || n > 1<<16 || err != nil || again != n {
				t.Fatalf("ParseNUMANode(%q) = %d: not -1 or a node number that reads back", s, n)
			}
		}
		_, err = discovery.ParseCount(s)
		checkBounded(t, err)
		_, isCard := discovery.ParseCardName(s)
		_, isRender := discovery.ParseRenderName(s)
		if isCard && isRender {
			t.Fatalf("%q is both a card and a render node", s)
		}
	})
}

var hexDigits = regexp.MustCompile(`^0x[0-9a-f]+$`)

func FuzzNormalizeDeviceID(f *testing.F) {
	for _, s := range []string{"0x56a0", "56A0", "0X56a0", " 56a0 ", "0x56a", "56a0,", "", "0x", "zz", "0x0x56", strings.Repeat("\xde", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := discovery.NormalizeDeviceID(s)
		checkBounded(t, err)
		if err != nil {
			return
		}
		// The result is what sysfs holds, so --allow-ids compares equal.
		if sysfs, err := discovery.ParseHexID(id+"\n", 4); err != nil || sysfs != id {
			t.Fatalf("NormalizeDeviceID(%q) = %q, which sysfs would spell %q (%v)", s, id, sysfs, err)
		}
		if again, err := discovery.NormalizeDeviceID(id); err != nil || again != id {
			t.Fatalf("NormalizeDeviceID is not idempotent: %q -> %q -> %q (%v)", s, id, again, err)
		}
	})
}

// pciAddress is an independent statement of what IsPCIAddress accepts:
// domain:bus:device.function in lower-case hex, device <= 0x1f, function <= 7.
var pciAddress = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$`)

// FuzzIsPCIAddress checks the names that physfn and class/drm links lead
// to against the regular expression above.
func FuzzIsPCIAddress(f *testing.F) {
	for _, s := range []string{"0000:03:00.0", "0000:00:02.0", "0000:00:1f.7", "0000:00:20.0", "0000:00:02.8",
		"0000:03:00.0 ", "0000:03:00", "0000:0G:00.0", "0000:0A:00.0", "0000:03:00.A", "0000-03-00.0", "10000:03:00.0", "pci0000:00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := discovery.IsPCIAddress(s), pciAddress.MatchString(s); got != want {
			t.Fatalf("IsPCIAddress(%q) = %v, want %v", s, got, want)
		}
	})
}

// The attributes FuzzScanHostileTree may spoil, two bits of ops each: 0 keeps the
// attribute, 1 writes the fuzzed content (or, for a link, points the link
// at it), 2 removes it, 3 puts a directory (a link: a link to itself) there.
var scanAttrs = []struct {
	path string // relative to the PCI function
	link bool
}{
	{path: "vendor"}, {path: "device"}, {path: "class"}, {path: "numa_node"},
	{path: "sriov_totalvfs"}, {path: "sriov_numvfs"}, {path: "drm/card0/dev"}, {path: "drm/renderD128/dev"},
	{path: "driver", link: true}, {path: "physfn", link: true}, {path: "drm/card0/device", link: true},
}

// FuzzScanHostileTree spoils the sysfs files of one Intel GPU with fuzzed content and
// checks that the scan neither fails nor panics, accounts for the card once
// (a device, or skipped or ignored with a reason), returns only well-formed
// devices, and that their spec is one the CDI library accepts. A second
// class/drm entry points wherever the fuzzer says, as a hostile or racing
// tree may.
func FuzzScanHostileTree(f *testing.F) {
	f.Add(uint32(0), "", "", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(1<<0), "0x10de\n", "", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(1<<2), "", "0x56A0\n", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(1<<4), "", "", "0x038000\n", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(1<<6), "", "", "", "1\n", "", "", "", "", "", "", "", "")
	f.Add(uint32(1<<8|1<<10), "", "", "", "", "7\n", "2\n", "", "", "", "", "", "")
	f.Add(uint32(1<<12), "", "", "", "", "", "", "226:1\n", "", "", "", "", "")
	f.Add(uint32(2<<14), "", "", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(1<<16), "", "", "", "", "", "", "", "", "../../../../bus/pci/drivers/xe", "", "", "")
	f.Add(uint32(1<<18), "", "", "", "", "", "", "", "", "", "../0000:00:01.0", "", "")
	f.Add(uint32(3<<20), "", "", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(3<<16|3<<18), "", "", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(0x3fffff), "", "", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint32(0), "", "", "", "", "", "", "", "", "", "", "card1", "../../devices/pci0000:00/0000:00:02.0/drm/card0")
	f.Add(uint32(0), "", "", "", "", "", "", "", "", "", "", "card1", "card1")
	f.Add(uint32(0), "", "", "", "", "", "", "", "", "", "", "card0-DP-9", "../../devices/pci0000:00/0000:00:02.0/drm/card0")
	f.Fuzz(func(t *testing.T, ops uint32, vendor, device, class, numa, totalVFs, numVFs, cardDev, renderDev, driver, physfn, extraName, extraTarget string) {
		// The card's own device link (which the scan need not follow for a
		// card under its function's drm folder) leads where the extra entry does.
		contents := []string{vendor, device, class, numa, totalVFs, numVFs, cardDev, renderDev, driver, physfn, extraTarget}
		n, err := fakenode.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := fakenode.IGPU(n); err != nil {
			t.Fatal(err)
		}
		fn := filepath.Join(n.Sys, "devices", "pci0000:00", "0000:00:02.0")
		for i, a := range scanAttrs {
			p := filepath.Join(fn, a.path)
			op := ops >> (2 * i) & 3
			if op == 0 {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
			var err error
			switch {
			case op == 1 && a.link:
				err = os.Symlink(contents[i], p)
			case op == 1:
				err = os.WriteFile(p, []byte(contents[i]), 0o644)
			case op == 3 && a.link:
				err = os.Symlink(filepath.Base(p), p)
			case op == 3:
				err = os.Mkdir(p, 0o755)
			}
			if err != nil {
				return // the filesystem refuses this input: no tree to scan
			}
		}
		want := 1
		if extraName != "" {
			if !filepath.IsLocal(extraName) || strings.ContainsRune(extraName, '/') {
				return // an entry name is one path element: no such tree
			}
			if err := os.Symlink(extraTarget, filepath.Join(n.Sys, "class", "drm", extraName)); err != nil {
				return // the filesystem refuses this input: no tree to scan
			}
			if _, ok := discovery.ParseCardName(extraName); ok {
				want = 2
			}
		}

		res, err := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev)).Scan()
		if err != nil {
			t.Fatalf("Scan failed on a node with a listable class/drm: %v", err)
		}
		if got := len(res.Devices) + len(res.Skipped) + len(res.Ignored); got != want {
			t.Fatalf("%d cards listed, %d accounted for: devices %+v, skipped %v, ignored %v", want, got, res.Devices, res.Skipped, res.Ignored)
		}
		for _, s := range append(res.Skipped, res.Ignored...) {
			if s.Reason == "" {
				t.Fatalf("%s left out without a reason", s.Name)
			}
			if len(s.Reason) > 1024 {
				t.Fatalf("%s left out with a %d-byte reason", s.Name, len(s.Reason))
			}
		}
		pcis := map[string]bool{}
		for _, d := range res.Devices {
			checkDevice(t, &d)
			if pcis[d.PCIAddress] {
				t.Fatalf("PCI function %s is two devices: %+v", d.PCIAddress, res.Devices)
			}
			pcis[d.PCIAddress] = true
		}
		if len(res.Usable()) == 0 {
			return
		}
		b, err := spec.NewBuilder()
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.Build(res.Devices)
		if err != nil {
			t.Fatalf("Build of scanned devices %+v: %v", res.Devices, err)
		}
		data, err := spec.Marshal(s, spec.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		if err := spec.Validate(data); err != nil {
			t.Fatalf("the spec of scanned devices is invalid: %v\n%s", err, data)
		}
	})
}

// checkDevice asserts what every consumer of a Device relies on.
func checkDevice(t *testing.T, d *discovery.Device) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("device %+v: "+format, append([]any{*d}, args...)...)
	}
	if _, ok := discovery.ParseCardName(d.Card); !ok || "card"+strconv.Itoa(d.CardIndex) != d.Card {
		fail("card name and index disagree")
	}
	if !discovery.IsPCIAddress(d.PCIAddress) {
		fail("bad PCI address")
	}
	if d.VendorID != discovery.IntelVendorID {
		fail("not an Intel vendor ID")
	}
	if id, err := discovery.ParseHexID(d.DeviceID, 4); err != nil || id != d.DeviceID {
		fail("device ID %q is not canonical", d.DeviceID)
	}
	if id, err := discovery.ParseHexID(d.Class, 6); err != nil || id != d.Class || !strings.HasPrefix(d.Class, "0x03") {
		fail("class %q is not a display class", d.Class)
	}
	switch d.Driver {
	case "", discovery.DriverI915, discovery.DriverXe:
	default:
		fail("driver %q", d.Driver)
	}
	if d.NUMANode < -1 {
		fail("NUMA node %d", d.NUMANode)
	}
	switch d.SRIOV.Role {
	case discovery.RoleNone, discovery.RolePF:
	case discovery.RoleVF:
		if !discovery.IsPCIAddress(d.SRIOV.PF) {
			fail("VF of %q", d.SRIOV.PF)
		}
	default:
		fail("SR-IOV role %q", d.SRIOV.Role)
	}
	if d.Usable() && (!d.Ready || d.Driver == "" || d.SRIOV.Role == discovery.RolePF) {
		fail("usable but not ready, unbound or a PF")
	}
	if !d.Usable() && d.Reason == "" {
		fail("unusable without a reason")
	}
	for _, node := range d.Nodes() {
		if !filepath.IsAbs(node.HostPath) || !strings.HasPrefix(node.Path, "/dev/dri/") {
			fail("node %+v", node)
		}
	}
	if d.Render != "" {
		if _, ok := discovery.ParseRenderName(d.Render); !ok || d.RenderNode == nil {
			fail("render node %q", d.Render)
		}
	}
}
