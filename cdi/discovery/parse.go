package discovery

import (
	"fmt"
	"strconv"
	"strings"
)

// The parsers below read the content of one sysfs attribute. Sysfs values
// end in a newline and are short; anything else is malformed and rejected
// with an error that quotes (a bounded part of) what was found.

const maxQuote = 32

func quote(s string) string {
	if len(s) > maxQuote {
		s = s[:maxQuote] + "…"
	}
	return strconv.Quote(s)
}

// ParseDevNumbers parses a `dev` attribute: "MAJOR:MINOR\n".
func ParseDevNumbers(s string) (major, minor uint32, err error) {
	v := strings.TrimSpace(s)
	maj, min, ok := strings.Cut(v, ":")
	if !ok {
		return 0, 0, fmt.Errorf("want MAJOR:MINOR, got %s", quote(s))
	}
	ma, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("bad major in %s", quote(s))
	}
	mi, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("bad minor in %s", quote(s))
	}
	// Linux dev_t holds a 12-bit major and a 20-bit minor.
	if ma >= 1<<12 || mi >= 1<<20 {
		return 0, 0, fmt.Errorf("device number out of range in %s", quote(s))
	}
	return uint32(ma), uint32(mi), nil
}

// ParseHexID parses a PCI ID attribute ("0x8086\n") of the given number of
// hex digits and returns it lower-cased with its 0x prefix.
func ParseHexID(s string, digits int) (string, error) {
	v := strings.TrimSpace(s)
	if len(v) != 2+digits || (v[:2] != "0x" && v[:2] != "0X") {
		return "", fmt.Errorf("want 0x and %d hex digits, got %s", digits, quote(s))
	}
	for _, c := range v[2:] {
		if !isHex(c) {
			return "", fmt.Errorf("want 0x and %d hex digits, got %s", digits, quote(s))
		}
	}
	return "0x" + strings.ToLower(v[2:]), nil
}

// NormalizeDeviceID accepts a PCI device ID as a user types it ("0x56A0",
// "56a0") and returns the form sysfs uses ("0x56a0").
func NormalizeDeviceID(s string) (string, error) {
	v := strings.TrimSpace(s)
	if !strings.HasPrefix(v, "0x") && !strings.HasPrefix(v, "0X") {
		v = "0x" + v
	}
	id, err := ParseHexID(v, 4)
	if err != nil {
		return "", fmt.Errorf("PCI device ID %s: %w", quote(s), err)
	}
	return id, nil
}

func isHex(c rune) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// ParseNUMANode parses numa_node: a node number, or -1 when unknown.
func ParseNUMANode(s string) (int, error) {
	v := strings.TrimSpace(s)
	n, err := strconv.Atoi(v)
	if err != nil || n < -1 || n > 1<<16 {
		return 0, fmt.Errorf("want a NUMA node number or -1, got %s", quote(s))
	}
	return n, nil
}

// ParseCount parses a non-negative count such as sriov_numvfs.
func ParseCount(s string) (int, error) {
	v := strings.TrimSpace(s)
	n, err := strconv.Atoi(v)
	// PCI SR-IOV caps the number of VFs at 65535.
	if err != nil || n < 0 || n > 0xffff {
		return 0, fmt.Errorf("want a count between 0 and 65535, got %s", quote(s))
	}
	return n, nil
}

// parseIndexedName parses names such as card3 or renderD130: the prefix
// followed by decimal digits and nothing else, so "card0-DP-1" is rejected.
func parseIndexedName(name, prefix string) (int, bool) {
	digits, ok := strings.CutPrefix(name, prefix)
	if !ok || digits == "" || len(digits) > 6 {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	if len(digits) > 1 && digits[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

// ParseCardName returns N for "cardN" and false for anything else.
func ParseCardName(name string) (int, bool) { return parseIndexedName(name, "card") }

// ParseRenderName returns M for "renderDM" and false for anything else.
func ParseRenderName(name string) (int, bool) { return parseIndexedName(name, "renderD") }

// IsPCIAddress reports whether s is a full PCI address: domain:bus:device.function,
// "0000:03:00.0", in lower-case hex as sysfs names functions.
func IsPCIAddress(s string) bool {
	if len(s) != len("0000:00:00.0") || s[4] != ':' || s[7] != ':' || s[10] != '.' {
		return false
	}
	for i, c := range s {
		switch i {
		case 4, 7, 10:
			continue
		}
		if !(('0' <= c && c <= '9') || ('a' <= c && c <= 'f')) {
			return false
		}
	}
	// Device numbers go to 0x1f and functions to 7.
	dev, _ := strconv.ParseUint(s[8:10], 16, 8)
	return dev <= 0x1f && s[11] <= '7'
}
