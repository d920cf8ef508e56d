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
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
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

// skipOrFail skips the test with the reason, or fails it in CI: CI has to
// exercise every check. It is the product's testenv.Unavailable, so that
// every module agrees on what "running in CI" is (CI=false is not).
var skipOrFail = testenv.Unavailable

// lookTool finds a tool on PATH or skips (fails in CI) naming what installs it.
func lookTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not found (%s)", name, install)
	}
	return p
}
