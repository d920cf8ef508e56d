package discovery_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// The fake nodes below are built by test/fakenode; its fixture comments
// list exactly what each fixture holds.

func scan(t *testing.T, n *fakenode.Node) *discovery.Result {
	t.Helper()
	res, err := discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev)).Scan()
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return res
}

func cards(devs []discovery.Device) []string {
	out := []string{}
	for _, d := range devs {
		out = append(out, d.Card)
	}
	return out
}

func skipNames(skips []discovery.Skip) []string {
	out := []string{}
	for _, s := range skips {
		out = append(out, s.Name)
	}
	return out
}

func device(t *testing.T, res *discovery.Result, card string) *discovery.Device {
	t.Helper()
	for i := range res.Devices {
		if res.Devices[i].Card == card {
			return &res.Devices[i]
		}
	}
	t.Fatalf("no device %s among %v (skipped %v, ignored %v)", card, cards(res.Devices), res.Skipped, res.Ignored)
	return nil
}

// fnDir returns the sysfs directory of the PCI function at addr.
func fnDir(t *testing.T, n *fakenode.Node, addr string) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(filepath.Join(n.Sys, "bus", "pci", "devices", addr))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func apply(t *testing.T, n *fakenode.Node, steps ...func(*fakenode.Node) error) {
	t.Helper()
	for _, step := range steps {
		if err := step(n); err != nil {
			t.Fatal(err)
		}
	}
}

func gpu(g fakenode.GPU) func(*fakenode.Node) error {
	return func(n *fakenode.Node) error { return n.AddGPU(g) }
}

func otherGPU(g fakenode.GPU) func(*fakenode.Node) error {
	return func(n *fakenode.Node) error { return n.AddOtherVendorGPU(g) }
}

func requireMknod(t *testing.T) {
	t.Helper()
	if !fakenode.CanMknod() {
		testenv.Unavailable(t, "this test needs real char device nodes (mknod, usually root)")
	}
}

func TestScanTakesOnlyIntelGPUs(t *testing.T) {
	tests := []struct {
		name        string
		steps       []func(*fakenode.Node) error
		wantDevices []string
		wantIgnored map[string]string // card -> part of the reason
	}{
		{
			name:        "connectors of a card are not devices",
			steps:       []func(*fakenode.Node) error{fakenode.IGPU},
			wantDevices: []string{"card0"},
		},
		{
			name: "a controlD node and the version file are not devices",
			steps: []func(*fakenode.Node) error{
				fakenode.IGPU,
				func(n *fakenode.Node) error { return n.AddControlNode(64) },
				func(n *fakenode.Node) error { return n.WriteVersion() },
			},
			wantDevices: []string{"card0"},
		},
		{
			name: "a simpledrm framebuffer is not a PCI device",
			steps: []func(*fakenode.Node) error{
				func(n *fakenode.Node) error { return n.AddSimpleDRM(0) },
				gpu(fakenode.GPU{Card: 1, PCI: "0000:00:02.0"}),
			},
			wantDevices: []string{"card1"},
			wantIgnored: map[string]string{"card0": "not a PCI device"},
		},
		{
			name: "an NVIDIA card is another vendor's",
			steps: []func(*fakenode.Node) error{
				otherGPU(fakenode.GPU{Card: 0, PCI: "0000:01:00.0", Vendor: "0x10de"}),
				gpu(fakenode.GPU{Card: 1, PCI: "0000:00:02.0"}),
			},
			wantDevices: []string{"card1"},
			wantIgnored: map[string]string{"card0": "vendor 0x10de is not Intel"},
		},
		{
			name: "an AMD card is another vendor's",
			steps: []func(*fakenode.Node) error{
				otherGPU(fakenode.GPU{Card: 0, PCI: "0000:01:00.0", Vendor: "0x1002"}),
			},
			wantDevices: []string{},
			wantIgnored: map[string]string{"card0": "vendor 0x1002 is not Intel"},
		},
		{
			name: "an Intel function bound to another driver is not ours",
			steps: []func(*fakenode.Node) error{
				gpu(fakenode.GPU{Card: 0, PCI: "0000:00:02.0", Driver: "vfio-pci"}),
			},
			wantDevices: []string{},
			wantIgnored: map[string]string{"card0": "bound to vfio-pci, not i915 or xe"},
		},
		{
			name: "an Intel function outside PCI class 0x03 is not a GPU",
			steps: []func(*fakenode.Node) error{
				gpu(fakenode.GPU{Card: 0, PCI: "0000:00:02.0", Class: "0x048000"}),
			},
			wantDevices: []string{},
			wantIgnored: map[string]string{"card0": "PCI class 0x048000 of 0000:00:02.0 is not a display controller"},
		},
		{
			name:        "a display controller (class 0x038000) is a GPU like a VGA one",
			steps:       []func(*fakenode.Node) error{gpu(fakenode.GPU{Card: 0, PCI: "0000:03:00.0", Class: "0x038000"})},
			wantDevices: []string{"card0"},
		},
		{
			name:        "the xe driver is taken like i915",
			steps:       []func(*fakenode.Node) error{gpu(fakenode.GPU{Card: 0, PCI: "0000:03:00.0", Driver: "xe"})},
			wantDevices: []string{"card0"},
		},
		{
			name:        "the Tricky mix yields only its Intel cards",
			steps:       []func(*fakenode.Node) error{fakenode.Tricky},
			wantDevices: []string{"card2", "card3", "card10"},
			wantIgnored: map[string]string{"card0": "not a PCI device", "card1": "vendor 0x10de is not Intel"},
		},
		{
			name:        "a node without cards has no devices",
			steps:       nil,
			wantDevices: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			apply(t, n, tt.steps...)
			res := scan(t, n)
			if got := cards(res.Devices); !slices.Equal(got, tt.wantDevices) {
				t.Errorf("devices = %v, want %v", got, tt.wantDevices)
			}
			if len(res.Skipped) != 0 {
				t.Errorf("skipped = %v, want none", res.Skipped)
			}
			if len(res.Ignored) != len(tt.wantIgnored) {
				t.Errorf("ignored = %v, want %d entries", res.Ignored, len(tt.wantIgnored))
			}
			for _, s := range res.Ignored {
				want, ok := tt.wantIgnored[s.Name]
				if !ok || !strings.Contains(s.Reason, want) {
					t.Errorf("ignored %s with reason %q, want a reason containing %q", s.Name, s.Reason, want)
				}
			}
		})
	}
}

