// Package deploy_test checks what ships in deployments/: it renders every
// kustomization and the Helm chart, decodes each object strictly into the
// Kubernetes API types, and holds them to the security and wiring rules the
// node agent depends on. The systemd/udev units and the images are checked
// with the real tools where the machine has them.
//
// This is a module of its own so that the product's go.mod never carries
// kustomize or Helm.
package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// repoRoot is the product repository, two levels up from this package.
var repoRoot = func() string {
	p, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return p
}()

// deployments returns a path under deployments/.
func deployments(elem ...string) string {
	return filepath.Join(append([]string{repoRoot, "deployments"}, elem...)...)
}

// inCI reports whether a missing tool must fail the run instead of skipping:
// CI has to exercise every check.
func inCI() bool { return os.Getenv("CI") != "" }

// skipOrFail skips the test with the reason, or fails it in CI.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf("CI is set, so this check may not be skipped: "+format, args...)
	}
	t.Skipf(format, args...)
}

// lookTool finds a tool on PATH or skips (fails in CI) naming what installs it.
func lookTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not found (%s)", name, install)
	}
	return p
}
