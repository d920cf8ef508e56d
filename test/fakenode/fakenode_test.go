package fakenode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// requireMknod skips a Mknod-mode test where device nodes cannot be made, except in CI, where
// silently losing that coverage would hide a broken runner.
func requireMknod(t *testing.T) {
	t.Helper()
	if !CanMknod() {
		testenv.Unavailable(t, "cannot mknod(2) here (needs root or CAP_MKNOD): Mknod mode not tested, HostDevices mode still is")
	}
}

// modes runs f once per mode, as a subtest named after it.
func modes(t *testing.T, f func(t *testing.T, mode Mode)) {
	for _, mode := range []Mode{Mknod, HostDevices} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			if mode == Mknod {
				requireMknod(t)
			}
			f(t, mode)
		})
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func eval(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	target, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func assertAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: want absent, Lstat says %v", path, err)
	}
}

// assertRelLink checks that link is a relative symlink that resolves to want.
func assertRelLink(t *testing.T, link, want string) {
	t.Helper()
	if target := readlink(t, link); filepath.IsAbs(target) {
		t.Errorf("%s -> %s: want a relative link", link, target)
	}
	if got, want := eval(t, link), eval(t, want); got != want {
		t.Errorf("%s resolves to %s, want %s", link, got, want)
	}
}

// sysfsDev parses a sysfs `dev` file.
func sysfsDev(t *testing.T, path string) devNum {
	t.Helper()
	var d devNum
	content := read(t, path)
	if _, err := fmt.Sscanf(content, "%d:%d\n", &d.Major, &d.Minor); err != nil || content != d.String()+"\n" {
		t.Fatalf("%s holds %q, want MAJOR:MINOR and a newline", path, content)
	}
	return d
}

// assertDevNode checks the /dev/dri entry for a minor whose sysfs dev file says sys. In Mknod mode
// both must be 226:minorNum; in HostDevices mode the entry is a link to a host char device whose
// number is the one sysfs gives.
func assertDevNode(t *testing.T, mode Mode, path string, sys devNum, minorNum int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case Mknod:
		want := devNum{drmMajor, uint32(minorNum)}
		if sys != want {
			t.Errorf("sysfs dev for %s is %s, want %s", path, sys, want)
		}
		if fi.Mode()&os.ModeCharDevice == 0 || fi.Mode().Perm() != 0o660 {
			t.Errorf("%s has mode %s, want a char device with permissions 0660", path, fi.Mode())
		}
		if got := splitDev(uint64(fi.Sys().(*syscall.Stat_t).Rdev)); got != want { //nolint:unconvert // Rdev's type differs across platforms.
			t.Errorf("%s is %s, want %s", path, got, want)
		}
	case HostDevices:
		if fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s has mode %s, want a symlink", path, fi.Mode())
		}
		if target := readlink(t, path); !slices.Contains(hostDevicePaths, target) {
			t.Errorf("%s -> %s, want one of %v", path, target, hostDevicePaths)
		}
		got, err := charDevNum(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != sys {
			t.Errorf("%s resolves to device %s, sysfs says %s", path, got, sys)
		}
	}
}

// wantGPU is what one PCI GPU of a fixture must look like.
type wantGPU struct {
	pci, parent                   string
	vendor, device, class, driver string
	numa                          string
	card, render                  int // render -1: none
	connectors                    []string
	notReady                      bool // no /dev/dri nodes, no by-path links
}