func TestScanOrdersCardsByNumber(t *testing.T) {
	tests := []struct {
		name  string
		cards []int
		want  []string
	}{
		{name: "card2 comes before card10", cards: []int{10, 2}, want: []string{"card2", "card10"}},
		{name: "cards added in any order come out ascending", cards: []int{11, 1, 20, 3, 2}, want: []string{"card1", "card2", "card3", "card11", "card20"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			for i, c := range tt.cards {
				apply(t, n, gpu(fakenode.GPU{Card: c, PCI: fakenode.ManyPCI(i)}))
			}
			if got := cards(scan(t, n).Devices); !slices.Equal(got, tt.want) {
				t.Errorf("devices = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestScanPairsRenderNodeThroughTheFunctionsDRMFolder(t *testing.T) {
	tests := []struct {
		name  string
		gpus  []fakenode.GPU
		want  map[string]string // card -> render ("" for none)
		ready []string
	}{
		{
			name: "card1 gets renderD135 although 128+1 is 129",
			gpus: []fakenode.GPU{{Card: 1, Render: 135, PCI: "0000:00:02.0"}},
			want: map[string]string{"card1": "renderD135"},
		},
		{
			name: "two GPUs whose render minors run against their card numbers",
			gpus: []fakenode.GPU{
				{Card: 0, Render: 129, PCI: "0000:00:02.0"},
				{Card: 1, Render: 128, PCI: "0000:03:00.0"},
			},
			want: map[string]string{"card0": "renderD129", "card1": "renderD128"},
		},
		{
			name: "a function without a render node has only its card",
			gpus: []fakenode.GPU{{Card: 0, Render: -1, PCI: "0000:00:02.0"}},
			want: map[string]string{"card0": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			for _, g := range tt.gpus {
				apply(t, n, gpu(g))
			}
			res := scan(t, n)
			for card, render := range tt.want {
				d := device(t, res, card)
				if d.Render != render {
					t.Errorf("%s: render = %q, want %q", card, d.Render, render)
				}
				switch {
				case render == "" && d.RenderNode != nil:
					t.Errorf("%s: render node %v, want none", card, d.RenderNode)
				case render == "" && len(d.Nodes()) != 1:
					t.Errorf("%s: nodes %v, want only the card", card, d.Nodes())
				case render != "" && (d.RenderNode == nil || d.RenderNode.Path != "/dev/dri/"+render):
					t.Errorf("%s: render node %v, want /dev/dri/%s", card, d.RenderNode, render)
				}
				if !d.Usable() {
					t.Errorf("%s: not usable: %s", card, d.Reason)
				}
			}
		})
	}
}

func TestScanReadsTheFunctionsAttributes(t *testing.T) {
	n := fakenode.NewT(t)
	apply(t, n, fakenode.DiscreteXe, gpu(fakenode.GPU{Card: 2, PCI: "0000:04:00.0", Device: "0x56A0", NUMA: "3"}))
	res := scan(t, n)

	tests := []struct {
		name                               string
		card                               string
		pci, vendor, device, class, driver string
		index, numa                        int
	}{
		{name: "the integrated GPU is i915 with an unknown NUMA node", card: "card0", index: 0,
			pci: "0000:00:02.0", vendor: "0x8086", device: "0x46a6", class: "0x030000", driver: "i915", numa: -1},
		{name: "the discrete card behind bridges is xe on NUMA node 0", card: "card1", index: 1,
			pci: "0000:03:00.0", vendor: "0x8086", device: "0xe20b", class: "0x030000", driver: "xe", numa: 0},
		{name: "an upper-case device ID is lower-cased", card: "card2", index: 2,
			pci: "0000:04:00.0", vendor: "0x8086", device: "0x56a0", class: "0x030000", driver: "i915", numa: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := device(t, res, tt.card)
			got := []any{d.CardIndex, d.PCIAddress, d.VendorID, d.DeviceID, d.Class, d.Driver, d.NUMANode}
			want := []any{tt.index, tt.pci, tt.vendor, tt.device, tt.class, tt.driver, tt.numa}
			if !slices.Equal(got, want) {
				t.Errorf("index, pci, vendor, device, class, driver, numa = %v, want %v", got, want)
			}
			if d.SRIOV.Role != discovery.RoleNone {
				t.Errorf("SR-IOV role = %q, want none", d.SRIOV.Role)
			}
			if p, ok := res.ByPCI(tt.pci); !ok || p.Card != tt.card {
				t.Errorf("ByPCI(%s) = %v, %v; want %s", tt.pci, p, ok, tt.card)
			}
		})
	}
}

func TestScanSRIOV(t *testing.T) {
	t.Run("a PF with VFs enabled is not handed out and its VFs are", func(t *testing.T) {
		n := fakenode.NewT(t)
		apply(t, n, fakenode.SRIOV)
		res := scan(t, n)
		if got, want := cards(res.Usable()), []string{"card2", "card3"}; !slices.Equal(got, want) {
			t.Errorf("usable = %v, want %v", got, want)
		}
		pf := device(t, res, "card1")
		if pf.Usable() || !strings.Contains(pf.Reason, "physical function with 2 VFs enabled") {
			t.Errorf("PF usable = %v, reason %q; want not usable for its VFs", pf.Usable(), pf.Reason)
		}
		if want := (discovery.SRIOV{Role: discovery.RolePF, NumVFs: 2, TotalVFs: 7}); pf.SRIOV != want {
			t.Errorf("PF SR-IOV = %+v, want %+v", pf.SRIOV, want)
		}
		if !pf.Ready {
			t.Errorf("PF nodes not ready: %s", pf.Reason)
		}
	})
	t.Run("a VF knows its PF", func(t *testing.T) {
		n := fakenode.NewT(t)
		apply(t, n, fakenode.SRIOV)
		res := scan(t, n)
		for _, card := range []string{"card2", "card3"} {
			vf := device(t, res, card)
			if want := (discovery.SRIOV{Role: discovery.RoleVF, PF: "0000:03:00.0"}); vf.SRIOV != want {
				t.Errorf("%s SR-IOV = %+v, want %+v", card, vf.SRIOV, want)
			}
			if vf.Class != "0x038000" || vf.NUMANode != 1 {
				t.Errorf("%s class %s NUMA %d, want 0x038000 and 1", card, vf.Class, vf.NUMANode)
			}
		}
	})
	t.Run("a PF capable of SR-IOV with no VFs enabled is handed out", func(t *testing.T) {
		n := fakenode.NewT(t)
		apply(t, n, gpu(fakenode.GPU{Card: 0, PCI: "0000:03:00.0", TotalVFs: 7}))
		d := device(t, scan(t, n), "card0")
		if !d.Usable() {
			t.Errorf("not usable: %s", d.Reason)
		}
		if want := (discovery.SRIOV{Role: discovery.RoleNone, TotalVFs: 7}); d.SRIOV != want {
			t.Errorf("SR-IOV = %+v, want %+v", d.SRIOV, want)
		}
	})
	t.Run("a PF whose VFs are bound elsewhere is still not handed out", func(t *testing.T) {
		n := fakenode.NewT(t)
		apply(t, n,
			gpu(fakenode.GPU{Card: 0, PCI: "0000:03:00.0", TotalVFs: 2, NumVFs: 1}),
			gpu(fakenode.GPU{Card: 1, PCI: "0000:03:00.1", PhysFn: "0000:03:00.0", Driver: "vfio-pci"}))
		res := scan(t, n)
		if got := cards(res.Usable()); len(got) != 0 {
			t.Errorf("usable = %v, want none", got)
		}
	})
}

// A scan reads /dev/dri through one descriptor. Where no directory can be
// opened it reads whole paths, and each GPU is listed, not ready, with
// what the kernel said of its node's path.
func TestScanWithoutADRIDirectoryListsEveryGPUNotReady(t *testing.T) {
	for name, want := range map[string]string{"missing": "no such file or directory", "a file": "not a directory"} {
		t.Run(name, func(t *testing.T) {
			n := fakenode.NewT(t)
			apply(t, n, fakenode.IGPU, gpu(fakenode.GPU{Card: 1, PCI: "0000:03:00.0"}))
			dri := filepath.Join(n.Dev, "dri")
			must(t, os.RemoveAll(dri))
			if name == "a file" {
				writeFile(t, dri, "")
			}
			scanWithoutDRI(t, n, want)
		})
	}
}

func scanWithoutDRI(t *testing.T, n *fakenode.Node, errno string) {
	t.Helper()
	res := scan(t, n)
	if len(res.Devices) != 2 || len(res.Skipped) != 0 {
		t.Fatalf("devices %d, skipped %v; want both GPUs listed", len(res.Devices), res.Skipped)
	}
	for _, card := range []string{"card0", "card1"} {
		d := device(t, res, card)
		want := filepath.Join(n.Dev, "dri", card) + ": " + errno
		if d.Ready || !strings.Contains(d.Reason, want) {
			t.Errorf("%s: ready %v, reason %q; want not ready, naming %q", card, d.Ready, d.Reason, want)
		}
	}
}

func TestScanReadiness(t *testing.T) {
	// Each case breaks the /dev side of card0 (an IGPU) and names what
	// the reason must say. card0's sysfs is left intact, so the GPU is
	// still listed, only not ready.
	tests := []struct {
		name       string
		needMknod  bool
		breakIt    func(t *testing.T, n *fakenode.Node)
		wantReason string
	}{
		{
			name: "a GPU created without device nodes is not ready",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				must(t, n.RemoveDevNodes("0000:00:02.0"))
			},
			wantReason: "dri/card0: no such file or directory",
		},
		{
			name: "a missing render node makes the GPU not ready",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				must(t, os.Remove(filepath.Join(n.Dev, "dri", "renderD128")))
			},
			wantReason: "dri/renderD128: no such file or directory",
		},
		{
			name: "sysfs numbers that differ from the node's make the GPU not ready",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				writeFile(t, filepath.Join(fnDir(t, n, "0000:00:02.0"), "drm", "card0", "dev"), "226:99\n")
			},
			wantReason: "sysfs says 226:99",
		},
		{
			name:      "a char node with another GPU's numbers makes the GPU not ready",
			needMknod: true,
			breakIt: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "card0")
				must(t, os.Remove(p))
				must(t, unix.Mknod(p, unix.S_IFCHR|0o660, int(unix.Mkdev(226, 7))))
			},
			wantReason: "is 226:7, sysfs says 226:0",
		},
		{
			name:      "a block device is not a char device",
			needMknod: true,
			breakIt: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "card0")
				must(t, os.Remove(p))
				must(t, unix.Mknod(p, unix.S_IFBLK|0o660, int(unix.Mkdev(226, 0))))
			},
			wantReason: "dri/card0 is not a char device",
		},
		{
			name: "a regular file is not a char device",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "card0")
				must(t, os.Remove(p))
				writeFile(t, p, "")
			},
			wantReason: "dri/card0 is not a char device",
		},
		{
			name: "a directory is not a char device",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "renderD128")
				must(t, os.Remove(p))
				must(t, os.Mkdir(p, 0o755))
			},
			wantReason: "dri/renderD128 is not a char device",
		},
		{
			name: "a symlink to a regular file is not a char device",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "card0")
				must(t, os.Remove(p))
				writeFile(t, p+".real", "")
				must(t, os.Symlink("card0.real", p))
			},
			wantReason: "dri/card0.real is not a char device",
		},
		{
			name: "a dangling symlink is not a node",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "card0")
				must(t, os.Remove(p))
				must(t, os.Symlink("gone", p))
			},
			wantReason: "dri/card0: lstat",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needMknod {
				requireMknod(t)
			}
			n := fakenode.NewT(t)
			apply(t, n, fakenode.IGPU, gpu(fakenode.GPU{Card: 1, PCI: "0000:03:00.0"}))
			tt.breakIt(t, n)
			res := scan(t, n)
			if len(res.Skipped) != 0 {
				t.Errorf("skipped %v, want none: a GPU that is not ready is still listed", res.Skipped)
			}
			d := device(t, res, "card0")
			if d.Ready || d.Usable() {
				t.Errorf("ready %v, usable %v; want neither", d.Ready, d.Usable())
			}
			if !strings.Contains(d.Reason, tt.wantReason) {
				t.Errorf("reason %q does not contain %q", d.Reason, tt.wantReason)
			}
			if len(d.ByPath) != 0 {
				t.Errorf("by-path links %v on a GPU that is not ready", d.ByPath)
			}
			if other := device(t, res, "card1"); !other.Usable() {
				t.Errorf("the healthy card1 is not usable: %s", other.Reason)
			}
		})
	}
}

