package fakenode

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

const xePCI = "0000:03:00.0"

func inodeOf(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestHealthFilesLookLikeTheKernels(t *testing.T) {
	n := NewT(t, WithMode(HostDevices))
	n.MustApply(t, DiscreteXe)
	xeDir := filepath.Join(n.Sys, "devices", bridgesA, xePCI)

	t.Run("SetAER writes three lists each ending in its total", func(t *testing.T) {
		if err := n.SetAER(xePCI, AER{Correctable: 7, Nonfatal: 2, Fatal: 1}); err != nil {
			t.Fatal(err)
		}
		for file, want := range map[string]string{
			"aer_dev_correctable": "RxErr 7\n",
			"aer_dev_nonfatal":    "CmpltTO 2\n",
			"aer_dev_fatal":       "SDES 1\n",
		} {
			got := read(t, filepath.Join(xeDir, file))
			if !strings.Contains(got, want) {
				t.Errorf("%s lacks %q:\n%s", file, want, got)
			}
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "TOTAL_ERR_") || !strings.HasSuffix(last, " "+strings.Fields(want)[1]) {
				t.Errorf("%s ends with %q, want its TOTAL_ERR_ line with the count", file, last)
			}
		}
	})

	t.Run("SetSurvivabilityMode adds an admin-only attribute and removes it", func(t *testing.T) {
		p := filepath.Join(xeDir, "survivability_mode")
		if err := n.SetSurvivabilityMode(xePCI, true); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o400 {
			t.Errorf("mode %v, want 0400", fi.Mode().Perm())
		}
		if err := n.SetSurvivabilityMode(xePCI, false); err != nil {
			t.Fatal(err)
		}
		assertAbsent(t, p)
	})

	t.Run("WriteConfig and BreakConfig", func(t *testing.T) {
		if err := n.WriteConfig(xePCI); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(xeDir, "config"))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 64 || !bytes.Equal(b[:4], []byte{0x86, 0x80, 0x0b, 0xe2}) || b[11] != 0x03 {
			t.Errorf("config header % x, want vendor 8086, device e20b, class 03 little-endian", b)
		}
		if err := n.BreakConfig(xePCI); err != nil {
			t.Fatal(err)
		}
		if b := []byte(read(t, filepath.Join(xeDir, "config"))); len(bytes.Trim(b, "\xff")) != 0 || len(b) != 64 {
			t.Errorf("broken config % x, want 64 bytes of ff", b)
		}
	})

	t.Run("AddCoredump links the dump and the device both ways and keeps one per device", func(t *testing.T) {
		name, err := n.AddCoredump(xePCI)
		if err != nil {
			t.Fatal(err)
		}
		if name != "devcd1" {
			t.Errorf("first dump is %s, want devcd1", name)
		}
		dump := filepath.Join(n.Sys, "devices", "virtual", "devcoredump", name)
		assertRelLink(t, filepath.Join(dump, "failing_device"), xeDir)
		assertRelLink(t, filepath.Join(n.Sys, "class", "devcoredump", name), dump)
		assertRelLink(t, filepath.Join(xeDir, "devcoredump"), dump)
		if _, err := n.AddCoredump(xePCI); !errors.Is(err, ErrCoredumpPending) {
			t.Errorf("a second dump while one is pending: %v, want ErrCoredumpPending", err)
		}
		if err := n.RemoveCoredump(name); err != nil {
			t.Fatal(err)
		}
		assertAbsent(t, dump)
		assertAbsent(t, filepath.Join(xeDir, "devcoredump"))
		assertAbsent(t, filepath.Join(n.Sys, "class", "devcoredump", name))
		if name, err := n.AddCoredump(xePCI); err != nil || name != "devcd2" {
			t.Errorf("next dump = %s, %v; want devcd2 (numbers are never reused)", name, err)
		}
	})

	t.Run("AddHwmon registers below the function and in class/hwmon", func(t *testing.T) {
		dir, err := n.AddHwmon(xePCI, Hwmon{Name: "xe",
			Temps:    []Sensor{{Label: "pkg", Value: 45000}},
			Energies: []Sensor{{Label: "card", Value: 123456789}}})
		if err != nil {
			t.Fatal(err)
		}
		if dir != filepath.Join(xeDir, "hwmon", "hwmon0") {
			t.Errorf("hwmon at %s", dir)
		}
		for file, want := range map[string]string{"name": "xe\n", "temp1_input": "45000\n", "temp1_label": "pkg\n",
			"energy1_input": "123456789\n", "energy1_label": "card\n"} {
			if got := read(t, filepath.Join(dir, file)); got != want {
				t.Errorf("%s = %q, want %q", file, got, want)
			}
		}
		assertAbsent(t, filepath.Join(dir, "power1_input"))
		assertRelLink(t, filepath.Join(n.Sys, "class", "hwmon", "hwmon0"), dir)
	})

	t.Run("SetGTFrequency follows each driver's layout", func(t *testing.T) {
		if err := n.SetGTFrequency(xePCI, GTFreq{GT: 0, Cur: 1200, Max: 2400, Act: 1150}); err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(n.Sys, "class", "drm", "card1", "device", "tile0", "gt0", "freq0", "cur_freq")); got != "1200\n" {
			t.Errorf("xe cur_freq = %q", got)
		}
		if err := n.SetGTFrequency(wantIGPU.pci, GTFreq{GT: 0, Cur: 300, Max: 1300, Act: 0}); err != nil {
			t.Fatal(err)
		}
		card0 := filepath.Join(n.Sys, "class", "drm", "card0")
		for file, want := range map[string]string{"gt_cur_freq_mhz": "300\n", "gt_max_freq_mhz": "1300\n",
			"gt/gt0/rps_act_freq_mhz": "0\n"} {
			if got := read(t, filepath.Join(card0, file)); got != want {
				t.Errorf("i915 %s = %q, want %q", file, got, want)
			}
		}
	})

	t.Run("RebindGPU makes the card anew and drops survivability mode", func(t *testing.T) {
		card := filepath.Join(n.Sys, "class", "drm", "card1")
		before := inodeOf(t, card)
		devBefore := read(t, filepath.Join(card, "dev"))
		if err := n.SetSurvivabilityMode(xePCI, true); err != nil {
			t.Fatal(err)
		}
		if err := n.RebindGPU(xePCI); err != nil {
			t.Fatal(err)
		}
		if after := inodeOf(t, card); after == before {
			t.Errorf("card1's directory kept inode %d across a rebind", before)
		}
		assertRelLink(t, card, filepath.Join(xeDir, "drm", "card1"))
		assertRelLink(t, filepath.Join(card, "device"), xeDir)
		if got := read(t, filepath.Join(card, "dev")); got != devBefore {
			t.Errorf("dev changed from %q to %q", devBefore, got)
		}
		assertAbsent(t, filepath.Join(xeDir, "survivability_mode"))
		assertGPU(t, n, wantGPU{pci: xePCI, parent: bridgesA, vendor: "0x8086", device: "0xe20b",
			class: "0x030000", driver: "xe", numa: "0", card: 1, render: 129})
	})
}

