package reliability_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// Hostile sysfs: whatever the tree holds, a scan returns (no hang, no
// panic, no error while class/drm is readable), accounts for every card,
// and gives every card it leaves out a reason that names what is wrong.
// The GPU next to the broken one is still handed out.

const (
	brokenPCI = "0000:00:02.0" // card0, the GPU each case breaks
	stablePCI = "0000:03:00.0" // card1, which must come through
)

func twoGPUs(n *fakenode.Node) error {
	if err := fakenode.IGPU(n); err != nil {
		return err
	}
	return n.AddGPU(fakenode.GPU{Card: 1, PCI: stablePCI, Device: "0x56a0"})
}

// fnDir returns the sysfs directory of the PCI function at pci.
func fnDir(t testing.TB, n *fakenode.Node, pci string) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(filepath.Join(n.Sys, "bus", "pci", "devices", pci))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func scanner(n *fakenode.Node) *discovery.Scanner {
	return discovery.New(discovery.WithSysfsRoot(n.Sys), discovery.WithDevRoot(n.Dev))
}

// scanWithin scans, failing the test if the scan hangs or panics. A hung
// scan's goroutine is left behind: the test has failed by then.
func scanWithin(t testing.TB, sc *discovery.Scanner, as func(func())) (*discovery.Result, error) {
	t.Helper()
	type out struct {
		res   *discovery.Result
		err   error
		panic any
	}
	ch := make(chan out, 1)
	run := func() {
		defer func() {
			if p := recover(); p != nil {
				ch <- out{panic: p}
			}
		}()
		res, err := sc.Scan()
		ch <- out{res: res, err: err}
	}
	go as(run)
	select {
	case o := <-ch:
		if o.panic != nil {
			t.Fatalf("Scan panicked: %v", o.panic)
		}
		return o.res, o.err
	case <-time.After(waitFor):
		t.Fatalf("Scan hung for %s", waitFor)
		return nil, nil
	}
}

func direct(f func()) { f() }

// withoutDACOverride runs f on an OS thread that has lost
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that file modes bind even
// for root. The thread is never unlocked: it ends with f's goroutine, and
// its reduced capabilities with it. Scans of fewer than 16 cards stay on
// the calling goroutine, so all of their syscalls see the reduced set.
func withoutDACOverride(f func()) {
	runtime.LockOSThread()
	if os.Geteuid() == 0 {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			panic(fmt.Sprintf("capget: %v", err))
		}
		data[0].Effective &^= 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			panic(fmt.Sprintf("capset: %v", err))
		}
	}
	f()
}

func replaceWith(t testing.TB, p string, make func(p string) error) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	if err := make(p); err != nil {
		t.Fatal(err)
	}
}

func symlinkTo(target string) func(string) error {
	return func(p string) error { return os.Symlink(target, p) }
}

func fifo(p string) error { return unix.Mkfifo(p, 0o644) }

func chmod(mode os.FileMode) func(t testing.TB, p string) {
	return func(t testing.TB, p string) {
		t.Helper()
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(p, 0o755) })
	}
}

type outcome int

const (
	skipped  outcome = iota // card0 in Result.Skipped
	ignored                 // card0 in Result.Ignored
	notReady                // card0 a device, not usable, with a reason
	usable                  // card0 still handed out
	scanErr                 // Scan fails: class/drm itself cannot be read
)

