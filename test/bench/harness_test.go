package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
)

// The floor must keep working for BenchmarkFloor to mean anything, so it
// runs here in go test ./... as well: registered, listed, answering, and
// gone with its socket after SIGTERM.
func TestTheNoopPluginRegistersListsAnswersAllocateAndStops(t *testing.T) {
	bin := buildT(t, t.TempDir(), "./test/cmd/noop-plugin")
	env, cleanup, err := NewEnv(nil, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	floor := Candidate{
		Name: "noop-plugin",
		Call: "Allocate",
		Command: func(env *Env) *exec.Cmd {
			return exec.Command(bin, "--kubelet-socket-dir", env.Kubelet.Dir(), "--resource", "example.com/thing", "--devices", "8")
		},
		Ready: DevicePluginReady("example.com/thing"),
	}
	s, err := Run(context.Background(), floor, env, Config{Calls: 100, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Latencies) != 100 || !slices.IsSorted(s.Latencies) || s.Latencies[0] <= 0 {
		t.Errorf("latencies: %d, sorted %v, first %v; want 100 sorted positive", len(s.Latencies), slices.IsSorted(s.Latencies), s.Latencies[0])
	}
	if s.Start <= 0 {
		t.Errorf("start took %v", s.Start)
	}
	for _, m := range []Mem{s.AfterStart, s.AfterCalls} {
		if m.RSS <= 0 || m.Anon <= 0 || m.File <= 0 || m.Peak < m.RSS {
			t.Errorf("memory sample %+v: want every figure positive and peak >= RSS", m)
		}
	}
	if _, err := os.Stat(filepath.Join(env.Kubelet.Dir(), "noop-plugin.sock")); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after SIGTERM (%v)", err)
	}
}

func TestADevicePluginThatNeverListsIsAnErrorWithItsOutput(t *testing.T) {
	env, cleanup, err := NewEnv(nil, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	silent := Candidate{
		Name:    "silent",
		Call:    "Allocate",
		Command: func(*Env) *exec.Cmd { return exec.Command("sh", "-c", "echo never registers >&2; exec sleep 60") },
		Ready:   DevicePluginReady("example.com/thing"),
	}
	_, err = Run(context.Background(), silent, env, Config{Calls: 1, Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "silent") || !strings.Contains(err.Error(), "never registers") {
		t.Errorf("Run = %v; want an error naming the candidate with its stderr", err)
	}
}

func TestReadMemOfThisProcess(t *testing.T) {
	m, err := ReadMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The test binary has a Go heap and its own text mapped: both are
	// megabytes, and they add up to no more than the peak.
	if m.Anon < 1<<20 || m.File < 1<<20 || m.Anon+m.File > m.Peak+1<<20 {
		t.Errorf("ReadMem = %+v", m)
	}
	if _, err := ReadMem(-1); err == nil {
		t.Error("ReadMem of no process did not fail")
	}
}

func TestReadFaultsCountsPagesThisProcessTouches(t *testing.T) {
	const pages = 64
	mem, err := syscall.Mmap(-1, 0, pages*os.Getpagesize(), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	before, err := ReadFaults(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for p := range pages {
		mem[p*os.Getpagesize()] = 1
	}
	after, err := ReadFaults(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Every page of a fresh private mapping faults once when first
	// written; other goroutines may add a few of their own.
	if after-before < pages {
		t.Errorf("faults %d -> %d after writing %d new pages, want at least %d more", before, after, pages, pages)
	}
	if _, err := ReadFaults(-1); err == nil {
		t.Error("ReadFaults of no process did not fail")
	}
}

func TestMedianAndTable(t *testing.T) {
	f := Figure{Name: "start", Unit: "ms", Of: func(s Sample) float64 { return float64(s.Start) / float64(time.Millisecond) }}
	ms := func(v ...int) []Sample {
		var out []Sample
		for _, x := range v {
			out = append(out, Sample{Start: time.Duration(x) * time.Millisecond})
		}
		return out
	}
	if got := Median(f, ms(9, 1, 5)); got != 5 {
		t.Errorf("median of 9 1 5 = %v", got)
	}
	if got := Median(f, ms(4, 1, 2, 10)); got != 3 {
		t.Errorf("median of 4 1 2 10 = %v", got)
	}
	var b strings.Builder
	if err := WriteTable(&b, []Figure{f}, "floor", []string{"ours"}, map[string][]Sample{"floor": ms(10, 20, 30), "ours": ms(25, 30, 35)}); err != nil {
		t.Fatal(err)
	}
	row := strings.Fields(strings.Split(b.String(), "\n")[1])
	if want := []string{"start", "20.0", "ms", "30.0", "ms", "1.50x", "+10.0", "ms"}; !slices.Equal(row, want) {
		t.Errorf("table row %q, want %q\n%s", row, want, b.String())
	}
}

func buildT(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = filepath.Join("..", "..")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// The DRA floor needs an API server for its slices and claims, which go
// test ./... does not have; what it does without one, registering with
// the kubelet and stopping on SIGTERM, is checked here so that
// BenchmarkDRAFloor's floor keeps working.
func TestTheNoopDRAPluginRegistersWithTheKubeletAndStops(t *testing.T) {
	bin := buildT(t, t.TempDir(), "./test/cmd/noop-dra")
	env, cleanup, err := NewEnv(nil, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	// Nothing listens there: the helper's slice controller retries in the
	// background while the plugin serves the kubelet.
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none}}]
current-context: none
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &DRA{Kubeconfig: kubeconfig}
	for _, dir := range []string{d.RegistrarDir(env), d.PluginsDir(env)} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--node-name", "node-a", "--devices", "8",
		"--kubelet-registrar-dir", d.RegistrarDir(env), "--kubelet-plugins-dir", d.PluginsDir(env))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := drakubelet.Register(ctx, filepath.Join(d.RegistrarDir(env), DRADriver+"-reg.sock"))
	if err != nil {
		t.Fatalf("registering: %v\n%s", err, stderr.String())
	}
	if p.Info.Name != DRADriver {
		t.Errorf("registered as %q, want %q", p.Info.Name, DRADriver)
	}
	p.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("still running 30 s after SIGTERM\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(d.RegistrarDir(env), DRADriver+"-reg.sock")); !os.IsNotExist(err) {
		t.Errorf("the registration socket is still there after SIGTERM (%v)", err)
	}
}