func assertGPU(t *testing.T, n *Node, w wantGPU) {
	t.Helper()
	dir := filepath.Join(n.Sys, "devices", w.parent, w.pci)
	for file, want := range map[string]string{
		"vendor": w.vendor, "device": w.device, "class": w.class, "numa_node": w.numa,
	} {
		if got := read(t, filepath.Join(dir, file)); got != want+"\n" {
			t.Errorf("%s/%s = %q, want %q", w.pci, file, got, want+"\n")
		}
	}
	assertRelLink(t, filepath.Join(n.Sys, "bus", "pci", "devices", w.pci), dir)
	assertRelLink(t, filepath.Join(dir, "subsystem"), filepath.Join(n.Sys, "bus", "pci"))
	if w.driver == unbound {
		assertAbsent(t, filepath.Join(dir, "driver"))
		assertAbsent(t, filepath.Join(dir, "drm"))
		return
	}
	assertRelLink(t, filepath.Join(dir, "driver"), filepath.Join(n.Sys, "bus", "pci", "drivers", w.driver))
	assertRelLink(t, filepath.Join(n.Sys, "bus", "pci", "drivers", w.driver, w.pci), dir)

	card := fmt.Sprintf("card%d", w.card)
	minors := map[string]int{card: w.card}
	byPath := map[string]string{card: "card"}
	if w.render >= 0 {
		render := fmt.Sprintf("renderD%d", w.render)
		minors[render] = w.render
		byPath[render] = "render"
	}
	entries, err := os.ReadDir(filepath.Join(dir, "drm"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if wantNames := slices.Sorted(func(yield func(string) bool) {
		for name := range minors {
			if !yield(name) {
				return
			}
		}
	}); !slices.Equal(names, wantNames) {
		t.Errorf("%s/drm lists %v, want %v", w.pci, names, wantNames)
	}

	for name, num := range minors {
		class := filepath.Join(n.Sys, "class", "drm", name)
		if target := readlink(t, class); !strings.HasPrefix(target, "../../devices/") {
			t.Errorf("class/drm/%s -> %s, want ../../devices/…", name, target)
		}
		assertRelLink(t, class, filepath.Join(dir, "drm", name))
		assertRelLink(t, filepath.Join(class, "device"), dir)
		assertRelLink(t, filepath.Join(class, "subsystem"), filepath.Join(n.Sys, "class", "drm"))
		sys := sysfsDev(t, filepath.Join(class, "dev"))
		wantUevent := fmt.Sprintf("MAJOR=%d\nMINOR=%d\nDEVNAME=dri/%s\nDEVTYPE=drm_minor\n", sys.Major, sys.Minor, name)
		if got := read(t, filepath.Join(class, "uevent")); got != wantUevent {
			t.Errorf("class/drm/%s/uevent = %q, want %q", name, got, wantUevent)
		}
		node := filepath.Join(n.Dev, "dri", name)
		link := filepath.Join(n.Dev, "dri", "by-path", "pci-"+w.pci+"-"+byPath[name])
		if w.notReady {
			assertAbsent(t, node)
			assertAbsent(t, link)
			continue
		}
		assertDevNode(t, n.Mode(), node, sys, num)
		if got := readlink(t, link); got != "../"+name {
			t.Errorf("%s -> %s, want ../%s", link, got, name)
		}
	}
	for _, c := range w.connectors {
		name := card + "-" + c
		assertRelLink(t, filepath.Join(n.Sys, "class", "drm", name), filepath.Join(dir, "drm", card, name))
	}
}

// classDRM lists Sys/class/drm.
func classDRM(t *testing.T, n *Node) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.Sys, "class", "drm"))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

var (
	wantIGPU = wantGPU{pci: "0000:00:02.0", parent: "pci0000:00", vendor: "0x8086", device: "0x46a6",
		class: "0x030000", driver: "i915", numa: "-1", card: 0, render: 128, connectors: []string{"eDP-1", "DP-1"}}
	wantSRIOVPF = wantGPU{pci: "0000:03:00.0", parent: bridgesA, vendor: "0x8086", device: "0x56c0",
		class: "0x038000", driver: "i915", numa: "1", card: 1, render: 129}
)

func with(w wantGPU, edit func(*wantGPU)) wantGPU {
	edit(&w)
	return w
}

