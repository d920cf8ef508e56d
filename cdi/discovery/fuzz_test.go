package discovery_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// FuzzParsers feeds any attribute content to every parser: none may panic,
// and whatever one accepts must read back the same.
func FuzzParsers(f *testing.F) {
	for _, seed := range []string{"226:0\n", "0x8086\n", "0x030000\n", "-1\n", "7\n", "card10", "renderD128", "0000:03:00.1", "", "\x00", "4095:1048575", "0X56A0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if major, minor, err := discovery.ParseDevNumbers(s); err == nil {
			if major >= 1<<12 || minor >= 1<<20 {
				t.Errorf("ParseDevNumbers(%q) = %d:%d, beyond Linux's range", s, major, minor)
			}
			if m2, n2, err := discovery.ParseDevNumbers(fmt.Sprintf("%d:%d\n", major, minor)); err != nil || m2 != major || n2 != minor {
				t.Errorf("ParseDevNumbers(%q) = %d:%d does not read back", s, major, minor)
			}
		}
		for _, digits := range []int{4, 6} {
			if id, err := discovery.ParseHexID(s, digits); err == nil {
				if again, err := discovery.ParseHexID(id, digits); err != nil || again != id || id != strings.ToLower(id) {
					t.Errorf("ParseHexID(%q, %d) = %q does not read back", s, digits, id)
				}
			}
		}
		if n, err := discovery.ParseNUMANode(s); err == nil && n < -1 {
			t.Errorf("ParseNUMANode(%q) = %d", s, n)
		}
		if n, err := discovery.ParseCount(s); err == nil && (n < 0 || n > 0xffff) {
			t.Errorf("ParseCount(%q) = %d", s, n)
		}
		if n, ok := discovery.ParseCardName(s); ok && "card"+strconv.Itoa(n) != s {
			t.Errorf("ParseCardName(%q) = %d", s, n)
		}
		if n, ok := discovery.ParseRenderName(s); ok && "renderD"+strconv.Itoa(n) != s {
			t.Errorf("ParseRenderName(%q) = %d", s, n)
		}
		if discovery.IsPCIAddress(s) && len(s) != len("0000:00:00.0") {
			t.Errorf("IsPCIAddress(%q) is true", s)
		}
	})
}

// fuzzFiles are the attributes FuzzScanAttribute overwrites, relative to
// the function directory of card0.
var fuzzFiles = []string{"vendor", "device", "class", "numa_node", "sriov_totalvfs", "sriov_numvfs", "drm/card0/dev", "drm/renderD128/dev"}

// FuzzScanAttribute writes any content into one attribute of card0 and
// scans: the scan must not fail or panic, must account for card0 exactly
// once (device, skipped or ignored), and must hand out card1 untouched.
func FuzzScanAttribute(f *testing.F) {
	n := fakenode.NewT(f)
	n.MustApply(f, func(n *fakenode.Node) error {
		return n.AddGPU(fakenode.GPU{Card: 0, PCI: "0000:00:02.0", TotalVFs: 4})
	}, func(n *fakenode.Node) error {
		return n.AddGPU(fakenode.GPU{Card: 1, PCI: "0000:03:00.0"})
	})
	fn, err := filepath.EvalSymlinks(filepath.Join(n.Sys, "bus", "pci", "devices", "0000:00:02.0"))
	if err != nil {
		f.Fatal(err)
	}
	for i := range fuzzFiles {
		f.Add(uint8(i), []byte("garbage\n"))
		f.Add(uint8(i), []byte{})
	}
	f.Add(uint8(0), []byte("0x10de\n"))
	f.Add(uint8(5), []byte("2\n"))
	sc := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev))
	f.Fuzz(func(t *testing.T, which uint8, content []byte) {
		p := filepath.Join(fn, fuzzFiles[int(which)%len(fuzzFiles)])
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.WriteFile(p, orig, 0o644); err != nil {
				t.Fatal(err)
			}
		})
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := sc.Scan()
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
		seen := 0
		for _, d := range res.Devices {
			if d.Card == "card0" {
				seen++
			}
		}
		for _, s := range append(res.Skipped, res.Ignored...) {
			if s.Name == "card0" {
				seen++
			}
		}
		if seen != 1 {
			t.Errorf("card0 accounted for %d times: %+v", seen, res)
		}
		if d, ok := res.ByPCI("0000:03:00.0"); !ok || !d.Usable() {
			t.Errorf("card1 not handed out: %+v", res)
		}
	})
}
