// Package testenv is what tests need of the machine. It decides what a test
// does when the machine lacks something it needs (root, mknod, podman): on
// a developer's machine the test is skipped with the reason; in CI, where
// the environment is set up on purpose, a missing prerequisite is a
// failure, not a silent skip. And it makes the directories fake kubelets
// serve from.
package testenv

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// InCI reports whether the CI environment variable is set to something
// other than "", "0" or "false".
func InCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "", "0", "false":
		return false
	}
	return true
}

// Unavailable skips the test with the reason, or fails it when InCI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI is set, so this prerequisite must be met: "+format, args...)
	}
	t.Skipf(format, args...)
}

// Update is the -update flag: golden tests rewrite their files instead of
// comparing. It lives here, and every test package of the module imports
// this package, so that `go test ./... -args -update` reaches the golden
// tests without the other test binaries failing on an unknown flag.
var Update = flag.Bool("update", false, "rewrite golden files from the fixtures instead of comparing")

// SocketDir returns a new directory for a fake kubelet's sockets, with a
// path short enough for unix sockets (108 bytes), removed when the test
// ends. It is made inside a directory of its own, as
// /var/lib/kubelet/device-plugins is: the plugin watches the socket
// directory's parent, and adding an inotify watch to a directory visits
// every entry of it the kernel has cached, under a lock that path lookups
// through it wait for. With the temporary directory as the parent (several
// hundred thousand cached entries on a build machine) that made a plugin
// start up to 30 ms slower (BENCHMARKS.md, "At the floor, part 4").
func SocketDir(t testing.TB) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	dir := filepath.Join(parent, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