func TestFixturesLayOutTheTreeLikeLinux(t *testing.T) {
	cases := []struct {
		name     string
		build    func(*Node) error
		gpus     []wantGPU
		classDRM []string
		extra    func(t *testing.T, n *Node)
	}{
		{
			name:     "IGPU is one integrated i915 with two connectors",
			build:    IGPU,
			gpus:     []wantGPU{wantIGPU},
			classDRM: []string{"card0", "card0-DP-1", "card0-eDP-1", "renderD128"},
		},
		{
			name:  "DiscreteXe adds an xe card behind bridges to the IGPU",
			build: DiscreteXe,
			gpus: []wantGPU{wantIGPU, {pci: "0000:03:00.0", parent: bridgesA, vendor: "0x8086", device: "0xe20b",
				class: "0x030000", driver: "xe", numa: "0", card: 1, render: 129}},
			classDRM: []string{"card0", "card0-DP-1", "card0-eDP-1", "card1", "renderD128", "renderD129"},
		},
		{
			name:  "SRIOV links a PF and its two VFs both ways",
			build: SRIOV,
			gpus: []wantGPU{
				wantSRIOVPF,
				with(wantSRIOVPF, func(w *wantGPU) { w.pci, w.card, w.render = "0000:03:00.1", 2, 130 }),
				with(wantSRIOVPF, func(w *wantGPU) { w.pci, w.card, w.render = "0000:03:00.2", 3, 131 }),
			},
			classDRM: []string{"card1", "card2", "card3", "renderD129", "renderD130", "renderD131"},
			extra: func(t *testing.T, n *Node) {
				bridge := filepath.Join(n.Sys, "devices", bridgesA)
				pf := filepath.Join(bridge, "0000:03:00.0")
				if got := read(t, filepath.Join(pf, "sriov_totalvfs")); got != "7\n" {
					t.Errorf("sriov_totalvfs = %q, want 7", got)
				}
				if got := read(t, filepath.Join(pf, "sriov_numvfs")); got != "2\n" {
					t.Errorf("sriov_numvfs = %q, want 2", got)
				}
				for k, vf := range []string{"0000:03:00.1", "0000:03:00.2"} {
					virtfn := filepath.Join(pf, fmt.Sprintf("virtfn%d", k))
					if got := readlink(t, virtfn); got != "../"+vf {
						t.Errorf("virtfn%d -> %s, want ../%s", k, got, vf)
					}
					assertRelLink(t, virtfn, filepath.Join(bridge, vf))
					if got := readlink(t, filepath.Join(bridge, vf, "physfn")); got != "../0000:03:00.0" {
						t.Errorf("%s/physfn -> %s, want ../0000:03:00.0", vf, got)
					}
					assertRelLink(t, filepath.Join(bridge, vf, "physfn"), pf)
					assertAbsent(t, filepath.Join(bridge, vf, "sriov_totalvfs"))
				}
				assertAbsent(t, filepath.Join(pf, "virtfn2"))
				assertAbsent(t, filepath.Join(pf, "physfn"))
			},
		},
		{
			name:  "Tricky mixes vendors, a platform card, an unready GPU and non-device entries",
			build: Tricky,
			gpus: []wantGPU{
				{pci: "0000:06:00.0", parent: "pci0000:00/0000:00:1c.0", vendor: "0x10de", device: "0x2684",
					class: "0x030000", driver: "nvidia", numa: "-1", card: 1, render: 128},
				with(wantIGPU, func(w *wantGPU) { w.card, w.render = 2, 129 }),
				{pci: "0000:05:00.0", parent: "pci0000:00/0000:00:1d.0", vendor: "0x8086", device: "0x56a0",
					class: "0x030000", driver: "i915", numa: "0", card: 3, render: 130, notReady: true},
				{pci: "0000:03:00.0", parent: bridgesA, vendor: "0x8086", device: "0xe20b", class: "0x030000",
					driver: "xe", numa: "0", card: 10, render: 131, connectors: []string{"DP-2", "HDMI-A-1"}},
				{pci: "0000:07:00.0", parent: "pci0000:00/0000:00:1b.0", vendor: "0x8086", device: "0x56a1",
					class: "0x030000", driver: unbound, numa: "-1"},
			},
			classDRM: []string{"card0", "card1", "card10", "card10-DP-2", "card10-HDMI-A-1", "card2", "card2-DP-1",
				"card2-eDP-1", "card3", "controlD64", "renderD128", "renderD129", "renderD130", "renderD131", "version"},
			extra: func(t *testing.T, n *Node) {
				fb := filepath.Join(n.Sys, "devices", "platform", "simple-framebuffer.0")
				card0 := filepath.Join(n.Sys, "class", "drm", "card0")
				assertRelLink(t, card0, filepath.Join(fb, "drm", "card0"))
				assertRelLink(t, filepath.Join(card0, "device"), fb)
				assertAbsent(t, filepath.Join(fb, "vendor"))
				assertRelLink(t, filepath.Join(fb, "driver"), filepath.Join(n.Sys, "bus", "platform", "drivers", "simple-framebuffer"))
				assertDevNode(t, n.Mode(), filepath.Join(n.Dev, "dri", "card0"), sysfsDev(t, filepath.Join(card0, "dev")), 0)
				if got := readlink(t, filepath.Join(n.Dev, "dri", "by-path", "platform-simple-framebuffer.0-card")); got != "../card0" {
					t.Errorf("simpledrm by-path link -> %s, want ../card0", got)
				}

				control := filepath.Join(n.Sys, "class", "drm", "controlD64")
				assertRelLink(t, control, filepath.Join(n.Sys, "devices", "virtual", "drm", "controlD64"))
				assertAbsent(t, filepath.Join(control, "device"))
				assertDevNode(t, n.Mode(), filepath.Join(n.Dev, "dri", "controlD64"), sysfsDev(t, filepath.Join(control, "dev")), 64)

				if got := read(t, filepath.Join(n.Sys, "class", "drm", "version")); got != "drm 1.1.0 20060810\n" {
					t.Errorf("version = %q", got)
				}
				links, err := os.ReadDir(filepath.Join(n.Dev, "dri", "by-path"))
				if err != nil {
					t.Fatal(err)
				}
				if len(links) != 7 {
					t.Errorf("by-path holds %d links, want 7 (3 ready PCI GPUs × 2 + simpledrm)", len(links))
				}
			},
		},
		{
			name:  "Many(64) numbers cards, render nodes and addresses in step",
			build: func(n *Node) error { return Many(n, 64) },
			gpus: func() []wantGPU {
				var gpus []wantGPU
				for _, i := range []int{0, 1, 31, 32, 63} {
					gpus = append(gpus, wantGPU{pci: ManyPCI(i), parent: "pci0000:00", vendor: "0x8086", device: "0x56a0",
						class: "0x030000", driver: "i915", numa: fmt.Sprint(i % 2), card: i, render: 128 + i})
				}
				return gpus
			}(),
			extra: func(t *testing.T, n *Node) {
				if got := len(classDRM(t, n)); got != 128 {
					t.Errorf("class/drm holds %d entries, want 64 cards + 64 render nodes", got)
				}
			},
		},
		{
			name:  "Demo is two i915 GPUs and one xe GPU",
			build: Demo,
			gpus: []wantGPU{
				wantIGPU,
				{pci: "0000:03:00.0", parent: bridgesA, vendor: "0x8086", device: "0x56a0", class: "0x030000",
					driver: "i915", numa: "0", card: 1, render: 129},
				{pci: "0000:07:00.0", parent: bridgesB, vendor: "0x8086", device: "0xe20b", class: "0x030000",
					driver: "xe", numa: "0", card: 2, render: 130},
			},
			classDRM: []string{"card0", "card0-DP-1", "card0-eDP-1", "card1", "card2", "renderD128", "renderD129", "renderD130"},
		},
	}
	modes(t, func(t *testing.T, mode Mode) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				n := NewT(t, WithMode(mode))
				n.MustApply(t, tc.build)
				for _, g := range tc.gpus {
					t.Run(g.pci, func(t *testing.T) { assertGPU(t, n, g) })
				}
				if tc.classDRM != nil {
					if got := classDRM(t, n); !slices.Equal(got, tc.classDRM) {
						t.Errorf("class/drm = %v\nwant        %v", got, tc.classDRM)
					}
				}
				if tc.extra != nil {
					tc.extra(t, n)
				}
			})
		}
	})
}