func TestScanSkipsAGPUWithAMalformedFile(t *testing.T) {
	// Each case spoils one attribute of the GPU at 0000:00:02.0 (card0);
	// card1 next to it must come through untouched.
	tests := []struct {
		name    string
		gpu     fakenode.GPU
		file    string // relative to the function's directory
		content string // "" with dir set replaces the file by a directory
		dir     bool
	}{
		{name: "a vendor ID with five digits", file: "vendor", content: "0x80866\n"},
		{name: "a vendor file with a word", file: "vendor", content: "intel\n"},
		{name: "an empty vendor file", file: "vendor", content: ""},
		{name: "a vendor file longer than any attribute", file: "vendor", content: strings.Repeat("0x8086", 20)},
		{name: "a vendor that is a directory", file: "vendor", dir: true},
		{name: "a device ID that is not hex", file: "device", content: "0x46z6\n"},
		{name: "a missing device file", file: "device"},
		{name: "a class code cut short", file: "class", content: "0x03\n"},
		{name: "a missing class file", file: "class"},
		{name: "a card dev file without a colon", file: "drm/card0/dev", content: "226\n"},
		{name: "a card dev file with a word", file: "drm/card0/dev", content: "drm:card\n"},
		{name: "a missing card dev file", file: "drm/card0/dev"},
		{name: "a render dev file with a negative minor", file: "drm/renderD128/dev", content: "226:-128\n"},
		{name: "a NUMA node that is a word", file: "numa_node", content: "zero\n"},
		{name: "a NUMA node below -1", file: "numa_node", content: "-2\n"},
		{name: "an sriov_numvfs that is a word", gpu: fakenode.GPU{TotalVFs: 4}, file: "sriov_numvfs", content: "two\n"},
		{name: "a negative sriov_totalvfs", gpu: fakenode.GPU{TotalVFs: 4}, file: "sriov_totalvfs", content: "-4\n"},
		{name: "a physfn link to something that is not a PCI function", file: "physfn", content: "link:../../not-a-function"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" skips that GPU and names the file", func(t *testing.T) {
			n := fakenode.NewT(t)
			g := tt.gpu
			g.Card, g.PCI = 0, "0000:00:02.0"
			apply(t, n, gpu(g), gpu(fakenode.GPU{Card: 1, PCI: "0000:03:00.0"}))
			p := filepath.Join(fnDir(t, n, g.PCI), tt.file)
			must(t, os.RemoveAll(p))
			switch target, isLink := strings.CutPrefix(tt.content, "link:"); {
			case tt.dir:
				must(t, os.Mkdir(p, 0o755))
			case isLink:
				must(t, os.Symlink(target, p))
			case tt.content != "" || tt.file == "vendor":
				writeFile(t, p, tt.content)
			}

			res := scan(t, n)
			if got := skipNames(res.Skipped); !slices.Equal(got, []string{"card0"}) {
				t.Fatalf("skipped %v, want [card0]; devices %v, ignored %v", res.Skipped, cards(res.Devices), res.Ignored)
			}
			if want := "0000:00:02.0/" + tt.file; !strings.Contains(res.Skipped[0].Reason, want) {
				t.Errorf("reason %q does not name %s", res.Skipped[0].Reason, want)
			}
			if got := cards(res.Usable()); !slices.Equal(got, []string{"card1"}) {
				t.Errorf("usable = %v, want [card1]", got)
			}
		})
	}
}

