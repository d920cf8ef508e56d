package reliability_test

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

const restarts = 100

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func goroutineDump() string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}

// TestHundredKubeletRestartsInARow restarts the kubelet 100 times: each
// time it wipes the sockets in its directory and creates kubelet.sock
// again, and the plugin must register every resource again (exactly once),
// serve ListAndWatch and Allocate on the new socket, and keep running.
// Afterwards the process's goroutines and open files are back to what they
// were after the first restart: nothing leaks per restart.
func TestHundredKubeletRestartsInARow(t *testing.T) {
	r := newRig(t, rigConfig{fixtures: []func(*fakenode.Node) error{fakenode.Demo}})
	resources := []string{deviceplugin.ResourceI915, deviceplugin.ResourceXe}

	// cycle acts as the kubelet after its n-th start: it waits for each
	// resource to register, opens ListAndWatch (held until the next
	// restart, as the kubelet holds it) and allocates the first device.
	var endStreams context.CancelFunc = func() {}
	cycle := func(n int) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		endStreams = cancel
		for _, res := range resources {
			req, err := r.kubelet.WaitRegistration(ctxFor(t, waitFor), res, n)
			if err != nil {
				t.Fatalf("restart %d: %v\nplugin log:\n%s", n-1, err, r.log)
			}
			c, err := r.kubelet.Dial(req.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := c.Watch(ctx)
			if err != nil {
				t.Fatalf("restart %d: %s: %v", n-1, res, err)
			}
			var list []string
			select {
			case l := <-ch:
				list = ids(l)
			case <-time.After(waitFor):
				t.Fatalf("restart %d: %s: no device list", n-1, res)
			}
			if len(list) == 0 {
				t.Fatalf("restart %d: %s: an empty device list", n-1, res)
			}
			resp, err := allocate(ctxFor(t, waitFor), c, []string{list[0][:len("0000:00:00.0")]})
			if err != nil || len(resp.ContainerResponses) != 1 || len(resp.ContainerResponses[0].CdiDevices) != 1 {
				t.Fatalf("restart %d: %s: Allocate = %v, %v", n-1, res, resp, err)
			}
			c.Close()
		}
		r.alive()
	}
	restart := func() {
		t.Helper()
		endStreams()
		if err := r.kubelet.Restart(); err != nil {
			t.Fatal(err)
		}
	}

	cycle(1)
	// One restart before the baseline, so that what is made once (gRPC
	// and watcher internals) is counted in it.
	restart()
	cycle(2)
	endStreams()
	time.Sleep(200 * time.Millisecond)
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)
	baseDump := goroutineDump()
	cycle(2)

	start := time.Now()
	for i := 1; i <= restarts; i++ {
		restart()
		cycle(2 + i)
	}
	elapsed := time.Since(start)
	endStreams()

	for _, res := range resources {
		n := 0
		for _, reg := range r.kubelet.Registrations() {
			if reg.ResourceName == res {
				n++
			}
		}
		if n != 2+restarts {
			t.Errorf("%s registered %d times in %d kubelet starts", res, n, 2+restarts)
		}
	}
	if got := r.obs.restarts.Load(); got != 1+restarts {
		t.Errorf("the plugin saw %d kubelet restarts, want %d", got, 1+restarts)
	}

	var g, fds int
	deadline := time.Now().Add(waitFor)
	for {
		runtime.GC()
		g, fds = runtime.NumGoroutine(), openFDs(t)
		if g <= baseG && fds <= baseFD || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d restarts in %s (%s each); goroutines %d -> %d, open files %d -> %d",
		restarts, elapsed.Round(time.Millisecond), (elapsed / restarts).Round(time.Microsecond), baseG, g, baseFD, fds)
	if g > baseG {
		t.Errorf("goroutines did not return to their baseline: %d, baseline %d\nbaseline:\n%s\nnow:\n%s", g, baseG, baseDump, goroutineDump())
	}
	if fds > baseFD {
		t.Errorf("open files did not return to their baseline: %d, baseline %d", fds, baseFD)
	}
	r.alive()
}