func TestGPUsComeAndGo(t *testing.T) {
	modes(t, func(t *testing.T, mode Mode) {
		t.Run("RemoveDevNodes leaves sysfs and AddDevNodes restores the nodes", func(t *testing.T) {
			n := NewT(t, WithMode(mode))
			n.MustApply(t, IGPU)
			if err := n.RemoveDevNodes(wantIGPU.pci); err != nil {
				t.Fatal(err)
			}
			assertAbsent(t, filepath.Join(n.Dev, "dri", "card0"))
			assertAbsent(t, filepath.Join(n.Dev, "dri", "renderD128"))
			assertAbsent(t, filepath.Join(n.Dev, "dri", "by-path", "pci-0000:00:02.0-card"))
			eval(t, filepath.Join(n.Sys, "class", "drm", "card0", "device", "vendor"))
			if err := n.AddDevNodes(wantIGPU.pci); err != nil {
				t.Fatal(err)
			}
			assertGPU(t, n, wantIGPU)
			if err := n.AddDevNodes(wantIGPU.pci); err != nil {
				t.Errorf("AddDevNodes over existing nodes: %v", err)
			}
		})
		t.Run("AddDevNodes makes an unready GPU ready", func(t *testing.T) {
			n := NewT(t, WithMode(mode))
			n.MustApply(t, Tricky)
			if err := n.AddDevNodes("0000:05:00.0"); err != nil {
				t.Fatal(err)
			}
			assertGPU(t, n, wantGPU{pci: "0000:05:00.0", parent: "pci0000:00/0000:00:1d.0", vendor: "0x8086",
				device: "0x56a0", class: "0x030000", driver: "i915", numa: "0", card: 3, render: 130})
		})
		t.Run("RemoveGPU unplugs one GPU and leaves the others", func(t *testing.T) {
			n := NewT(t, WithMode(mode))
			n.MustApply(t, Tricky)
			if err := n.RemoveGPU("0000:03:00.0"); err != nil {
				t.Fatal(err)
			}
			want := []string{"card0", "card1", "card2", "card2-DP-1", "card2-eDP-1", "card3", "controlD64",
				"renderD128", "renderD129", "renderD130", "version"}
			if got := classDRM(t, n); !slices.Equal(got, want) {
				t.Errorf("class/drm = %v, want %v", got, want)
			}
			for _, p := range []string{
				filepath.Join(n.Sys, "devices", bridgesA, "0000:03:00.0"),
				filepath.Join(n.Sys, "bus", "pci", "devices", "0000:03:00.0"),
				filepath.Join(n.Sys, "bus", "pci", "drivers", "xe", "0000:03:00.0"),
				filepath.Join(n.Dev, "dri", "card10"),
				filepath.Join(n.Dev, "dri", "renderD131"),
				filepath.Join(n.Dev, "dri", "by-path", "pci-0000:03:00.0-card"),
				filepath.Join(n.Dev, "dri", "by-path", "pci-0000:03:00.0-render"),
			} {
				assertAbsent(t, p)
			}
			assertGPU(t, n, with(wantIGPU, func(w *wantGPU) { w.card, w.render = 2, 129 }))
			if err := n.RemoveGPU("0000:03:00.0"); !errors.Is(err, ErrUnknownGPU) {
				t.Errorf("removing it again: %v, want ErrUnknownGPU", err)
			}
		})
		t.Run("RemoveGPU of a VF frees its virtfn slot for the next VF", func(t *testing.T) {
			n := NewT(t, WithMode(mode))
			n.MustApply(t, SRIOV)
			pf := filepath.Join(n.Sys, "devices", bridgesA, "0000:03:00.0")
			if err := n.RemoveGPU("0000:03:00.1"); err != nil {
				t.Fatal(err)
			}
			assertAbsent(t, filepath.Join(pf, "virtfn0"))
			assertRelLink(t, filepath.Join(pf, "virtfn1"), filepath.Join(n.Sys, "devices", bridgesA, "0000:03:00.2"))
			n.MustAddGPU(t, GPU{Card: 4, PCI: "0000:03:00.3", Parent: bridgesA, PhysFn: "0000:03:00.0"})
			assertRelLink(t, filepath.Join(pf, "virtfn0"), filepath.Join(n.Sys, "devices", bridgesA, "0000:03:00.3"))
		})
		t.Run("RemoveGPU of a PF takes its VFs with it", func(t *testing.T) {
			n := NewT(t, WithMode(mode))
			n.MustApply(t, SRIOV)
			if err := n.RemoveGPU("0000:03:00.0"); err != nil {
				t.Fatal(err)
			}
			if got := classDRM(t, n); len(got) != 0 {
				t.Errorf("class/drm = %v, want empty", got)
			}
			entries, err := os.ReadDir(filepath.Join(n.Dev, "dri"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() != "by-path" {
					t.Errorf("dev/dri still holds %s", e.Name())
				}
			}
			if err := n.AddDevNodes("0000:03:00.1"); !errors.Is(err, ErrUnknownGPU) {
				t.Errorf("AddDevNodes of a removed VF: %v, want ErrUnknownGPU", err)
			}
		})
	})
}

func TestMistakesAreErrors(t *testing.T) {
	cases := []struct {
		name    string
		do      func(n *Node) error
		wantErr error  // checked with errors.Is when set
		wantMsg string // a substring of the message otherwise
	}{
		{"a malformed PCI address", func(n *Node) error { return n.AddGPU(GPU{PCI: "00:02.0"}) }, nil, "not a lower-case"},
		{"an upper-case PCI address", func(n *Node) error { return n.AddGPU(GPU{PCI: "0000:0A:00.0"}) }, nil, "not a lower-case"},
		{"the same PCI address twice", func(n *Node) error {
			return errors.Join(IGPU(n), n.AddGPU(GPU{Card: 5, PCI: "0000:00:02.0"}))
		}, nil, "already exists"},
		{"the same card number twice", func(n *Node) error {
			return errors.Join(IGPU(n), n.AddGPU(GPU{Card: 0, Render: 140, PCI: "0000:03:00.0"}))
		}, nil, "class/drm/card0 already exists"},
		{"the same render minor twice", func(n *Node) error {
			return errors.Join(IGPU(n), n.AddGPU(GPU{Card: 1, Render: 128, PCI: "0000:03:00.0"}))
		}, nil, "class/drm/renderD128 already exists"},
		{"a render minor below 128", func(n *Node) error { return n.AddGPU(GPU{PCI: "0000:00:02.0", Render: 5}) }, nil, "below 128"},
		{"a negative card number", func(n *Node) error { return n.AddGPU(GPU{PCI: "0000:00:02.0", Card: -1}) }, nil, "negative"},
		{"more VFs enabled than the PF has", func(n *Node) error {
			return n.AddGPU(GPU{PCI: "0000:03:00.0", TotalVFs: 1, NumVFs: 2})
		}, nil, "numvfs"},
		{"a VF whose PF was never added", func(n *Node) error {
			return n.AddGPU(GPU{PCI: "0000:03:00.1", PhysFn: "0000:03:00.0"})
		}, ErrUnknownGPU, ""},
		{"a parent outside sys/devices", func(n *Node) error { return n.AddGPU(GPU{PCI: "0000:00:02.0", Parent: "../x"}) }, nil, "parent"},
		{"a connector with a slash", func(n *Node) error {
			return n.AddGPU(GPU{PCI: "0000:00:02.0", Connectors: []string{"DP/1"}})
		}, nil, "connector"},
		{"another vendor's GPU without a vendor", func(n *Node) error { return n.AddOtherVendorGPU(GPU{PCI: "0000:06:00.0"}) }, nil, "Vendor is not set"},
		{"another vendor's GPU that is Intel", func(n *Node) error {
			return n.AddOtherVendorGPU(GPU{PCI: "0000:06:00.0", Vendor: "0x8086"})
		}, nil, "use AddGPU"},
		{"an unknown vendor without a driver", func(n *Node) error {
			return n.AddOtherVendorGPU(GPU{PCI: "0000:06:00.0", Vendor: "0x1af4"})
		}, nil, "needs Driver and Device"},
		{"a control minor outside 64..127", func(n *Node) error { return n.AddControlNode(5) }, nil, "64..127"},
		{"a second simpledrm on a taken card", func(n *Node) error {
			return errors.Join(IGPU(n), n.AddSimpleDRM(0))
		}, nil, "class/drm/card0 already exists"},
		{"dev nodes for an unbound function", func(n *Node) error {
			return errors.Join(n.AddGPU(GPU{PCI: "0000:07:00.0", Driver: "-"}), n.AddDevNodes("0000:07:00.0"))
		}, nil, "no DRM minors"},
		{"removing dev nodes of an unknown GPU", func(n *Node) error { return n.RemoveDevNodes("0000:09:00.0") }, ErrUnknownGPU, ""},
		{"Many with too many GPUs", func(n *Node) error { return Many(n, MaxMany+1) }, nil, "outside"},
		{"Many with a negative count", func(n *Node) error { return Many(n, -1) }, nil, "outside"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.do(NewT(t, WithMode(HostDevices)))
			switch {
			case err == nil:
				t.Fatal("no error")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("error %q is not %v", err, tc.wantErr)
			case tc.wantErr == nil && !strings.Contains(err.Error(), tc.wantMsg):
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Run("without a mode it picks Mknod exactly when mknod works", func(t *testing.T) {
		want := HostDevices
		if CanMknod() {
			want = Mknod
		}
		if got := NewT(t).Mode(); got != want {
			t.Errorf("mode = %s, want %s", got, want)
		}
	})
	t.Run("it creates the base directories", func(t *testing.T) {
		n := NewT(t, WithMode(HostDevices))
		for _, d := range []string{filepath.Join(n.Sys, "class", "drm"), filepath.Join(n.Dev, "dri")} {
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
				t.Errorf("%s: %v", d, err)
			}
		}
		if n.Sys != filepath.Join(n.Root, "sys") || n.Dev != filepath.Join(n.Root, "dev") {
			t.Errorf("Sys=%s Dev=%s, want them under Root=%s", n.Sys, n.Dev, n.Root)
		}
	})
	t.Run("an empty root is an error", func(t *testing.T) {
		if _, err := New(""); err == nil {
			t.Error("no error")
		}
	})
	t.Run("an unknown mode is an error", func(t *testing.T) {
		if _, err := New(t.TempDir(), WithMode(Mode(7))); err == nil || !strings.Contains(err.Error(), "Mode(7)") {
			t.Errorf("error %v, want one naming Mode(7)", err)
		}
	})
}

func TestConcurrentAddsAreSafe(t *testing.T) {
	n := NewT(t, WithMode(HostDevices))
	var wg sync.WaitGroup
	errs := make([]error, 32)
	for i := range errs {
		wg.Go(func() { errs[i] = n.AddGPU(GPU{Card: i, PCI: ManyPCI(i)}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := len(classDRM(t, n)); got != 64 {
		t.Errorf("class/drm holds %d entries, want 64", got)
	}
}

func TestManyPCIAddressesAreDistinctAndOrdered(t *testing.T) {
	prev := ""
	for i := range MaxMany {
		pci := ManyPCI(i)
		if !bdfPattern.MatchString(pci) || pci <= prev {
			t.Fatalf("ManyPCI(%d) = %s after %s: want a valid address sorting after the previous one", i, pci, prev)
		}
		prev = pci
	}
	if prev != "0000:20:1f.0" {
		t.Errorf("ManyPCI(%d) = %s, want 0000:20:1f.0", MaxMany-1, prev)
	}
}

func TestDeviceNumbersRoundTripLikeTheKernel(t *testing.T) {
	for _, d := range []devNum{{226, 0}, {226, 128}, {226, 1151}, {1, 3}, {4095, 1 << 19}, {4096, 255}} {
		if got := splitDev(mkdev(d)); got != d {
			t.Errorf("splitDev(mkdev(%s)) = %s", d, got)
		}
	}
	got, err := charDevNum("/dev/null")
	if err != nil {
		testenv.Unavailable(t, "no /dev/null char device to check the decoding against: %v", err)
	}
	if got != (devNum{1, 3}) {
		t.Errorf("/dev/null decodes as %s, want 1:3", got)
	}
}

func BenchmarkMany(b *testing.B) {
	for _, count := range []int{64, 512} {
		b.Run(fmt.Sprint(count), func(b *testing.B) {
			for b.Loop() {
				n, err := New(b.TempDir(), WithMode(HostDevices))
				if err != nil {
					b.Fatal(err)
				}
				if err := Many(n, count); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
