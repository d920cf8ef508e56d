package uevent_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

// msg builds an environment block as the kernel lays it out: the header,
// then each variable, every one ended by a NUL.
func msg(header string, vars ...string) []byte {
	var b strings.Builder
	b.WriteString(header)
	b.WriteByte(0)
	for _, v := range vars {
		b.WriteString(v)
		b.WriteByte(0)
	}
	return []byte(b.String())
}

// The kernel's own messages, built from what its code and documentation
// say each sender puts in the environment (kobject_uevent_env adds ACTION,
// DEVPATH and SUBSYSTEM, then the caller's variables, then the bus or class
// ones, then SEQNUM).
const (
	xeCard   = "/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/0000:03:00.0/drm/card1"
	i915Card = "/devices/pci0000:00/0000:00:02.0/drm/card0"
	devcd    = "/devices/virtual/devcoredump/devcd3"
	i915Fn   = "/devices/pci0000:00/0000:00:02.0"
)

var (
	// drm_dev_wedged_event(): Documentation/gpu/drm-uapi.rst "Device Wedging".
	wedgedXe = msg("change@"+xeCard, "ACTION=change", "DEVPATH="+xeCard, "SUBSYSTEM=drm",
		"WEDGED=rebind,bus-reset", "MAJOR=226", "MINOR=1", "DEVNAME=dri/card1", "DEVTYPE=drm_minor", "SEQNUM=4212")
	// Since Linux 6.17 the event names the guilty task when the driver knows it.
	wedgedWithTask = msg("change@"+i915Card, "ACTION=change", "DEVPATH="+i915Card, "SUBSYSTEM=drm",
		"WEDGED=rebind", "PID=4711", "TASK=vkcube", "MAJOR=226", "MINOR=0", "DEVNAME=dri/card0", "DEVTYPE=drm_minor", "SEQNUM=88")
	// xe runtime survivability: Documentation/gpu/xe/xe_device.rst.
	wedgedVendor = msg("change@"+xeCard, "ACTION=change", "DEVPATH="+xeCard, "SUBSYSTEM=drm",
		"WEDGED=vendor-specific", "MAJOR=226", "MINOR=1", "DEVNAME=dri/card1", "DEVTYPE=drm_minor", "SEQNUM=4300")
	// dev_coredumpm(): a class device without a parent, announced once its
	// failing_device link exists.
	coredumpAdd = msg("add@"+devcd, "ACTION=add", "DEVPATH="+devcd, "SUBSYSTEM=devcoredump", "SEQNUM=4213")
	// i915's GPU hang: I915_ERROR_UEVENT "ERROR=1" on the card.
	i915Error = msg("change@"+i915Card, "ACTION=change", "DEVPATH="+i915Card, "SUBSYSTEM=drm",
		"ERROR=1", "MAJOR=226", "MINOR=0", "DEVNAME=dri/card0", "DEVTYPE=drm_minor", "SEQNUM=90")
	// The driver core when i915 binds a PCI function.
	pciBind = msg("bind@"+i915Fn, "ACTION=bind", "DEVPATH="+i915Fn, "SUBSYSTEM=pci", "DRIVER=i915",
		"PCI_CLASS=30000", "PCI_ID=8086:46A6", "PCI_SUBSYS_ID=17AA:22E4", "PCI_SLOT_NAME=0000:00:02.0",
		"MODALIAS=pci:v00008086d000046A6sv000017AAsd000022E4bc03sc00i00", "SEQNUM=91")
)

func TestParseReadsTheKernelsMessages(t *testing.T) {
	cases := []struct {
		name      string
		msg       []byte
		action    string
		devpath   string
		subsystem string
		seqnum    uint64
		want      map[string]string
	}{
		{"a wedged xe card names its recovery methods", wedgedXe, "change", xeCard, "drm", 4212,
			map[string]string{"WEDGED": "rebind,bus-reset", "DEVNAME": "dri/card1", "DEVTYPE": "drm_minor"}},
		{"a wedged i915 card may name the guilty task", wedgedWithTask, "change", i915Card, "drm", 88,
			map[string]string{"WEDGED": "rebind", "PID": "4711", "TASK": "vkcube"}},
		{"a firmware failure asks for vendor-specific recovery", wedgedVendor, "change", xeCard, "drm", 4300,
			map[string]string{"WEDGED": "vendor-specific"}},
		{"a devcoredump arrives as an add on the devcoredump class", coredumpAdd, "add", devcd, "devcoredump", 4213, nil},
		{"an i915 hang is ERROR=1 on the card", i915Error, "change", i915Card, "drm", 90, map[string]string{"ERROR": "1"}},
		{"a driver bind names the driver", pciBind, "bind", i915Fn, "pci", 91,
			map[string]string{"DRIVER": "i915", "PCI_SLOT_NAME": "0000:00:02.0"}},
		{
			// What uevent_net_broadcast makes of an injected message: SEQNUM
			// appended after the last NUL, with no NUL of its own.
			"a message without a final NUL keeps its last variable",
			[]byte("add@/devices/virtual/igc/marker\x00ACTION=add\x00SUBSYSTEM=igc\x00SEQNUM=7"), "add", "/devices/virtual/igc/marker", "igc", 7, nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := uevent.Parse(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Action != tc.action || ev.DevPath != tc.devpath || ev.Subsystem != tc.subsystem || ev.Seqnum != tc.seqnum {
				t.Errorf("got %s subsystem %q seqnum %d, want %s@%s subsystem %q seqnum %d",
					ev.String(), ev.Subsystem, ev.Seqnum, tc.action, tc.devpath, tc.subsystem, tc.seqnum)
			}
			for k, v := range tc.want {
				if got, ok := ev.Get(k); !ok || got != v {
					t.Errorf("Get(%s) = %q, %v; want %q", k, got, ok, v)
				}
			}
			if _, ok := ev.Get("MISSING"); ok {
				t.Error("Get reports a variable the message does not have")
			}
			// A key that is a prefix of another must not match it.
			if _, ok := ev.Get("DEV"); ok {
				t.Error("Get(DEV) matched DEVPATH or DEVNAME")
			}
			if got := strings.Join(ev.Vars(), "\x00"); !strings.Contains(string(tc.msg), got) {
				t.Errorf("Vars() = %q is not the message's variables in order", ev.Vars())
			}
		})
	}
}

