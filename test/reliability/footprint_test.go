package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/bench"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// The footprint of the real binary, a benchmark rather than a timed unit
// test (see BENCHMARKS.md, "Reliability"); it still fails when a target is
// missed. FOOTPRINT_SECONDS sets each window (default 10), FOOTPRINT_GPUS
// the size of the node (default 64).
//
//	go test -run '^$' -bench '^BenchmarkFootprint$' -v -count=1 ./test/reliability/

const (
	footprintGPUs = 64
	allocateRate  = 1000 // per second
	// idleRSSLimit is the target for the idle plugin.
	idleRSSLimit = 20 << 20
	// idleCPULimit allows the runtime's own housekeeping over a window,
	// in clock ticks of 10 ms: anything like polling costs far more.
	idleCPULimit = 3
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; Linux fixes
// it at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

type procSample struct {
	cpuTicks int64 // utime + stime
	rss, hwm int64 // bytes
	// anon is the part of rss that is the process's own memory (heap,
	// stacks); the rest is the binary's pages, shared with the page cache.
	anon    int64
	threads int
	openFDs int
	at      time.Time
}

func sampleProc(t testing.TB, pid int) procSample {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	s := procSample{cpuTicks: utime + stime, at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "VmRSS":
			s.rss = n << 10
		case "VmHWM":
			s.hwm = n << 10
		case "Threads":
			s.threads = int(n)
		}
	}
	if rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		for _, line := range strings.Split(string(rollup), "\n") {
			if v, ok := strings.CutPrefix(line, "Anonymous:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				s.anon = n << 10
			}
		}
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.openFDs = len(fds)
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func cpuShare(a, b procSample) float64 {
	return float64(time.Duration(b.cpuTicks-a.cpuTicks)*clockTick) / float64(b.at.Sub(a.at))
}

// buildBinary builds cmd/intel-gpu-cdi as deployments/image/Dockerfile
// does for the image the DaemonSet runs. FOOTPRINT_TAGS adds build tags:
// dra_combined measures the build that holds the DRA driver too
// (BENCHMARKS.md, "One binary or two").
func buildBinary(t testing.TB) string {
	t.Helper()
	return buildCmd(t, "intel-gpu-cdi", os.Getenv("FOOTPRINT_TAGS"))
}

// buildCmd builds the command cmd/<name> as the image does: with the
// product's build tags, plus tags (a comma list, may be empty).
func buildCmd(t testing.TB, name, tags string) string {
	t.Helper()
	if tags != "" {
		tags = bench.ProductTags + "," + tags
	} else {
		tags = bench.ProductTags
	}
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-trimpath", "-tags", tags, "-ldflags", "-s -w", "-o", bin, "./cmd/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startMeasured starts the measured process and returns when it started
// and a channel that gets its exit. The process is stopped when the test
// ends: SIGTERM, then SIGKILL after waitFor.
func startMeasured(t testing.TB, cmd *exec.Cmd) (time.Time, <-chan error) {
	t.Helper()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitFor):
			cmd.Process.Kill()
		}
	})
	return start, exited
}

// footprintWindow is each measuring window: FOOTPRINT_SECONDS, default 10.
func footprintWindow(t testing.TB) time.Duration {
	window := 10 * time.Second
	if s := os.Getenv("FOOTPRINT_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("FOOTPRINT_SECONDS=%q", s)
		}
		window = time.Duration(n) * time.Second
	}
	return window
}

