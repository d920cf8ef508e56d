package app_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

func TestPluginRefusesToStartWhereADRADriverServesTheGPUs(t *testing.T) {
	n := node(t, fakenode.IGPU)
	// The kubelet's root, short enough for socket paths.
	kubelet, err := os.MkdirTemp("", "kl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(kubelet) })
	registry := filepath.Join(kubelet, "plugins_registry")
	if err := os.MkdirAll(registry, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(registry, "gpu.intel.com-reg.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	specDir := filepath.Join(t.TempDir(), "cdi")

	r := run(t, args([]string{"plugin"}, roots(n), []string{
		"--kubelet-socket-dir", filepath.Join(kubelet, "device-plugins"), "--cdi-spec-dir", specDir,
		"--kubelet-registrar-dir", registry,
	})...)
	if r.err == nil || !strings.Contains(r.err.Error(), sock) || !strings.Contains(r.err.Error(), "DRA driver") {
		t.Fatalf("err = %v, want a refusal naming %s", r.err, sock)
	}
	if _, err := os.Stat(specDir); !os.IsNotExist(err) {
		t.Errorf("the spec directory was touched before the refusal: %v", err)
	}
}

// A kubelet with another --root-dir keeps plugins_registry there, while
// its device-plugin directory stays where it always is: the flag says
// where to look.
func TestPluginLooksForTheDRADriverWhereTheRegistrarDirFlagSays(t *testing.T) {
	n := node(t, fakenode.IGPU)
	registry, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(registry) })
	sock := filepath.Join(registry, "gpu.intel.com-reg.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	kubelet, err := os.MkdirTemp("", "kl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(kubelet) })
	r := run(t, args([]string{"plugin"}, roots(n), []string{
		"--kubelet-socket-dir", filepath.Join(kubelet, "device-plugins"), "--cdi-spec-dir", filepath.Join(t.TempDir(), "cdi"),
		"--kubelet-registrar-dir", registry,
	})...)
	if r.err == nil || !strings.Contains(r.err.Error(), sock) {
		t.Fatalf("err = %v, want a refusal naming %s", r.err, sock)
	}
}