func TestEventsAreWhatTheKernelSends(t *testing.T) {
	n := NewT(t, WithMode(HostDevices))
	n.MustApply(t, DiscreteXe)
	cardPath := "/devices/" + bridgesA + "/" + xePCI + "/drm/card1"
	fnPath := "/devices/" + bridgesA + "/" + xePCI

	if got, err := n.CardDevPath(xePCI); err != nil || got != cardPath {
		t.Errorf("CardDevPath = %q, %v; want %q", got, err, cardPath)
	}
	if got, err := n.FunctionDevPath(xePCI); err != nil || got != fnPath {
		t.Errorf("FunctionDevPath = %q, %v; want %q", got, err, fnPath)
	}
	// Every DEVPATH names a directory of the tree, as the kernel's do.
	for _, p := range []string{cardPath, fnPath} {
		if _, err := os.Stat(filepath.Join(n.Sys, p)); err != nil {
			t.Errorf("DEVPATH %s is not in the tree: %v", p, err)
		}
	}

	wedged, err := n.WedgedEvent(xePCI, "rebind,bus-reset", "PID=42", "TASK=vkcube")
	if err != nil {
		t.Fatal(err)
	}
	bind, err := n.FunctionEvent(xePCI, "bind")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		msg  []byte
		want string // header
		vars []string
	}{
		{"WedgedEvent", wedged, "change@" + cardPath,
			[]string{"ACTION=change", "DEVPATH=" + cardPath, "SUBSYSTEM=drm", "WEDGED=rebind,bus-reset", "PID=42", "TASK=vkcube",
				"MAJOR=", "MINOR=", "DEVNAME=dri/card1", "DEVTYPE=drm_minor", "SEQNUM=1"}},
		{"FunctionEvent bind", bind, "bind@" + fnPath,
			[]string{"ACTION=bind", "DEVPATH=" + fnPath, "SUBSYSTEM=pci", "DRIVER=xe", "PCI_SLOT_NAME=" + xePCI, "SEQNUM=2"}},
		{"CoredumpEvent", n.CoredumpEvent("devcd4", "add"), "add@/devices/virtual/devcoredump/devcd4",
			[]string{"ACTION=add", "DEVPATH=/devices/virtual/devcoredump/devcd4", "SUBSYSTEM=devcoredump", "SEQNUM=3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parts := strings.Split(strings.TrimSuffix(string(tc.msg), "\x00"), "\x00")
			if parts[0] != tc.want {
				t.Errorf("header %q, want %q", parts[0], tc.want)
			}
			if len(parts)-1 != len(tc.vars) {
				t.Fatalf("vars %q, want %d of them", parts[1:], len(tc.vars))
			}
			for i, v := range tc.vars {
				if !strings.HasPrefix(parts[i+1], v) {
					t.Errorf("var %d = %q, want %q", i, parts[i+1], v)
				}
			}
			if _, err := uevent.Parse(tc.msg); err != nil {
				t.Errorf("the uevent parser refuses it: %v", err)
			}
		})
	}
}