func TestParseRefusesWhatTheKernelNeverSends(t *testing.T) {
	long := msg("change@/devices/x", "ACTION=change", "BIG="+strings.Repeat("x", uevent.MaxMessage))
	many := []string{"ACTION=add"}
	for i := range uevent.MaxVars {
		many = append(many, "V"+strings.Repeat("A", i%10)+string(rune('A'+i%26))+string(rune('A'+i/26))+"=1")
	}
	cases := []struct {
		name string
		msg  []byte
		want error
		says string
	}{
		{"an empty message", nil, uevent.ErrMalformed, "empty"},
		{"a header without @", msg("change/devices/x"), uevent.ErrMalformed, "no '@'"},
		{"an empty action", msg("@/devices/x"), uevent.ErrMalformed, "action"},
		{"an upper-case action", msg("ADD@/devices/x"), uevent.ErrMalformed, "action"},
		{"a relative DEVPATH", msg("add@devices/x"), uevent.ErrMalformed, "absolute"},
		{"a DEVPATH that climbs out", msg("add@/devices/virtual/devcoredump/../../../etc"), uevent.ErrMalformed, "clean"},
		{"a DEVPATH with an empty component", msg("add@/devices//x"), uevent.ErrMalformed, "clean"},
		{"the root alone", msg("add@/"), uevent.ErrMalformed, "absolute"},
		{"a variable without =", msg("add@/devices/x", "ACTION=add", "SUBSYS"), uevent.ErrMalformed, "KEY=VALUE"},
		{"a variable without a key", msg("add@/devices/x", "=value"), uevent.ErrMalformed, "KEY=VALUE"},
		{"a key with a dash", msg("add@/devices/x", "BAD-KEY=1"), uevent.ErrMalformed, "KEY=VALUE"},
		{"ACTION disagreeing with the header", msg("add@/devices/x", "ACTION=remove"), uevent.ErrMalformed, "ACTION"},
		{"DEVPATH disagreeing with the header", msg("add@/devices/x", "DEVPATH=/devices/y"), uevent.ErrMalformed, "DEVPATH"},
		{"a SEQNUM that is no number", msg("add@/devices/x", "SEQNUM=12a"), uevent.ErrMalformed, "SEQNUM"},
		{"a variable set twice", msg("add@/devices/x", "WEDGED=none", "WEDGED=rebind"), uevent.ErrMalformed, "twice"},
		{"more variables than the kernel holds", msg("add@/devices/x", many...), uevent.ErrMalformed, "variables"},
		{"a message longer than the kernel's buffer", long, uevent.ErrMalformed, "bytes"},
		{"udev's re-broadcast", append([]byte("libudev\x00\xfe\xed\xca\xfe"), make([]byte, 32)...), uevent.ErrNotKernel, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := uevent.Parse(tc.msg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, %v; want %v", ev.String(), err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

func TestParseKeepsEveryPrefixOfAMessageSafe(t *testing.T) {
	// A message cut anywhere (a short read, a hostile sender) parses or is
	// refused; it never panics and never yields an event with a bad path.
	for _, m := range [][]byte{wedgedXe, wedgedWithTask, coredumpAdd, pciBind} {
		for i := range len(m) + 1 {
			ev, err := uevent.Parse(m[:i])
			if err == nil && (ev.Action == "" || !strings.HasPrefix(ev.DevPath, "/")) {
				t.Fatalf("Parse(%q) = %+v", m[:i], ev)
			}
		}
	}
}

// FuzzParse: whatever Parse accepts is a clean event that reads back the
// same when written out again.
func FuzzParse(f *testing.F) {
	for _, seed := range [][]byte{wedgedXe, wedgedWithTask, wedgedVendor, coredumpAdd, i915Error, pciBind,
		[]byte("add@/x\x00SEQNUM=1"), []byte("libudev\x00"), nil, []byte("a@/b\x00\x00\x00C=")} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := uevent.Parse(b)
		if err != nil {
			if !errors.Is(err, uevent.ErrMalformed) && !errors.Is(err, uevent.ErrNotKernel) {
				t.Fatalf("Parse error %v wraps neither sentinel", err)
			}
			return
		}
		if ev.Action == "" || len(ev.DevPath) < 2 || ev.DevPath[0] != '/' || strings.Contains(ev.DevPath, "/../") ||
			strings.HasSuffix(ev.DevPath, "/..") || strings.Contains(ev.DevPath, "//") || strings.ContainsRune(ev.DevPath, 0) {
			t.Fatalf("Parse(%q) accepted header %q", b, ev.String())
		}
		if len(ev.Vars()) > uevent.MaxVars {
			t.Fatalf("Parse(%q) kept %d variables", b, len(ev.Vars()))
		}
		again, err := uevent.Parse(msg(ev.String(), ev.Vars()...))
		if err != nil {
			t.Fatalf("written out again, %q is refused: %v", b, err)
		}
		if again.String() != ev.String() || again.Subsystem != ev.Subsystem || again.Seqnum != ev.Seqnum || !slices.Equal(again.Vars(), ev.Vars()) {
			t.Fatalf("round trip of %q changed %+v into %+v", b, ev, again)
		}
	})
}
