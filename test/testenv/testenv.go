// Package testenv decides what a test does when the machine lacks something
// it needs (root, mknod, podman): on a developer's machine the test is
// skipped with the reason; in CI, where the environment is set up on
// purpose, a missing prerequisite is a failure, not a silent skip.
package testenv

import (
	"flag"
	"os"
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