func TestScanSurvivesBrokenLinks(t *testing.T) {
	tests := []struct {
		name        string
		breakIt     func(t *testing.T, n *fakenode.Node)
		wantSkipped string // card name, "" for none
		wantReason  string
		wantUsable  []string
	}{
		{
			name: "a class/drm link whose card directory vanished is skipped",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				must(t, os.RemoveAll(filepath.Join(fnDir(t, n, "0000:00:02.0"), "drm", "card0")))
			},
			wantSkipped: "card0",
			wantReason:  "class/drm/card0",
			wantUsable:  []string{"card1"},
		},
		{
			name: "a class/drm link whose whole PCI function vanished is skipped",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				must(t, os.RemoveAll(fnDir(t, n, "0000:00:02.0")))
			},
			wantSkipped: "card0",
			wantReason:  "class/drm/card0",
			wantUsable:  []string{"card1"},
		},
		{
			name: "a class/drm link that points at itself is skipped",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				must(t, os.Symlink("card5", filepath.Join(n.Sys, "class", "drm", "card5")))
			},
			wantSkipped: "card5",
			wantReason:  "class/drm/card5",
			wantUsable:  []string{"card0", "card1"},
		},
		{
			name: "two class/drm links that point at each other are skipped",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				drm := filepath.Join(n.Sys, "class", "drm")
				must(t, os.Symlink("card7", filepath.Join(drm, "card6")))
				must(t, os.Symlink("card6", filepath.Join(drm, "card7")))
			},
			wantSkipped: "card6",
			wantReason:  "class/drm/card6",
			wantUsable:  []string{"card0", "card1"},
		},
		{
			name: "a function whose drm folder loops back on itself is skipped",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				drm := filepath.Join(fnDir(t, n, "0000:00:02.0"), "drm")
				must(t, os.RemoveAll(filepath.Join(drm, "renderD128")))
				must(t, os.Symlink("renderD128", filepath.Join(drm, "renderD128x")))
				must(t, os.Symlink("renderD128x", filepath.Join(drm, "renderD128")))
			},
			wantSkipped: "card0",
			wantReason:  "0000:00:02.0/drm/renderD128",
			wantUsable:  []string{"card1"},
		},
		{
			name: "a driver link loop is read as a link, never followed",
			breakIt: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(fnDir(t, n, "0000:00:02.0"), "driver")
				must(t, os.Remove(p))
				must(t, os.Symlink("driver", p))
			},
			wantUsable: []string{"card1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			apply(t, n, fakenode.IGPU, gpu(fakenode.GPU{Card: 1, PCI: "0000:03:00.0"}))
			tt.breakIt(t, n)
			res := scan(t, n)
			if got := cards(res.Usable()); !slices.Equal(got, tt.wantUsable) {
				t.Errorf("usable = %v, want %v", got, tt.wantUsable)
			}
			if tt.wantSkipped == "" {
				return
			}
			for _, s := range res.Skipped {
				if s.Name == tt.wantSkipped {
					if !strings.Contains(s.Reason, tt.wantReason) {
						t.Errorf("reason %q does not contain %q", s.Reason, tt.wantReason)
					}
					return
				}
			}
			t.Errorf("%s not skipped; skipped %v, ignored %v", tt.wantSkipped, res.Skipped, res.Ignored)
		})
	}
}

