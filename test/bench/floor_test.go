package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/apiserver"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// BenchmarkFloor runs the no-op plugin (test/cmd/noop-plugin) and
// `intel-gpu-cdi plugin` in turns on one fake node of 64 GPUs, the plugin
// once with an empty spec directory and once restarted (its spec already
// there), and prints the ratio table (see BENCHMARKS.md, "Against the
// floor"). It measures once, whatever b.N: each round takes seconds.
//
//	go test -run '^$' -bench '^BenchmarkFloor$' ./test/bench/
//
// BENCH_ROUNDS (default 5), BENCH_GPUS (64), BENCH_CALLS (10000) and
// BENCH_SETTLE (2s) change the run. BENCH_ALSO adds other builds of
// intel-gpu-cdi to every round, run as the plugin is, for a before and
// after in one run: BENCH_ALSO=before=/tmp/old-intel-gpu-cdi,...
// BENCH_UPSTREAM=<gpu_plugin binary> adds the Intel GPU device plugin
// (as root: see upstream).
func BenchmarkFloor(b *testing.B) {
	rounds := envInt(b, "BENCH_ROUNDS", 5)
	gpus := envInt(b, "BENCH_GPUS", 64)
	cfg := config(b, envInt(b, "BENCH_CALLS", 10000))
	if gpus > fakenode.MaxMany {
		b.Fatalf("BENCH_GPUS=%d: at most %d", gpus, fakenode.MaxMany)
	}

	bins := b.TempDir()
	floorBin := build(b, bins, "./test/cmd/noop-plugin")
	pluginBin := build(b, bins, "./cmd/intel-gpu-cdi")
	node := fakenode.NewT(b)
	node.MustApply(b, func(n *fakenode.Node) error { return fakenode.Many(n, gpus) })

	const resource = "gpu.intel.com/i915"
	floor := Candidate{
		Name: "noop-plugin",
		Call: "Allocate",
		Command: func(env *Env) *exec.Cmd {
			return exec.Command(floorBin, "--kubelet-socket-dir", env.Kubelet.Dir(),
				"--resource", resource, "--devices", strconv.Itoa(env.GPUs))
		},
		Ready: DevicePluginReady(resource),
	}
	plugin := Candidate{
		Name: "intel-gpu-cdi",
		Call: "Allocate",
		Command: func(env *Env) *exec.Cmd {
			return exec.Command(pluginBin, "plugin", "--sysfs-root", env.Node.Sys, "--dev-root", env.Node.Dev,
				"--kubelet-socket-dir", env.Kubelet.Dir(), "--cdi-spec-dir", env.SpecDir, "--log-level", "warn")
		},
		Ready: DevicePluginReady(resource),
	}
	// A plugin restarted on an unchanged node finds its spec in the spec
	// directory, which outlives the pod (/var/run/cdi is the host's);
	// `generate` writes the same bytes.
	restarted := plugin
	restarted.Name = "restarted"
	restarted.Setup = func(ctx context.Context, env *Env) error {
		out, err := exec.CommandContext(ctx, pluginBin, "generate", "--sysfs-root", env.Node.Sys, "--dev-root", env.Node.Dev,
			"--output", filepath.Join(env.SpecDir, "intel.com-gpu.json"), "--log-level", "warn").CombinedOutput()
		if err != nil {
			return fmt.Errorf("generate: %w\n%s", err, out)
		}
		return nil
	}
	cands := []Candidate{floor, plugin, restarted}
	for _, v := range also(b) {
		c := plugin
		c.Name = v.name
		c.Command = func(env *Env) *exec.Cmd {
			cmd := plugin.Command(env)
			cmd.Path, cmd.Args[0] = v.path, v.path
			return cmd
		}
		cands = append(cands, c)
	}
	if bin := os.Getenv("BENCH_UPSTREAM"); bin != "" {
		cands = append(cands, upstream(b, bin, resource))
	}

	samples, err := Rounds(context.Background(), cands, node, gpus, rounds, cfg)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\nAgainst the floor: %d GPUs (node mode %s), %d rounds of %s, medians; %d Allocates one after another; settle %s\n",
		gpus, node.Mode(), rounds, order(cands), cfg.Calls, cfg.Settle)
	report(b, Figures(cfg.Calls, "Allocate", "registered, devices listed"), cands, samples)
}

