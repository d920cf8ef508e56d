package app

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	resourceapi "k8s.io/api/resource/v1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestTheCommandServesUntilItsContextEnds runs the command as main does,
// with a fake API server: it writes the spec, registers, publishes the
// slices, turns ready, and stops cleanly.
func TestTheCommandServesUntilItsContextEnds(t *testing.T) {
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.DiscreteXe)
	root, err := os.MkdirTemp("", "dra")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	registry := filepath.Join(root, "plugins_registry")
	if err := os.MkdirAll(registry, 0o755); err != nil {
		t.Fatal(err)
	}
	probe := freeAddr(t)
	client := dratest.NewClient(dratest.Node())

	var c config
	var stderr bytes.Buffer
	a := &cli.App{Flags: c.flags(), ErrWriter: &stderr, Action: func(ctx *cli.Context) error {
		c.DRA.Client = client
		return c.run(ctx.Context, ctx.App.ErrWriter)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- a.RunContext(ctx, []string{Name, "--sysfs-root", n.Sys, "--dev-root", n.Dev, "--node-name", dratest.NodeName,
			"--kubelet-registrar-dir", registry, "--kubelet-plugins-dir", filepath.Join(root, "plugins"),
			"--kubelet-socket-dir", filepath.Join(root, "device-plugins"), "--cdi-spec-dir", filepath.Join(root, "cdi"),
			"--probe-address", probe, "--log-level", "warn"})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not stop")
		}
	}()

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	regSock := filepath.Join(registry, "gpu.intel.com-reg.sock")
	if err := drakubelet.WaitSocket(wctx, regSock); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	// Checked the moment the socket appears: later, a spec written after
	// it would be there too.
	if _, err := os.Stat(filepath.Join(root, "cdi", "intel.com-gpu.json")); err != nil {
		t.Errorf("registered without the spec on disk: %v", err)
	}
	k, err := drakubelet.Register(wctx, regSock)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	defer k.Close()
	if _, err := dratest.WaitDevices(wctx, client, "gpu.intel.com", "both GPUs", func(d []resourceapi.Device) bool { return len(d) == 2 }); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + probe + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz = %d once registered", resp.StatusCode)
	}
}
