package reliability_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
)

const (
	allocators = 16
	churnSteps = 40
)

// The GPUs of the concurrency test. Demo gives the i915 GPUs 0000:00:02.0
// (always there) and 0000:03:00.0 (its nodes come and go), and the xe GPU
// 0000:07:00.0; hotplugPCI is plugged in and out.
const (
	steadyPCI  = "0000:00:02.0"
	flakyPCI   = "0000:03:00.0"
	xePCI      = "0000:07:00.0"
	hotplugPCI = "0000:0a:00.0"
	unknownPCI = "0000:99:00.0"
)

var hotplugGPU = fakenode.GPU{Card: 5, PCI: hotplugPCI, Device: "0x56a0"}

// tally counts the answers of one kind.
type tally struct{ ok, refused, transport atomic.Int64 }

// TestAllocateFromSixteenGoroutinesWhileGPUsComeAndGoAndTheKubeletRestarts
// runs Allocate from 16 goroutines, each with random requests (one or two
// containers, one to three IDs among shares of steady, flaky and
// hot-plugged GPUs, and now and then an unknown ID or another resource's
// ID), while GPU nodes vanish and return, a GPU is unplugged and plugged
// in again, and the kubelet restarts. Every answer must be a correct
// allocation (each container gets exactly the CDI names of its IDs' GPUs,
// once each) or a clear error: InvalidArgument or FailedPrecondition that
// quotes a requested ID, or Unavailable while the socket is being
// replaced. A request for the steady GPU alone is never refused.
func TestAllocateFromSixteenGoroutinesWhileGPUsComeAndGoAndTheKubeletRestarts(t *testing.T) {
	r := newRig(t, rigConfig{
		fixtures: []func(*fakenode.Node) error{fakenode.Demo, func(n *fakenode.Node) error { return n.AddGPU(hotplugGPU) }},
		opts:     []plugintest.Option{plugintest.WithSharedDevNum(2)},
	})
	r.registered(deviceplugin.ResourceI915, 1)

	var pool []string
	for _, pci := range []string{steadyPCI, flakyPCI, hotplugPCI} {
		pool = append(pool, pci+"-0", pci+"-1")
	}
	stranger := []string{unknownPCI + "-0", xePCI + "-0", xePCI}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var (
		counts  tally
		wg      sync.WaitGroup
		errMu   sync.Mutex
		errs    []string
		perGoro = make([]int64, allocators)
	)
	report := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	for g := range allocators {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			c := dialI915(t, r)
			defer func() { c.Close() }()
			for ctx.Err() == nil {
				req := randomRequest(rng, pool, stranger)
				callCtx, cancel := context.WithTimeout(ctx, waitFor)
				resp, err := allocate(callCtx, c, req...)
				cancel()
				if ctx.Err() != nil {
					return
				}
				switch problem := judge(req, resp, err); {
				case problem != "":
					report("goroutine %d: request %v: %s", g, req, problem)
					return
				case err == nil:
					counts.ok.Add(1)
					perGoro[g]++
				case status.Code(err) == codes.Unavailable:
					// The kubelet restarted and removed our socket: dial
					// again, as the kubelet does on every registration.
					counts.transport.Add(1)
					c.Close()
					c = dialI915(t, r)
				default:
					counts.refused.Add(1)
				}
			}
		})
	}

	start := time.Now()
	restarts := 0
	for step := range churnSteps {
		must := func(err error) {
			if err != nil {
				stop()
				wg.Wait()
				t.Fatalf("churn step %d: %v", step, err)
			}
		}
		must(r.node.RemoveDevNodes(flakyPCI))
		must(r.node.RemoveGPU(hotplugPCI))
		time.Sleep(30 * time.Millisecond)
		must(r.node.AddDevNodes(flakyPCI))
		must(r.node.AddGPU(hotplugGPU))
		time.Sleep(30 * time.Millisecond)
		if step%8 == 7 {
			must(r.kubelet.Restart())
			restarts++
		}
		r.alive()
	}
	elapsed := time.Since(start)
	stop()
	wg.Wait()

	for _, e := range errs {
		t.Error(e)
	}
	for g, n := range perGoro {
		if n == 0 {
			t.Errorf("goroutine %d got no allocation through", g)
		}
	}
	// The churn must have been seen: while the flaky and hot-plugged GPUs
	// were gone, requests for them were refused.
	if counts.refused.Load() == 0 {
		t.Error("no request was refused: the allocations never saw a GPU gone")
	}
	t.Logf("%s of churn (%d steps, %d kubelet restarts): %d allocations, %d clear refusals, %d Unavailable while a socket was replaced",
		elapsed.Round(time.Millisecond), churnSteps, restarts, counts.ok.Load(), counts.refused.Load(), counts.transport.Load())

	// Once the node is still, every GPU is handed out again.
	c := dialI915(t, r)
	defer c.Close()
	eventually(t, "every share allocatable after the churn", func() bool {
		_, err := allocate(ctxFor(t, waitFor), c, pool)
		return err == nil
	})
	r.alive()
}

func dialI915(t testing.TB, r *rig) *fakekubelet.Client {
	c, err := r.kubelet.Dial(socketOf(deviceplugin.ResourceI915))
	if err != nil {
		t.Error(err)
	}
	return c
}

// socketOf is the socket name the plugin registers a resource with.
func socketOf(resource string) string {
	return "intel-gpu-cdi-" + resource[strings.LastIndexByte(resource, '/')+1:] + ".sock"
}

func randomRequest(rng *rand.Rand, pool, stranger []string) [][]string {
	req := make([][]string, 1+rng.IntN(2))
	for i := range req {
		for range 1 + rng.IntN(3) {
			req[i] = append(req[i], pool[rng.IntN(len(pool))])
		}
		if rng.IntN(20) == 0 {
			req[i] = append(req[i], stranger[rng.IntN(len(stranger))])
		}
	}
	return req
}

// judge returns what is wrong with an answer to req, or "".
func judge(req [][]string, resp *pluginapi.AllocateResponse, err error) string {
	if err == nil {
		if len(resp.ContainerResponses) != len(req) {
			return fmt.Sprintf("%d container answers for %d containers", len(resp.ContainerResponses), len(req))
		}
		for i, ids := range req {
			var want []string
			for _, id := range ids {
				pci := id[:len("0000:00:00.0")]
				if pci == unknownPCI || pci == xePCI {
					return fmt.Sprintf("allocated %s, which is not an i915 device", id)
				}
				if name := "intel.com/gpu=" + pci; !slices.Contains(want, name) {
					want = append(want, name)
				}
			}
			got := cdiNames(resp.ContainerResponses[i])
			if !slices.Equal(got, want) {
				return fmt.Sprintf("container %d got %v, want %v", i, got, want)
			}
		}
		return ""
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable:
		if st.Message() == "" {
			return "Unavailable without a message"
		}
		return ""
	case codes.InvalidArgument, codes.FailedPrecondition:
		steadyOnly := true
		for _, ids := range req {
			for _, id := range ids {
				if strings.Contains(st.Message(), `"`+id+`"`) {
					if !strings.HasPrefix(id, steadyPCI) {
						return ""
					}
				}
				steadyOnly = steadyOnly && strings.HasPrefix(id, steadyPCI)
			}
		}
		if steadyOnly {
			return fmt.Sprintf("the steady GPU was refused: %v", err)
		}
		return fmt.Sprintf("the error names no requested ID that could fail: %v", err)
	}
	return fmt.Sprintf("an unclear error: %v", err)
}
