package rig

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// KubeletSysctls are the kernel settings a kubelet rewrites at start
// (protectKernelDefaults=false); the rig puts them back.
var KubeletSysctls = []string{
	"vm.overcommit_memory",
	"vm.panic_on_oom",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
}

// HostPaths are host locations the kubelet, containerd or its shims create
// even when their own roots point elsewhere. Those absent before the run are
// removed after it.
var HostPaths = []string{
	"/var/lib/kubelet",
	"/var/lib/kubelet/device-plugins",
	"/var/lib/kubelet/plugins_registry",
	"/var/lib/kubelet/plugins",
	"/var/log/containers",
	"/var/log/pods",
	"/var/lib/cni",
	"/var/run/netns",
	"/run/containerd",
	"/run/containerd/s",
	"/opt/containerd",
	"/etc/kubernetes",
}

// cgroupNames are the top-level cgroups a cgroupfs-driver kubelet creates in
// every hierarchy.
var cgroupNames = []string{"kubepods"}

// HostState is what the machine looked like before the rig touched it.
type HostState struct {
	sysctls map[string]string
	absent  []string
	cgroups []string // kubepods dirs absent before the run
	ipt     iptablesState
	acls    []savedACL
}

// savedACL is getfacl's record of one path: owner, group, mode and ACL.
type savedACL struct{ path, text string }

// SnapshotHost records the sysctls, host paths and cgroups the rig may change.
func SnapshotHost() (*HostState, error) {
	s := &HostState{sysctls: map[string]string{}, ipt: snapshotIptables()}
	for _, name := range KubeletSysctls {
		v, err := os.ReadFile(sysctlPath(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading sysctl %s: %w", name, err)
		}
		s.sysctls[name] = strings.TrimSpace(string(v))
	}
	for _, p := range HostPaths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			s.absent = append(s.absent, p)
		}
	}
	for _, h := range cgroupHierarchies() {
		for _, n := range cgroupNames {
			p := filepath.Join(h, n)
			if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
				s.cgroups = append(s.cgroups, p)
			}
		}
	}
	return s, nil
}

// KeepACL records the owner, group, mode and ACL of each path that existed
// before the run, so that Restore puts them back and Changes reports a
// difference. Paths that did not exist before are removed by Restore anyway.
// It needs getfacl and setfacl (the acl package).
func (s *HostState) KeepACL(paths ...string) error {
	for _, p := range paths {
		if slices.Contains(s.absent, p) {
			continue
		}
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		text, err := getfacl(p)
		if err != nil {
			return err
		}
		s.acls = append(s.acls, savedACL{path: p, text: text})
	}
	return nil
}

func getfacl(path string) (string, error) {
	out, err := exec.Command("getfacl", "--absolute-names", path).Output()
	if err != nil {
		return "", fmt.Errorf("getfacl %s: %w", path, err)
	}
	return string(out), nil
}

// Restore puts the sysctls back, unmounts what is left mounted under the
// paths that did not exist before, removes those paths, the cgroups and the
// iptables chains the kubelet created. It goes on past errors and returns them all.
func (s *HostState) Restore() error {
	var errs []error
	for _, a := range s.acls {
		cmd := exec.Command("setfacl", "--restore=-")
		cmd.Stdin = strings.NewReader(a.text)
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("restoring the ACL of %s: %w: %s", a.path, err, out))
		}
	}
	for name, want := range s.sysctls {
		got, err := os.ReadFile(sysctlPath(name))
		if err == nil && strings.TrimSpace(string(got)) == want {
			continue
		}
		if err := os.WriteFile(sysctlPath(name), []byte(want), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring sysctl %s=%s: %w", name, want, err))
		}
	}
	for _, p := range s.absent {
		if err := UnmountUnder(p); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
		}
	}
	// Container processes that outlived their shim (a killed run) are still
	// in the kubelet's cgroups, which did not exist before: they are ours.
	for _, p := range s.cgroups {
		if err := KillPIDs(cgroupPIDs(p)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range s.cgroups {
		if err := removeCgroupTree(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.ipt.restore(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Changes lists what differs from the snapshot: a test that the rig left the
// machine as it found it.
func (s *HostState) Changes() []string {
	var out []string
	for name, want := range s.sysctls {
		got, _ := os.ReadFile(sysctlPath(name))
		if strings.TrimSpace(string(got)) != want {
			out = append(out, fmt.Sprintf("sysctl %s=%s, was %s", name, strings.TrimSpace(string(got)), want))
		}
	}
	for _, p := range append(slices.Clone(s.absent), s.cgroups...) {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, p+" exists, did not before")
		}
	}
	for _, a := range s.acls {
		if got, err := getfacl(a.path); err != nil || got != a.text {
			out = append(out, fmt.Sprintf("owner, mode or ACL of %s differ: %q, was %q (%v)", a.path, got, a.text, err))
		}
	}
	out = append(out, s.ipt.changes()...)
	sort.Strings(out)
	return out
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// cgroupHierarchies lists the mounted cgroup (v1 and v2) hierarchy roots.
func cgroupHierarchies() []string {
	var out []string
	for _, m := range mounts() {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out
}

// removeCgroupTree removes a cgroup directory and its children, deepest
// first: cgroupfs only allows rmdir of empty (process-free) groups.
func removeCgroupTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walking cgroup %s: %w", root, err)
	}
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// cgroupPIDs lists the processes in a cgroup tree.
func cgroupPIDs(root string) []int {
	var pids []int
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(raw)) {
			if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

type mount struct{ point, fstype string }

func mounts() []mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		out = append(out, mount{point: unescapeMount(fields[4]), fstype: fields[sep+1]})
	}
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// MountsUnder lists the mount points at or below dir.
func MountsUnder(dir string) []string {
	dir = filepath.Clean(dir)
	var points []string
	for _, m := range mounts() {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			points = append(points, m.point)
		}
	}
	return points
}

// UnmountUnder detaches every mount at or below dir, deepest first, and
// again while some are left: mounts stacked on one point go one a pass.
func UnmountUnder(dir string) error {
	var errs []error
	for pass := 0; pass < 5; pass++ {
		points := MountsUnder(dir)
		if len(points) == 0 {
			return nil
		}
		sort.Slice(points, func(i, j int) bool {
			if len(points[i]) != len(points[j]) {
				return len(points[i]) > len(points[j])
			}
			return points[i] < points[j]
		})
		errs = errs[:0]
		for _, p := range slices.Compact(points) {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}
