// Package uevent parses the device events (uevents) the Linux kernel
// broadcasts on NETLINK_KOBJECT_UEVENT, and reads them from that socket.
// No udev daemon is involved: the kernel sends every event to group 1 of
// that netlink family, and any process of a network namespace that receives
// them may listen there without privilege.
//
// Which namespaces receive them (TestWhichNetworkNamespacesReceiveKernelUevents
// checks it on the running kernel): every network namespace owned by the
// initial user namespace — the host's, and a pod's without hostNetwork —
// and none owned by another user namespace (a pod with hostUsers: false, a
// rootless container). Events of network devices go to their own namespace
// only.
//
// A kernel message is an environment block: a header "ACTION@DEVPATH", a
// NUL, then KEY=VALUE strings each ended by a NUL:
//
//	change@/devices/pci0000:00/0000:00:02.0/drm/card0\0ACTION=change\0
//	DEVPATH=/devices/pci0000:00/0000:00:02.0/drm/card0\0SUBSYSTEM=drm\0
//	WEDGED=rebind,bus-reset\0MAJOR=226\0MINOR=0\0DEVNAME=dri/card0\0
//	DEVTYPE=drm_minor\0SEQNUM=5012\0
//
// udev's re-broadcasts on group 2 start with "libudev\0" and a binary
// header instead; they are not kernel messages and Parse refuses them.
package uevent

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxMessage bounds a message. The kernel builds each in a 2048-byte
// environment buffer (UEVENT_BUFFER_SIZE) plus the header, so anything
// longer did not come from it.
const MaxMessage = 8192

// MaxVars bounds the variables of a message: the kernel's environment
// holds at most UEVENT_NUM_ENVP (64) of them.
const MaxVars = 64

// ErrMalformed marks a message that is not a kernel uevent: no header, a
// header without '@', a variable without '=', a DEVPATH that is not a clean
// absolute path, and so on. The error names what was wrong.
var ErrMalformed = errors.New("malformed uevent")

// ErrNotKernel marks a message udev re-broadcast ("libudev" header).
var ErrNotKernel = errors.New("not a kernel uevent")

// Event is one parsed uevent. Its strings share one copy of the message.
type Event struct {
	// Action is what happened: add, remove, change, move, online, offline,
	// bind or unbind.
	Action string
	// DevPath is the device's path below the sysfs mount, starting with a
	// slash: "/devices/pci0000:00/0000:00:02.0/drm/card0".
	DevPath string
	// Subsystem is SUBSYSTEM ("drm", "pci", "devcoredump"); empty when the
	// kernel sent none.
	Subsystem string
	// Seqnum is SEQNUM, the kernel's event counter; 0 when absent.
	Seqnum uint64
	// vars are the KEY=VALUE strings in the order the kernel sent them.
	vars []string
}

// Get returns the value of a variable and whether the event has it.
func (e *Event) Get(key string) (string, bool) {
	for _, kv := range e.vars {
		if len(kv) > len(key) && kv[len(key)] == '=' && kv[:len(key)] == key {
			return kv[len(key)+1:], true
		}
	}
	return "", false
}

// Vars returns the KEY=VALUE strings in the order the kernel sent them.
func (e *Event) Vars() []string { return e.vars }

// String is the header, as the kernel wrote it.
func (e *Event) String() string { return e.Action + "@" + e.DevPath }

// Parse parses one kernel message. It never panics; whatever it refuses
// wraps ErrMalformed or ErrNotKernel.
func Parse(msg []byte) (Event, error) {
	if len(msg) == 0 {
		return Event{}, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if len(msg) > MaxMessage {
		return Event{}, fmt.Errorf("%w: %d bytes, more than the kernel's %d", ErrMalformed, len(msg), MaxMessage)
	}
	s := string(msg)
	header, rest, _ := strings.Cut(s, "\x00")
	if header == "libudev" {
		return Event{}, ErrNotKernel
	}
	action, devpath, ok := strings.Cut(header, "@")
	if !ok {
		return Event{}, fmt.Errorf("%w: header %s has no '@'", ErrMalformed, quote(header))
	}
	if !isAction(action) {
		return Event{}, fmt.Errorf("%w: action %s is not a lower-case word", ErrMalformed, quote(action))
	}
	if err := checkDevPath(devpath); err != nil {
		return Event{}, err
	}
	ev := Event{Action: action, DevPath: devpath, vars: make([]string, 0, min(strings.Count(rest, "\x00")+1, MaxVars))}
	for rest != "" {
		var kv string
		kv, rest, _ = strings.Cut(rest, "\x00")
		if kv == "" {
			// Padding after the last variable; the kernel never sends an
			// empty one in between, and skipping it loses nothing.
			continue
		}
		if len(ev.vars) == MaxVars {
			return Event{}, fmt.Errorf("%w: more than %d variables in %s", ErrMalformed, MaxVars, quote(header))
		}
		key, value, ok := strings.Cut(kv, "=")
		if !ok || !isKey(key) {
			return Event{}, fmt.Errorf("%w: %s in %s is not KEY=VALUE", ErrMalformed, quote(kv), quote(header))
		}
		if _, dup := ev.Get(key); dup {
			return Event{}, fmt.Errorf("%w: %s set twice in %s", ErrMalformed, key, quote(header))
		}
		switch key {
		case "ACTION":
			if value != action {
				return Event{}, fmt.Errorf("%w: ACTION=%s disagrees with header %s", ErrMalformed, quote(value), quote(header))
			}
		case "DEVPATH":
			if value != devpath {
				return Event{}, fmt.Errorf("%w: DEVPATH=%s disagrees with header %s", ErrMalformed, quote(value), quote(header))
			}
		case "SUBSYSTEM":
			ev.Subsystem = value
		case "SEQNUM":
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				return Event{}, fmt.Errorf("%w: SEQNUM=%s is not a number", ErrMalformed, quote(value))
			}
			ev.Seqnum = n
		}
		ev.vars = append(ev.vars, kv)
	}
	return ev, nil
}

// isAction accepts the kernel's action names and any future lower-case
// word, so a new action is passed on rather than refused.
func isAction(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// isKey accepts what the kernel and synthetic uevents (SYNTH_ARG_*) use.
func isKey(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// checkDevPath refuses a DEVPATH that could climb out of the sysfs root it
// is later joined to: the kernel only sends clean absolute paths.
func checkDevPath(p string) error {
	if len(p) < 2 || p[0] != '/' {
		return fmt.Errorf("%w: DEVPATH %s is not an absolute path", ErrMalformed, quote(p))
	}
	for _, part := range strings.Split(p[1:], "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%w: DEVPATH %s is not a clean path", ErrMalformed, quote(p))
		}
	}
	return nil
}

const maxQuote = 64

// quote bounds what an error repeats of a hostile message.
func quote(s string) string {
	if len(s) > maxQuote {
		s = s[:maxQuote] + "…"
	}
	return strconv.Quote(s)
}