func TestHostileSysfs(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t testing.TB, n *fakenode.Node, fn string)
		want    outcome
		reason  string // in card0's reason, or in the scan error
		as      func(func())
		// allBroken: the break hits every GPU, not only card0.
		allBroken bool
	}{
		// Symlink loops.
		{
			name: "a class/drm card link that loops on itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(n.Sys, "class/drm/card0"), symlinkTo("card0"))
			},
			want: skipped, reason: "class/drm/card0",
		},
		{
			name: "two class/drm card links that lead to each other",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(n.Sys, "class/drm/card0"), symlinkTo("card9"))
				replaceWith(t, filepath.Join(n.Sys, "class/drm/card9"), symlinkTo("card0"))
			},
			want: skipped, reason: "class/drm/card0",
		},
		{
			name: "the function's drm folder is a link to itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(fn, "drm"), symlinkTo("drm"))
			},
			want: skipped, reason: "class/drm/card0",
		},
		{
			name: "the vendor attribute is a link to itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(fn, "vendor"), symlinkTo("vendor"))
			},
			want: skipped, reason: brokenPCI + "/vendor",
		},
		{
			name: "the physfn link loops on itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(fn, "physfn"), symlinkTo("physfn"))
			},
			want: skipped, reason: brokenPCI + "/physfn",
		},
		{
			name: "the driver link loops on itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(fn, "driver"), symlinkTo("driver"))
			},
			want: ignored, reason: "driver",
		},
		{
			name: "the card's device node is a link to itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(n.Dev, "dri/card0"), symlinkTo("card0"))
			},
			want: notReady, reason: "dri/card0",
		},
		{
			name: "the card's by-path link loops on itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(n.Dev, "dri/by-path/pci-"+brokenPCI+"-card"), symlinkTo("pci-"+brokenPCI+"-card"))
			},
			want: usable,
		},
		{
			name: "class/drm itself is a link to itself",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(n.Sys, "class/drm"), symlinkTo("drm"))
			},
			want: scanErr, reason: "class/drm",
		},

		// Files that are gone between the listing and the reading: each is
		// a state a reader can meet while the kernel removes a GPU.
		{
			name:    "the card's directory is gone, its class/drm link is not",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { os.RemoveAll(filepath.Join(fn, "drm/card0")) },
			want:    skipped, reason: "class/drm/card0",
		},
		{
			name:    "the function's attributes are gone, its drm folder is not",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { os.Remove(filepath.Join(fn, "vendor")) },
			want:    ignored, reason: "no vendor file",
		},
		{
			name:    "the card's dev file is gone",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { os.Remove(filepath.Join(fn, "drm/card0/dev")) },
			want:    skipped, reason: brokenPCI + "/drm/card0/dev",
		},
		{
			name:    "the render node's directory is gone",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { os.RemoveAll(filepath.Join(fn, "drm/renderD128/dev")) },
			want:    skipped, reason: "renderD128/dev",
		},
		{
			name: "the card's device node is gone",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				os.Remove(filepath.Join(n.Dev, "dri/card0"))
			},
			want: notReady, reason: "dri/card0",
		},

		// Files no kernel makes in sysfs, which would block a plain open.
		{
			name:    "the vendor attribute is a FIFO",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { replaceWith(t, filepath.Join(fn, "vendor"), fifo) },
			want:    skipped, reason: brokenPCI + "/vendor",
		},
		{
			name: "the card's dev attribute is a FIFO",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(fn, "drm/card0/dev"), fifo)
			},
			want: skipped, reason: brokenPCI + "/drm/card0/dev",
		},
		{
			name:    "the function's drm folder is a FIFO",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { replaceWith(t, filepath.Join(fn, "drm"), fifo) },
			want:    skipped, reason: "class/drm/card0",
		},
		{
			name: "class/drm itself is a FIFO",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(n.Sys, "class/drm"), fifo)
			},
			want: scanErr, reason: "class/drm",
		},
		{
			name: "the numa_node attribute is an endless char device",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(fn, "numa_node"), symlinkTo("/dev/zero"))
			},
			want: skipped, reason: brokenPCI + "/numa_node",
		},
		{
			name: "the vendor attribute is a megabyte",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(fn, "vendor"), func(p string) error {
					return os.WriteFile(p, []byte(strings.Repeat("0x8086\n", 1<<17)), 0o644)
				})
			},
			want: skipped, reason: brokenPCI + "/vendor",
		},

		// Unreadable files.
		{
			name:    "an unreadable vendor attribute",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { chmod(0)(t, filepath.Join(fn, "vendor")) },
			want:    skipped, reason: brokenPCI + "/vendor: permission denied", as: withoutDACOverride,
		},
		{
			name:    "an unreadable device attribute",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { chmod(0)(t, filepath.Join(fn, "device")) },
			want:    skipped, reason: brokenPCI + "/device: permission denied", as: withoutDACOverride,
		},
		{
			name:    "an unreadable class attribute",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { chmod(0)(t, filepath.Join(fn, "class")) },
			want:    skipped, reason: brokenPCI + "/class: permission denied", as: withoutDACOverride,
		},
		{
			name:    "an unreadable numa_node attribute",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { chmod(0)(t, filepath.Join(fn, "numa_node")) },
			want:    skipped, reason: brokenPCI + "/numa_node: permission denied", as: withoutDACOverride,
		},
		{
			name: "an unreadable sriov_numvfs attribute",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				os.WriteFile(filepath.Join(fn, "sriov_numvfs"), []byte("0\n"), 0o644)
				chmod(0)(t, filepath.Join(fn, "sriov_numvfs"))
			},
			want: skipped, reason: brokenPCI + "/sriov_numvfs: permission denied", as: withoutDACOverride,
		},
		{
			name:    "an unreadable card dev attribute",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { chmod(0)(t, filepath.Join(fn, "drm/card0/dev")) },
			want:    skipped, reason: "card0/dev: permission denied", as: withoutDACOverride,
		},
		{
			name:    "an unreadable drm folder",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { chmod(0)(t, filepath.Join(fn, "drm")) },
			want:    skipped, reason: "permission denied", as: withoutDACOverride,
		},
		{
			name: "an unsearchable /dev/dri",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				chmod(0o600)(t, filepath.Join(n.Dev, "dri"))
			},
			want: notReady, reason: "permission denied", as: withoutDACOverride, allBroken: true,
		},
		{
			name:    "an unreadable class/drm",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) { chmod(0)(t, filepath.Join(n.Sys, "class/drm")) },
			want:    scanErr, reason: "class/drm", as: withoutDACOverride,
		},

		// A card that is not what its name says.
		{
			name: "a class/drm link to another card's directory",
			breakIt: func(t testing.TB, n *fakenode.Node, fn string) {
				replaceWith(t, filepath.Join(n.Sys, "class/drm/card0"), symlinkTo("../../devices/pci0000:00/"+stablePCI+"/drm/card1"))
			},
			want: skipped, reason: "card1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fakenode.NewT(t)
			n.MustApply(t, twoGPUs)
			tt.breakIt(t, n, fnDir(t, n, brokenPCI))
			as := tt.as
			if as == nil {
				as = direct
			}
			res, err := scanWithin(t, scanner(n), as)
			if tt.want == scanErr {
				if err == nil || !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("Scan = %v, want an error naming %s", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Scan failed although class/drm is readable: %v", err)
			}
			checkAccounted(t, res, true)
			if d, ok := res.ByPCI(stablePCI); !tt.allBroken && (!ok || !d.Usable() || d.Card != "card1") {
				t.Errorf("the GPU next to the broken one is not handed out: %+v", res)
			}
			var got outcome
			var reason string
			switch {
			case hasSkip(res.Skipped, "card0", &reason):
				got = skipped
			case hasSkip(res.Ignored, "card0", &reason):
				got = ignored
			default:
				d := deviceByCard(res, "card0")
				if d == nil {
					t.Fatalf("card0 is nowhere in %+v", res)
				}
				got, reason = notReady, d.Reason
				if d.Usable() {
					got = usable
				}
			}
			if got != tt.want {
				t.Fatalf("card0 came out as %v (%q), want %v", got, reason, tt.want)
			}
			if !strings.Contains(reason, tt.reason) {
				t.Errorf("card0's reason %q does not name %q", reason, tt.reason)
			}
		})
	}
}

