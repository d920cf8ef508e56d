package conflict_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shortDir is a directory whose path leaves room for a socket name.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestCheck(t *testing.T) {
	t.Run("a socket that accepts connections is refused, naming it", func(t *testing.T) {
		dir := shortDir(t)
		sock := filepath.Join(dir, conflict.RegistrationSocket("gpu.intel.com"))
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		err = conflict.Check(dir, "the DRA driver gpu.intel.com", "other.sock", conflict.RegistrationSocket("gpu.intel.com"))
		if !errors.Is(err, conflict.ErrServed) || !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "the DRA driver gpu.intel.com") {
			t.Errorf("err = %v, want ErrServed naming %s", err, sock)
		}
	})
	t.Run("a socket file nobody listens on is not live", func(t *testing.T) {
		dir := shortDir(t)
		sock := filepath.Join(dir, "intel-gpu-cdi-i915.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		// A killed process leaves its socket file behind.
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("the stale socket file should remain: %v", err)
		}
		if err := conflict.Check(dir, "the device plugin", "intel-gpu-cdi-i915.sock"); err != nil {
			t.Errorf("a dead socket was taken as live: %v", err)
		}
	})
	t.Run("a missing directory or file is nothing to refuse", func(t *testing.T) {
		if err := conflict.Check(filepath.Join(shortDir(t), "absent"), "x", "a.sock"); err != nil {
			t.Error(err)
		}
		dir := shortDir(t)
		if err := os.WriteFile(filepath.Join(dir, "a.sock"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := conflict.Check(dir, "x", "a.sock"); err != nil {
			t.Errorf("a regular file was taken as a live socket: %v", err)
		}
	})
}