// BenchmarkDRAFloor is BenchmarkFloor for the DRA driver: the no-op DRA
// plugin (test/cmd/noop-dra) and intel-gpu-cdi-dra in turns, on one fake
// node of 64 GPUs, against one real etcd and kube-apiserver (the versions
// test/cluster builds; Unavailable where they are not built), with
// test/drakubelet as the kubelet. Each run has a Node of its own;
// start → registered ends when the kubelet has the plugin's DRA socket;
// then, untimed, the run waits for its 64 devices in the API server and
// makes 64 allocated claims; after the settle, each call is a
// NodePrepareResources of one claim, which is unprepared after, untimed.
// Both get the same client-side rate limit, raised so that it does not
// pace the calls. Run it alone on a shared machine (other API servers,
// kubelets).
//
//	go test -run '^$' -bench '^BenchmarkDRAFloor$' ./test/bench/
//
// BENCH_ROUNDS, BENCH_GPUS and BENCH_SETTLE as for BenchmarkFloor;
// BENCH_DRA_CALLS (default 1000) the Prepares per run.
func BenchmarkDRAFloor(b *testing.B) {
	rounds := envInt(b, "BENCH_ROUNDS", 5)
	gpus := envInt(b, "BENCH_GPUS", 64)
	cfg := config(b, envInt(b, "BENCH_DRA_CALLS", 1000))
	if gpus > fakenode.MaxMany {
		b.Fatalf("BENCH_GPUS=%d: at most %d", gpus, fakenode.MaxMany)
	}
	api := apiserver.Start(b)
	bins := b.TempDir()
	floorBin := build(b, bins, "./test/cmd/noop-dra")
	driverBin := build(b, bins, "./cmd/intel-gpu-cdi-dra")
	node := fakenode.NewT(b)
	node.MustApply(b, func(n *fakenode.Node) error { return fakenode.Many(n, gpus) })

	d := &DRA{Client: api.Client, Kubeconfig: api.Kubeconfig}
	common := func(env *Env) []string {
		return []string{"--kubeconfig", d.Kubeconfig, "--node-name", d.NodeName(env),
			"--kubelet-registrar-dir", d.RegistrarDir(env), "--kubelet-plugins-dir", d.PluginsDir(env),
			"--kube-api-qps", "1000", "--kube-api-burst", "1000"}
	}
	floor := Candidate{
		Name: "noop-dra", Call: "Prepare", Setup: d.Setup, Ready: d.Ready,
		Command: func(env *Env) *exec.Cmd {
			return exec.Command(floorBin, append(common(env), "--devices", strconv.Itoa(env.GPUs))...)
		},
	}
	driver := Candidate{
		Name: "intel-gpu-cdi-dra", Call: "Prepare", Setup: d.Setup, Ready: d.Ready,
		Command: func(env *Env) *exec.Cmd {
			return exec.Command(driverBin, append(common(env), "--sysfs-root", env.Node.Sys, "--dev-root", env.Node.Dev,
				"--kubelet-socket-dir", env.Kubelet.Dir(), "--cdi-spec-dir", env.SpecDir, "--log-level", "warn")...)
		},
	}
	cands := []Candidate{floor, driver}
	samples, err := Rounds(context.Background(), cands, node, gpus, rounds, cfg)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\nDRA against the floor: %d GPUs (node mode %s), %d rounds of %s, medians; a real kube-apiserver; %d Prepares one after another, each unprepared after; settle %s\n",
		gpus, node.Mode(), rounds, order(cands), cfg.Calls, cfg.Settle)
	report(b, Figures(cfg.Calls, "Prepare", "registered"), cands, samples)
}

// config is the run configuration of the floor benchmarks, with calls
// timed calls and BENCH_SETTLE read.
func config(b *testing.B, calls int) Config {
	cfg := Config{Settle: 2 * time.Second, Calls: calls, Timeout: 30 * time.Second}
	if s := os.Getenv("BENCH_SETTLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			b.Fatalf("BENCH_SETTLE=%q: want a duration such as 2s", s)
		}
		cfg.Settle = d
	}
	return cfg
}

// report prints the table of every candidate against the first, the
// floor, and reports each figure's ratio to the floor as a metric.
func report(b *testing.B, figs []Figure, cands []Candidate, samples map[string][]Sample) {
	floor := cands[0].Name
	var others []string
	for _, c := range cands[1:] {
		others = append(others, c.Name)
	}
	if err := WriteTable(os.Stdout, figs, floor, others, samples); err != nil {
		b.Fatal(err)
	}
	for _, o := range others {
		for _, f := range figs {
			if strings.HasPrefix(f.Name, " ") {
				continue
			}
			base := Median(f, samples[floor])
			if base == 0 {
				continue
			}
			b.ReportMetric(Median(f, samples[o])/base, metricName(o, f.Name))
		}
	}
}

// order spells one round: "A B", so "5 rounds of A B".
func order(cands []Candidate) string {
	names := make([]string, len(cands))
	for i, c := range cands {
		names[i] = c.Name
	}
	return strings.Join(names, " ")
}

// metricName makes a benchmark unit of a figure: no spaces allowed.
func metricName(cand, figure string) string {
	f := strings.NewReplacer("->", "to", " ", "-", "(", "", ")", "", ",", "").Replace(strings.TrimSpace(figure))
	return cand + ":" + f + "/floor"
}

type variant struct{ name, path string }

// also reads BENCH_ALSO: name=path pairs, comma-separated.
func also(b *testing.B) []variant {
	var out []variant
	for _, item := range strings.FieldsFunc(os.Getenv("BENCH_ALSO"), func(r rune) bool { return r == ',' }) {
		name, path, ok := strings.Cut(item, "=")
		if !ok || name == "" {
			b.Fatalf("BENCH_ALSO: %q: want name=path", item)
		}
		if _, err := os.Stat(path); err != nil {
			b.Fatalf("BENCH_ALSO: %s: %v", name, err)
		}
		out = append(out, variant{name, path})
	}
	return out
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

// build builds a command of this module as deployments/image/Dockerfile
// builds the product, so the floor and the plugin are built alike.
func build(b *testing.B, dir, pkg string) string {
	b.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-tags", ProductTags, "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = filepath.Join("..", "..")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}