func (o outcome) String() string {
	return [...]string{"skipped", "ignored", "not ready", "usable", "scan error"}[o]
}

func hasSkip(skips []discovery.Skip, name string, reason *string) bool {
	for _, s := range skips {
		if s.Name == name {
			*reason = s.Reason
			return true
		}
	}
	return false
}

func deviceByCard(res *discovery.Result, card string) *discovery.Device {
	for i := range res.Devices {
		if res.Devices[i].Card == card {
			return &res.Devices[i]
		}
	}
	return nil
}

// checkAccounted asserts that every card the scan left out has a reason,
// that no card is reported twice, and that every device is well formed;
// with nodes, that the nodes of a usable device are char devices (only
// where nothing removes them meanwhile).
func checkAccounted(t testing.TB, res *discovery.Result, nodes bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range slices.Concat(res.Skipped, res.Ignored) {
		if s.Reason == "" {
			t.Errorf("%s left out without a reason", s.Name)
		}
		if seen[s.Name] {
			t.Errorf("%s reported twice", s.Name)
		}
		seen[s.Name] = true
	}
	pcis := map[string]bool{}
	for _, d := range res.Devices {
		if seen[d.Card] || pcis[d.PCIAddress] {
			t.Errorf("%s (%s) reported twice", d.Card, d.PCIAddress)
		}
		seen[d.Card], pcis[d.PCIAddress] = true, true
		if !discovery.IsPCIAddress(d.PCIAddress) {
			t.Errorf("%s: PCI address %q", d.Card, d.PCIAddress)
		}
		if !d.Usable() && d.Reason == "" {
			t.Errorf("%s unusable without a reason", d.Card)
		}
		if d.Usable() && nodes {
			for _, node := range d.Nodes() {
				var st unix.Stat_t
				if err := unix.Stat(node.HostPath, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
					t.Errorf("%s is usable but %s is not a char device (%v)", d.Card, node.HostPath, err)
				}
			}
		}
	}
}