// The scan's short cut takes a class link of the kernel's form straight to
// its function; these trees look like that form and are not it, so each
// must come out as the full resolution says, and no scan may leave a
// descriptor open, whichever way it went.
func TestScanShortCutTakesOnlyTheKernelsForm(t *testing.T) {
	igpuFn := func(t *testing.T, n *fakenode.Node) string { return fnDir(t, n, "0000:00:02.0") }
	relink := func(t *testing.T, n *fakenode.Node, card, target string) {
		link := filepath.Join(n.Sys, "class", "drm", card)
		must(t, os.Remove(link))
		must(t, os.Symlink(target, link))
	}
	tests := []struct {
		name  string
		build func(t *testing.T, n *fakenode.Node)
		check func(t *testing.T, res *discovery.Result)
	}{
		{
			name: "a card directory that is a symlink in its function is refused",
			build: func(t *testing.T, n *fakenode.Node) {
				c := filepath.Join(igpuFn(t, n), "drm", "card0")
				must(t, os.Rename(c, c+".real"))
				must(t, os.Symlink("card0.real", c))
			},
			check: func(t *testing.T, res *discovery.Result) {
				wantSkipped(t, res, "card0", "leads to")
			},
		},
		{
			name: "a link to another card of the same function is refused",
			build: func(t *testing.T, n *fakenode.Node) {
				// card1 names 0000:00:02.0's card0, whose function has a
				// drm/card1 as well.
				must(t, os.Mkdir(filepath.Join(igpuFn(t, n), "drm", "card1"), 0o755))
				relink(t, n, "card1", "../../devices/pci0000:00/0000:00:02.0/drm/card0")
			},
			check: func(t *testing.T, res *discovery.Result) {
				wantSkipped(t, res, "card1", "leads to")
			},
		},
		{
			name: "a card outside a drm directory belongs to the function its device link names",
			build: func(t *testing.T, n *fakenode.Node) {
				// card0 moves to 0000:00:02.0/gfx/card0 with a device link
				// to 0000:03:00.0; 0000:00:02.0 keeps a drm/card0.
				fn := igpuFn(t, n)
				gfx := filepath.Join(fn, "gfx", "card0")
				must(t, os.MkdirAll(gfx, 0o755))
				data, err := os.ReadFile(filepath.Join(fn, "drm", "card0", "dev"))
				must(t, err)
				writeFile(t, filepath.Join(gfx, "dev"), string(data))
				other, err := filepath.Rel(gfx, fnDir(t, n, "0000:03:00.0"))
				must(t, err)
				must(t, os.Symlink(other, filepath.Join(gfx, "device")))
				relink(t, n, "card0", "../../devices/pci0000:00/0000:00:02.0/gfx/card0")
			},
			check: func(t *testing.T, res *discovery.Result) {
				if d := device(t, res, "card0"); d.PCIAddress != "0000:03:00.0" {
					t.Errorf("card0 is %s, want 0000:03:00.0, which its device link names", d.PCIAddress)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			apply(t, n, fakenode.IGPU, gpu(fakenode.GPU{Card: 1, PCI: "0000:03:00.0"}))
			tt.build(t, n)
			before := openDescriptors(t)
			res := scan(t, n)
			if after := openDescriptors(t); after != before {
				t.Errorf("%d descriptors open after the scan, %d before", after, before)
			}
			tt.check(t, res)
		})
	}
}

func wantSkipped(t *testing.T, res *discovery.Result, card, reason string) {
	t.Helper()
	for _, s := range res.Skipped {
		if s.Name == card {
			if !strings.Contains(s.Reason, reason) {
				t.Errorf("%s skipped for %q, want a reason with %q", card, s.Reason, reason)
			}
			return
		}
	}
	t.Errorf("%s not skipped; usable %v, skipped %v", card, cards(res.Usable()), res.Skipped)
}

// openDescriptors counts this process's open file descriptors.
func openDescriptors(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(entries)
}

func TestScanResolvesEveryFormOfClassLink(t *testing.T) {
	// The kernel's class/drm links are relative and climb straight into
	// devices/; discovery takes a short cut for those. Every other form
	// must lead to the same device.
	relink := func(t *testing.T, n *fakenode.Node, target func(cardDir string) string) {
		link := filepath.Join(n.Sys, "class", "drm", "card0")
		cardDir, err := filepath.EvalSymlinks(link)
		must(t, err)
		must(t, os.Remove(link))
		must(t, os.Symlink(target(cardDir), link))
	}
	tests := []struct {
		name   string
		change func(t *testing.T, n *fakenode.Node)
	}{
		{name: "the kernel's relative link", change: func(*testing.T, *fakenode.Node) {}},
		{name: "an absolute link", change: func(t *testing.T, n *fakenode.Node) {
			relink(t, n, func(cardDir string) string { return cardDir })
		}},
		{name: "a relative link with .. further in", change: func(t *testing.T, n *fakenode.Node) {
			relink(t, n, func(cardDir string) string {
				rel, err := filepath.Rel(filepath.Join(n.Sys, "class", "drm"), cardDir)
				must(t, err)
				return strings.Replace(rel, "/drm/", "/drm/../drm/", 1)
			})
		}},
		{name: "a link to a link", change: func(t *testing.T, n *fakenode.Node) {
			drm := filepath.Join(n.Sys, "class", "drm")
			must(t, os.Rename(filepath.Join(drm, "card0"), filepath.Join(drm, "hop")))
			must(t, os.Symlink("hop", filepath.Join(drm, "card0")))
		}},
		{name: "a class directory reached through a symlinked sysfs root", change: func(t *testing.T, n *fakenode.Node) {
			must(t, os.Rename(n.Sys, n.Sys+".real"))
			must(t, os.Symlink(filepath.Base(n.Sys)+".real", n.Sys))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" leads to the GPU", func(t *testing.T) {
			n := fakenode.NewT(t)
			apply(t, n, fakenode.IGPU)
			tt.change(t, n)
			res := scan(t, n)
			d := device(t, res, "card0")
			if d.PCIAddress != "0000:00:02.0" || d.Render != "renderD128" || !d.Usable() {
				t.Errorf("card0 = %s with %s, usable %v (%s); want 0000:00:02.0 with renderD128, usable",
					d.PCIAddress, d.Render, d.Usable(), d.Reason)
			}
		})
	}
}

func TestScanOfManyGPUsKeepsCardOrder(t *testing.T) {
	// Big nodes are read on several goroutines; the result must not show it.
	n := fakenode.NewT(t)
	apply(t, n, func(n *fakenode.Node) error { return fakenode.Many(n, 70) })
	must(t, os.WriteFile(filepath.Join(fnDir(t, n, fakenode.ManyPCI(33)), "vendor"), []byte("bad\n"), 0o644))
	res := scan(t, n)
	if len(res.Devices) != 69 || len(res.Skipped) != 1 || res.Skipped[0].Name != "card33" {
		t.Fatalf("%d devices, skipped %v; want 69 and card33", len(res.Devices), res.Skipped)
	}
	for i, d := range res.Devices {
		want := i
		if i >= 33 {
			want = i + 1
		}
		if d.CardIndex != want || d.PCIAddress != fakenode.ManyPCI(want) {
			t.Fatalf("device %d is %s at %s, want card%d at %s", i, d.Card, d.PCIAddress, want, fakenode.ManyPCI(want))
		}
	}
}

func TestScanWithoutADRMClassFindsNothing(t *testing.T) {
	res, err := discovery.New(discovery.WithSysfsRoot(t.TempDir()), discovery.WithDevRoot(t.TempDir())).Scan()
	if err != nil || len(res.Devices)+len(res.Skipped)+len(res.Ignored) != 0 {
		t.Errorf("Scan of an empty sysfs = %+v, %v; want an empty result", res, err)
	}
}

func TestScanHostPaths(t *testing.T) {
	t.Run("with real char nodes the host path is the node under the dev root", func(t *testing.T) {
		requireMknod(t)
		n := fakenode.NewT(t, fakenode.WithMode(fakenode.Mknod))
		apply(t, n, fakenode.IGPU)
		d := device(t, scan(t, n), "card0")
		want := []discovery.Node{
			{Path: "/dev/dri/card0", HostPath: filepath.Join(n.Dev, "dri", "card0"), Major: 226, Minor: 0},
			{Path: "/dev/dri/renderD128", HostPath: filepath.Join(n.Dev, "dri", "renderD128"), Major: 226, Minor: 128},
		}
		if got := d.Nodes(); !slices.Equal(got, want) {
			t.Errorf("nodes = %v, want %v", got, want)
		}
	})
	t.Run("a dev-root entry that is a symlink is followed to the real node", func(t *testing.T) {
		n := fakenode.NewT(t, fakenode.WithMode(fakenode.HostDevices))
		apply(t, n, fakenode.IGPU)
		d := device(t, scan(t, n), "card0")
		if !d.Ready {
			t.Fatalf("not ready: %s", d.Reason)
		}
		for _, node := range d.Nodes() {
			link := filepath.Join(n.Dev, "dri", filepath.Base(node.Path))
			real, err := filepath.EvalSymlinks(link)
			if err != nil {
				t.Fatal(err)
			}
			if node.HostPath != real || strings.HasPrefix(node.HostPath, n.Dev) {
				t.Errorf("%s: host path %s, want the link's target %s", node.Path, node.HostPath, real)
			}
			var st unix.Stat_t
			must(t, unix.Lstat(node.HostPath, &st))
			if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != node.Major || unix.Minor(st.Rdev) != node.Minor {
				t.Errorf("%s: host path %s is not the char device %d:%d", node.Path, node.HostPath, node.Major, node.Minor)
			}
		}
	})
}

func TestScanByPathLinks(t *testing.T) {
	byPath := func(n *fakenode.Node, name string) discovery.Link {
		return discovery.Link{Path: "/dev/dri/by-path/" + name, HostPath: filepath.Join(n.Dev, "dri", "by-path", name)}
	}
	tests := []struct {
		name  string
		gpus  []fakenode.GPU
		setup func(t *testing.T, n *fakenode.Node)
		want  func(n *fakenode.Node) []discovery.Link // of card0 at 0000:00:02.0
	}{
		{
			name: "a GPU's own card and render links are found",
			gpus: []fakenode.GPU{{Card: 0, PCI: "0000:00:02.0"}},
			want: func(n *fakenode.Node) []discovery.Link {
				return []discovery.Link{byPath(n, "pci-0000:00:02.0-card"), byPath(n, "pci-0000:00:02.0-render")}
			},
		},
		{
			name: "a neighbour's links are not taken for a GPU without its own",
			gpus: []fakenode.GPU{
				{Card: 0, PCI: "0000:00:02.0", NoByPath: true},
				{Card: 1, PCI: "0000:00:02.1"},
			},
			want: func(*fakenode.Node) []discovery.Link { return nil },
		},
		{
			name: "names that only start like the GPU's links are not taken",
			gpus: []fakenode.GPU{{Card: 0, PCI: "0000:00:02.0", NoByPath: true}},
			setup: func(t *testing.T, n *fakenode.Node) {
				dir := filepath.Join(n.Dev, "dri", "by-path")
				must(t, os.MkdirAll(dir, 0o755))
				for _, name := range []string{"pci-0000:00:02.0-card0", "pci-0000:00:02.0-card.old", "pci-0000:00:02.00-card", "pci-0000:00:02.0-renderD128"} {
					must(t, os.Symlink("../card0", filepath.Join(dir, name)))
				}
			},
			want: func(*fakenode.Node) []discovery.Link { return nil },
		},
		{
			name: "a GPU's link name that leads to another GPU's node is not taken",
			gpus: []fakenode.GPU{
				{Card: 0, PCI: "0000:00:02.0"},
				{Card: 1, PCI: "0000:00:02.1"},
			},
			setup: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "by-path", "pci-0000:00:02.0-card")
				must(t, os.Remove(p))
				must(t, os.Symlink("../card1", p))
			},
			want: func(n *fakenode.Node) []discovery.Link {
				return []discovery.Link{byPath(n, "pci-0000:00:02.0-render")}
			},
		},
		{
			name: "a dangling link is not taken",
			gpus: []fakenode.GPU{{Card: 0, PCI: "0000:00:02.0"}},
			setup: func(t *testing.T, n *fakenode.Node) {
				p := filepath.Join(n.Dev, "dri", "by-path", "pci-0000:00:02.0-render")
				must(t, os.Remove(p))
				must(t, os.Symlink("../renderD999", p))
			},
			want: func(n *fakenode.Node) []discovery.Link {
				return []discovery.Link{byPath(n, "pci-0000:00:02.0-card")}
			},
		},
		{
			name: "a GPU without by-path links is still ready",
			gpus: []fakenode.GPU{{Card: 0, PCI: "0000:00:02.0", NoByPath: true}},
			want: func(*fakenode.Node) []discovery.Link { return nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			for _, g := range tt.gpus {
				apply(t, n, gpu(g))
			}
			if tt.setup != nil {
				tt.setup(t, n)
			}
			d := device(t, scan(t, n), "card0")
			if !d.Usable() {
				t.Fatalf("card0 not usable: %s", d.Reason)
			}
			if want := tt.want(n); !slices.Equal(d.ByPath, want) {
				t.Errorf("by-path = %v, want %v", d.ByPath, want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	must(t, os.WriteFile(p, []byte(content), 0o644))
}
