// Package bench measures device-plugin binaries against a floor in one run:
// each candidate is started on the same fake node against a fresh fake
// kubelet, in turns (A B A B …), and every figure is reported as a median
// over the rounds and as a ratio and a difference to the floor's median of
// the same run. A shared machine cannot hold an absolute time or size from
// one hour to the next; the ratio to a program measured minutes apart on
// the same machine it can.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// ProductTags are the build tags of the product's builds: the Makefile's
// TAGS, which deployments/image/Dockerfile uses too
// (TestEveryProductBuildHasTheSameTags).
const ProductTags = "urfave_cli_no_docs"

// Candidate is one program (or one mode of a program) under measurement.
// Adding a candidate is adding one of these: a device plugin starts with
// its flags, is ready once registered with the fake kubelet and listed,
// and times Allocate; a DRA driver is ready once registered through its
// registration socket (DRAReady) and times NodePrepareResources.
type Candidate struct {
	Name string
	// Call names the operation Session.Call makes: "Allocate".
	Call string
	// Setup, when set, prepares a run before its process starts (the
	// Node object a DRA driver publishes for).
	Setup func(ctx context.Context, env *Env) error
	// Command returns the process to start for one run.
	Command func(env *Env) *exec.Cmd
	// Ready waits until the process is registered with the kubelet and can
	// be called, and returns the session that makes the timed calls.
	Ready func(ctx context.Context, env *Env) (Session, error)
}

// Session makes the timed calls of one run.
type Session interface {
	// Call makes the i-th call.
	Call(ctx context.Context, i int) error
	Close() error
}

// Settler is a Session with start-up work of the candidate that comes
// after ready and must be done before the first memory sample (a DRA
// driver's ResourceSlices reaching the API server) or before the calls
// (claims to prepare). Its time is not in the start figure.
type Settler interface {
	Settle(ctx context.Context) error
}

// Afterer is a Session with untimed work after each call: a prepared
// claim is unprepared, as the kubelet does when its pod goes, so that
// the next Prepare is a new one.
type Afterer interface {
	After(ctx context.Context, i int) error
}

// Env is what one run of a candidate works in. Node is shared by every
// run; Kubelet, SpecDir, Dir and Seq are fresh for each.
type Env struct {
	Node    *fakenode.Node
	GPUs    int
	Kubelet *fakekubelet.Kubelet
	SpecDir string
	// Dir is an empty directory with a short path, for the sockets of a
	// DRA driver (the kubelet's plugins_registry and plugins).
	Dir string
	// Seq numbers the runs of this process, for names that must differ
	// from run to run (a DRA driver's node).
	Seq int
}

var runs atomic.Int64

// Config sets what a run does.
type Config struct {
	// Settle is the wait between ready and the first memory sample, so
	// that start-up garbage is collected or not, as it would be on a node.
	Settle time.Duration
	// Calls is the number of timed calls, made one after another as the
	// kubelet makes them.
	Calls int
	// Timeout bounds start-up and each call: a deadline for a hang.
	Timeout time.Duration
}

// Sample is what one run measured.
type Sample struct {
	Start time.Duration // process started → ready
	// StartFaults is the minor page faults the process took by ready.
	StartFaults int64
	AfterStart  Mem
	AfterCalls  Mem
	Latencies   []time.Duration // sorted
}

