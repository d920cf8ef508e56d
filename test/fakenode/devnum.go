package fakenode

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// drmMajor is the char major the kernel gives every DRM minor (card, render, control).
const drmMajor = 226

// devNum is a device number split the way sysfs `dev` files print it.
type devNum struct {
	Major, Minor uint32
}

func (d devNum) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// mkdev packs major and minor the way Linux's new_encode_dev does, so rdev values round-trip with
// what stat(2) reports (12 bits of major and 20 of minor, interleaved).
func mkdev(d devNum) uint64 {
	return uint64(d.Minor&0xff) |
		uint64(d.Major&0xfff)<<8 |
		uint64(d.Minor&^0xff)<<12 |
		uint64(d.Major&^0xfff)<<32
}

// splitDev is the inverse of mkdev.
func splitDev(rdev uint64) devNum {
	return devNum{
		Major: uint32((rdev>>8)&0xfff) | uint32((rdev>>32)&^0xfff),
		Minor: uint32(rdev&0xff) | uint32((rdev>>12)&^0xff),
	}
}

// charDevNum returns the device number of the char device at path, following symlinks.
func charDevNum(path string) (devNum, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return devNum{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return devNum{}, fmt.Errorf("%s is not a char device (mode %s)", path, fi.Mode())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return devNum{}, fmt.Errorf("stat %s: no raw stat data on this platform", path)
	}
	return splitDev(uint64(st.Rdev)), nil //nolint:unconvert // Rdev's type differs across platforms.
}

// mknodChar creates a char node with mode 0660 regardless of the process umask.
func mknodChar(path string, d devNum) error {
	if err := syscall.Mknod(path, syscall.S_IFCHR|0o660, int(mkdev(d))); err != nil {
		return fmt.Errorf("mknod %s %s: %w", path, d, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

// canMknodIn probes by doing it: capabilities, user namespaces, seccomp profiles and filesystems can
// all refuse mknod, and only the attempt tells them apart.
func canMknodIn(dir string) bool {
	probeDir, err := os.MkdirTemp(dir, "fakenode-mknod-probe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(probeDir)
	return mknodChar(filepath.Join(probeDir, "card0"), devNum{Major: drmMajor, Minor: 0}) == nil
}

var canMknodOnce = sync.OnceValue(func() bool { return canMknodIn(os.TempDir()) })

// CanMknod reports whether this process can create char device nodes: it creates a 226:0 node in a
// fresh directory under os.TempDir and removes it again. The answer is computed once per process.
func CanMknod() bool { return canMknodOnce() }

// hostDevicePaths are char devices every Linux host has and anyone may stat; in HostDevices mode the
// fake /dev/dri nodes point at them in turn.
var hostDevicePaths = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// hostDevice is one usable host char device with its real number.
type hostDevice struct {
	Path string
	Num  devNum
}

// probeHostDevices keeps the hostDevicePaths that really are char devices here.
func probeHostDevices() ([]hostDevice, error) {
	var found []hostDevice
	for _, p := range hostDevicePaths {
		num, err := charDevNum(p)
		if err != nil {
			continue
		}
		found = append(found, hostDevice{Path: p, Num: num})
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("none of %v is a char device on this host", hostDevicePaths)
	}
	return found, nil
}