// BenchmarkFootprint measures once, whatever b.N: each window is seconds
// long, so the framework never asks for a second round.
func BenchmarkFootprint(b *testing.B) {
	var t testing.TB = b
	window := footprintWindow(t)
	gpuCount := footprintGPUs
	if s := os.Getenv("FOOTPRINT_GPUS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > fakenode.MaxMany {
			t.Fatalf("FOOTPRINT_GPUS=%q", s)
		}
		gpuCount = n
	}
	bin := buildBinary(t)
	node := fakenode.NewT(t)
	node.MustApply(t, func(n *fakenode.Node) error { return fakenode.Many(n, gpuCount) })
	sockDir := testenv.SocketDir(t)
	k, err := fakekubelet.Start(sockDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)

	var stderr bytes.Buffer
	cmd := exec.Command(bin, "plugin", "--sysfs-root", node.Sys, "--dev-root", node.Dev,
		"--kubelet-socket-dir", sockDir, "--cdi-spec-dir", filepath.Join(t.TempDir(), "cdi"), "--log-level", "warn")
	cmd.Stderr = &stderr
	start, exited := startMeasured(t, cmd)
	pid := cmd.Process.Pid

	req, err := k.WaitRegistration(ctxFor(t, waitFor), deviceplugin.ResourceI915, 1)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	registered := time.Since(start)
	c, err := k.Dial(req.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The kubelet holds ListAndWatch open all along.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lists, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := <-lists; len(l) != gpuCount {
		t.Fatalf("listed %d GPUs, want %d", len(l), gpuCount)
	}
	gpus := make([]string, gpuCount)
	for i := range gpus {
		gpus[i] = fakenode.ManyPCI(i)
	}

	// Idle: nothing changes on the node.
	time.Sleep(3 * time.Second)
	idle0 := sampleProc(t, pid)
	time.Sleep(window)
	idle1 := sampleProc(t, pid)

	// Load: Allocate at a fixed rate from a pool of callers, as kubelets
	// on a busy node would (each container start is one Allocate).
	var (
		done, failed atomic.Int64
		latMu        sync.Mutex
		lat          []time.Duration
		work         = make(chan string, allocateRate)
		wg           sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for id := range work {
				t0 := time.Now()
				_, err := allocate(ctx, c, []string{id})
				d := time.Since(t0)
				if err != nil {
					failed.Add(1)
					continue
				}
				done.Add(1)
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
			}
		})
	}
	load0 := sampleProc(t, pid)
	total := int(window.Seconds()) * allocateRate
	begin := time.Now()
	for i := range total {
		if d := time.Until(begin.Add(time.Duration(i) * time.Second / allocateRate)); d > 0 {
			time.Sleep(d)
		}
		work <- gpus[i%len(gpus)]
	}
	close(work)
	wg.Wait()
	load1 := sampleProc(t, pid)
	rate := float64(done.Load()) / load1.at.Sub(begin).Seconds()

	select {
	case err := <-exited:
		t.Fatalf("the plugin exited: %v\n%s", err, stderr.String())
	default:
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Microsecond)
	}
	t.Logf("%d GPUs; registered %s after start", gpuCount, registered.Round(time.Millisecond))
	t.Logf("idle %s: RSS %s (%s anonymous, peak %s), CPU %d ticks = %.2f%% of a core, %d threads, %d open files",
		idle1.at.Sub(idle0.at).Round(time.Millisecond), mib(idle1.rss), mib(idle1.anon), mib(idle1.hwm), idle1.cpuTicks-idle0.cpuTicks,
		100*cpuShare(idle0, idle1), idle1.threads, idle1.openFDs)
	t.Logf("load %s: %d Allocates at %.0f/s (%d failed), latency p50 %s p99 %s; RSS %s (%s anonymous, peak %s), CPU %.1f%% of a core",
		load1.at.Sub(load0.at).Round(time.Millisecond), done.Load(), rate, failed.Load(), pct(0.5), pct(0.99),
		mib(load1.rss), mib(load1.anon), mib(load1.hwm), 100*cpuShare(load0, load1))

	if idle1.rss > idleRSSLimit {
		t.Errorf("idle RSS %s is above the %s target", mib(idle1.rss), mib(idleRSSLimit))
	}
	if ticks := idle1.cpuTicks - idle0.cpuTicks; ticks > idleCPULimit {
		t.Errorf("the idle plugin used %d clock ticks of CPU in %s: something polls", ticks, window)
	}
	if failed.Load() > 0 {
		t.Errorf("%d Allocates failed", failed.Load())
	}
	if rate < 0.95*allocateRate {
		t.Errorf("only %.0f Allocates/s got through, want %d", rate, allocateRate)
	}
	b.ReportMetric(float64(idle1.rss)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(100*cpuShare(idle0, idle1), "idle-CPU-%")
	b.ReportMetric(float64(load1.rss)/(1<<20), "load-RSS-MiB")
	b.ReportMetric(100*cpuShare(load0, load1), "load-CPU-%")
	b.ReportMetric(float64(pct(0.99))/float64(time.Microsecond), "load-p99-µs")
}