// Run starts c on env, measures it and stops it. A run whose process exits
// by itself or misses a deadline is an error carrying its stderr.
func Run(ctx context.Context, c Candidate, env *Env, cfg Config) (s Sample, err error) {
	// A file, not a pipe: a pipe would need a copying goroutine, and a
	// grandchild holding it open would keep Wait waiting.
	out, err := os.CreateTemp("", "bench-output-")
	if err != nil {
		return s, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	output := func() string {
		b, _ := os.ReadFile(out.Name())
		return string(b)
	}
	if c.Setup != nil {
		sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := c.Setup(sctx, env)
		cancel()
		if err != nil {
			return s, fmt.Errorf("%s: setting up: %w", c.Name, err)
		}
	}
	cmd := c.Command(env)
	cmd.Stdout, cmd.Stderr = out, out
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return s, fmt.Errorf("%s: starting %s: %w", c.Name, cmd.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if stopErr := stop(cmd, exited, cfg.Timeout); stopErr != nil && err == nil {
			err = fmt.Errorf("%s: %w\n%s", c.Name, stopErr, output())
		}
	}()
	fail := func(what string, e error) (Sample, error) {
		return s, fmt.Errorf("%s: %s: %w\n%s", c.Name, what, e, output())
	}

	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	sess, err := c.Ready(rctx, env)
	cancel()
	if err != nil {
		return fail("waiting until ready", err)
	}
	defer sess.Close()
	s.Start = time.Since(begin)
	if s.StartFaults, err = ReadFaults(cmd.Process.Pid); err != nil {
		return fail("reading page faults", err)
	}
	if st, ok := sess.(Settler); ok {
		sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := st.Settle(sctx)
		cancel()
		if err != nil {
			return fail("settling", err)
		}
	}

	time.Sleep(cfg.Settle)
	pid := cmd.Process.Pid
	if s.AfterStart, err = ReadMem(pid); err != nil {
		return fail("reading memory", err)
	}
	s.Latencies = make([]time.Duration, cfg.Calls)
	for i := range cfg.Calls {
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		t0 := time.Now()
		err := sess.Call(cctx, i)
		s.Latencies[i] = time.Since(t0)
		if a, ok := sess.(Afterer); ok && err == nil {
			err = a.After(cctx, i)
		}
		cancel()
		if err != nil {
			return fail(fmt.Sprintf("%s %d", c.Call, i), err)
		}
	}
	slices.Sort(s.Latencies)
	if s.AfterCalls, err = ReadMem(pid); err != nil {
		return fail("reading memory", err)
	}
	select {
	case err := <-exited:
		exited <- err
		return fail("the process exited during the run", err)
	default:
	}
	return s, nil
}

// stop sends SIGTERM, as a kubelet's pod teardown does, and kills the
// process if it has not exited within timeout.
func stop(cmd *exec.Cmd, exited chan error, timeout time.Duration) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return err
		}
		return nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("did not exit within %s of SIGTERM", timeout)
	}
}

// NewEnv starts a fresh fake kubelet in a new short directory (a unix
// socket path holds at most 107 bytes) and makes a fresh spec directory,
// on tmpfs when /dev/shm is there, as /var/run/cdi is on most nodes.
// cleanup stops the kubelet and removes both.
func NewEnv(node *fakenode.Node, gpus int) (env *Env, cleanup func(), err error) {
	sockDir, err := os.MkdirTemp("", "bench")
	if err != nil {
		return nil, nil, err
	}
	base := os.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	specBase, err := os.MkdirTemp(base, "intel-gpu-cdi-bench-")
	if err != nil {
		os.RemoveAll(sockDir)
		return nil, nil, err
	}
	k, err := fakekubelet.Start(filepath.Join(sockDir, "dp"))
	if err != nil {
		os.RemoveAll(sockDir)
		os.RemoveAll(specBase)
		return nil, nil, err
	}
	env = &Env{Node: node, GPUs: gpus, Kubelet: k, SpecDir: filepath.Join(specBase, "cdi"), Dir: sockDir, Seq: int(runs.Add(1))}
	return env, func() {
		k.Stop()
		os.RemoveAll(sockDir)
		os.RemoveAll(specBase)
	}, nil
}

// Rounds runs every candidate once per round, in the order given, so that
// a change of machine load falls on all of them alike. It returns the
// samples per candidate name.
func Rounds(ctx context.Context, cands []Candidate, node *fakenode.Node, gpus, rounds int, cfg Config) (map[string][]Sample, error) {
	out := map[string][]Sample{}
	for range rounds {
		for _, c := range cands {
			env, cleanup, err := NewEnv(node, gpus)
			if err != nil {
				return nil, err
			}
			s, err := Run(ctx, c, env, cfg)
			cleanup()
			if err != nil {
				return nil, err
			}
			out[c.Name] = append(out[c.Name], s)
		}
	}
	return out, nil
}