func TestTenThousandConnectorEntriesAreNotCards(t *testing.T) {
	n := fakenode.NewT(t)
	connectors := make([]string, 10_000)
	for i := range connectors {
		connectors[i] = fmt.Sprintf("DP-%d", i+1)
	}
	n.MustAddGPU(t, fakenode.GPU{Card: 0, PCI: brokenPCI, Connectors: connectors})
	n.MustAddGPU(t, fakenode.GPU{Card: 1, PCI: stablePCI, Device: "0x56a0"})
	entries, err := os.ReadDir(filepath.Join(n.Sys, "class", "drm"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 10_000 {
		t.Fatalf("class/drm has %d entries, want over 10,000", len(entries))
	}

	start := time.Now()
	res, err := scanWithin(t, scanner(n), direct)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scan of %d class/drm entries took %s", len(entries), time.Since(start))
	checkAccounted(t, res, true)
	if got := cardsOf(res.Usable()); !slices.Equal(got, []string{"card0", "card1"}) {
		t.Errorf("usable %v, want [card0 card1]; skipped %v, ignored %v", got, res.Skipped, res.Ignored)
	}
	if len(res.Skipped)+len(res.Ignored) != 0 {
		t.Errorf("connectors taken for cards: skipped %v, ignored %v", res.Skipped, res.Ignored)
	}
}

func cardsOf(devs []discovery.Device) []string {
	out := []string{}
	for _, d := range devs {
		out = append(out, d.Card)
	}
	return out
}

// TestScanWhileGPUsVanishAndReturn races scans against GPUs being removed
// and added again, node by node, so that files vanish between the listing
// of class/drm and the reading of each card. The GPU that stays must come
// through every scan; the others may be devices, not ready, or skipped,
// always with a reason.
func TestScanWhileGPUsVanishAndReturn(t *testing.T) {
	n := fakenode.NewT(t)
	n.MustAddGPU(t, fakenode.GPU{Card: 0, PCI: stablePCI, Device: "0x56a0"})
	churn := []fakenode.GPU{
		{Card: 1, PCI: "0000:04:00.0", Device: "0x56a0", Connectors: []string{"DP-1", "DP-2"}},
		{Card: 2, PCI: "0000:05:00.0", Device: "0xe20b", Driver: "xe"},
		{Card: 3, PCI: "0000:06:00.0", Device: "0x56c0", TotalVFs: 2},
	}
	for _, g := range churn {
		n.MustAddGPU(t, g)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var churnErr error
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			g := churn[i%len(churn)]
			if err := n.RemoveGPU(g.PCI); err != nil {
				churnErr = err
				return
			}
			if err := n.AddGPU(g); err != nil {
				churnErr = err
				return
			}
		}
	})

	const scans = 2000
	var skips, notReady int
	sc := scanner(n)
	for range scans {
		res, err := scanWithin(t, sc, direct)
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("Scan failed while GPUs came and went: %v", err)
		}
		checkAccounted(t, res, false)
		if d, ok := res.ByPCI(stablePCI); !ok || !d.Usable() {
			t.Errorf("the GPU that stays was not handed out: %+v", res)
		}
		skips += len(res.Skipped)
		for _, d := range res.Devices {
			if !d.Usable() {
				notReady++
			}
		}
		if t.Failed() {
			break
		}
	}
	close(stop)
	wg.Wait()
	if churnErr != nil {
		t.Fatal(churnErr)
	}
	t.Logf("%d scans met %d cards skipped half-removed and %d devices not ready", scans, skips, notReady)
}
