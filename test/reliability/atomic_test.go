package reliability_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// Atomic specs under fire: a runtime may read the spec at any moment, so
// whatever it reads must be a whole spec that the CDI library accepts,
// while the spec is rewritten and while a writer dies mid-write.

const (
	rewrites = 10_000
	kills    = 100
	// tempPrefix is how the spec writer names its temporary files.
	tempPrefix = ".intel-gpu-cdi-"
)

// specDir returns an empty directory for specs, on tmpfs when the machine
// has one at /dev/shm: /var/run/cdi, where the plugin writes, is tmpfs on
// most distributions, and there fsync costs nothing, so the rewrite counts
// below fit in a CI run.
func specDir(t testing.TB) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		dir, err := os.MkdirTemp("/dev/shm", "reliability-cdi-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	t.Logf("no tmpfs at /dev/shm: writing specs to a disk directory, with an fsync per write")
	return t.TempDir()
}

// specVariants returns encoded specs of different sizes (one or two GPUs,
// with and without by-path mounts), so that a torn or mixed file cannot
// pass for a whole one. They are small on purpose: the CDI library's
// parse, in the writer's check and in every reader, is what a rewrite
// costs, and under -race it is slow.
func specVariants(t testing.TB) [][]byte {
	t.Helper()
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.Demo)
	res, err := scanner(n).Scan()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, c := range []struct {
		gpus   int
		byPath spec.ByPath
	}{{1, spec.ByPathNone}, {2, spec.ByPathNone}, {1, spec.ByPathSingle}} {
		b, err := spec.NewBuilder(spec.WithByPath(c.byPath))
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.Build(res.Devices[:c.gpus])
		if err != nil {
			t.Fatal(err)
		}
		data, err := spec.Marshal(s, spec.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// readers read the spec as runtimes do, until stopped: one reads the
// bytes (they must be exactly one of the variants) and, every few reads,
// parses the file with the CDI library; one refreshes a CDI cache over
// the directory, as podman and containerd do, which must hold no error
// and the device of all GPUs.
type readers struct {
	stop         chan struct{}
	wg           sync.WaitGroup
	reads, specs atomic.Int64
	refreshes    atomic.Int64
	mu           sync.Mutex
	errs         []error
}

func startReaders(t testing.TB, path string, variants [][]byte) *readers {
	r := &readers{stop: make(chan struct{})}
	fail := func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errs = append(r.errs, err)
	}
	stopped := func() bool {
		select {
		case <-r.stop:
			return true
		default:
			return false
		}
	}
	r.wg.Go(func() {
		for i := 0; !stopped(); i++ {
			data, err := os.ReadFile(path)
			if err != nil {
				fail(fmt.Errorf("read %d: %w", i, err))
				return
			}
			if !slices.ContainsFunc(variants, func(v []byte) bool { return bytes.Equal(v, data) }) {
				fail(fmt.Errorf("read %d: %d bytes that are none of the specs written: %.120q…", i, len(data), data))
				return
			}
			r.reads.Add(1)
			// Leave the writer a core: several reads per rewrite still
			// land inside every phase of it.
			time.Sleep(200 * time.Microsecond)
			if i%8 != 0 {
				continue
			}
			s, err := cdiapi.ReadSpec(path, 0)
			if err != nil {
				fail(fmt.Errorf("CDI library read %d: %w", i, err))
				return
			}
			if s.GetDevice(spec.AllDevice) == nil {
				fail(fmt.Errorf("CDI library read %d: no %q device", i, spec.AllDevice))
				return
			}
			r.specs.Add(1)
		}
	})
	r.wg.Go(func() {
		cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(filepath.Dir(path)), cdiapi.WithAutoRefresh(false))
		if err != nil {
			fail(err)
			return
		}
		for i := 0; !stopped(); i++ {
			if err := cache.Refresh(); err != nil {
				fail(fmt.Errorf("CDI cache refresh %d: %w", i, err))
				return
			}
			if cache.GetDevice("intel.com/gpu="+spec.AllDevice) == nil {
				fail(fmt.Errorf("CDI cache refresh %d: no intel.com/gpu=all; errors %v", i, cache.GetErrors()))
				return
			}
			r.refreshes.Add(1)
			// The writer needs a core too: a cache refresh parses every spec.
			time.Sleep(2 * time.Millisecond)
		}
	})
	t.Cleanup(r.halt)
	return r
}

func (r *readers) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

// finish stops the readers and fails the test on anything they saw.
func (r *readers) finish(t testing.TB) {
	t.Helper()
	r.halt()
	for _, err := range r.errs {
		t.Error(err)
	}
	if r.reads.Load() == 0 || r.specs.Load() == 0 || r.refreshes.Load() == 0 {
		t.Errorf("readers did not get to read: %d reads, %d library reads, %d cache refreshes", r.reads.Load(), r.specs.Load(), r.refreshes.Load())
	}
	t.Logf("readers: %d byte-exact reads, %d CDI library reads, %d CDI cache refreshes", r.reads.Load(), r.specs.Load(), r.refreshes.Load())
}

// temps lists the writer's temporary files in dir.
func temps(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) && e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestSpecRewrittenTenThousandTimesUnderReaders(t *testing.T) {
	dir := specDir(t)
	path := filepath.Join(dir, "intel.com-gpu.json")
	variants := specVariants(t)
	if err := spec.WriteEncoded(path, variants[0]); err != nil {
		t.Fatal(err)
	}

	r := startReaders(t, path, variants)
	start := time.Now()
	for i := range rewrites {
		if err := spec.WriteEncoded(path, variants[(i+1)%len(variants)]); err != nil {
			t.Fatalf("rewrite %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	r.finish(t)
	t.Logf("%d rewrites in %s (%s each)", rewrites, elapsed.Round(time.Millisecond), (elapsed / rewrites).Round(time.Microsecond))

	if left := temps(t, dir); len(left) > 0 {
		t.Errorf("rewrites left temporary files: %v", left)
	}
	data, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(data, variants[rewrites%len(variants)]) {
		t.Errorf("the spec on disk is not the last one written (%v)", err)
	}
}

// runSpecWriter is the child process that TestSpecWriterKilledMidWrite
// kills: it rewrites the spec at path with each spec in variantsDir in
// turn, for ever, through the same atomic write the plugin uses.
func runSpecWriter(path, variantsDir string) error {
	entries, err := os.ReadDir(variantsDir)
	if err != nil {
		return err
	}
	var variants [][]byte
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(variantsDir, e.Name()))
		if err != nil {
			return err
		}
		variants = append(variants, data)
	}
	if len(variants) == 0 {
		return errors.New("no spec to write")
	}
	fmt.Println("writing")
	for i := 0; ; i++ {
		if err := spec.WriteEncoded(path, variants[i%len(variants)]); err != nil {
			return err
		}
	}
}

func TestSpecWriterKilledMidWrite(t *testing.T) {
	dir := specDir(t)
	path := filepath.Join(dir, "intel.com-gpu.json")
	variants := specVariants(t)
	variantsDir := t.TempDir()
	for i, v := range variants {
		if err := os.WriteFile(filepath.Join(variantsDir, fmt.Sprintf("%d.json", i)), v, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := spec.WriteEncoded(path, variants[0]); err != nil {
		t.Fatal(err)
	}
	// What is not the plugin's must survive its clean-up: another
	// vendor's spec, and a directory that merely starts like a temp file.
	other := filepath.Join(dir, "example.com-net.yaml")
	otherSpec := "cdiVersion: 0.5.0\nkind: example.com/net\ndevices:\n- name: eth0\n  containerEdits:\n    env: [NET=eth0]\n"
	if err := os.WriteFile(other, []byte(otherSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	keepDir := filepath.Join(dir, tempPrefix+"not-a-temp-file")
	if err := os.Mkdir(keepDir, 0o755); err != nil {
		t.Fatal(err)
	}

	r := startReaders(t, path, variants)
	for i := range kills {
		killWriterMidWrite(t, i, path, variantsDir)
		data, err := os.ReadFile(path)
		if err != nil || !slices.ContainsFunc(variants, func(v []byte) bool { return bytes.Equal(v, data) }) {
			t.Fatalf("after kill %d the spec is not a whole spec (%v): %.120q", i, err, data)
		}
	}
	r.finish(t)

	left := temps(t, dir)
	t.Logf("%d kills left %d temporary files", kills, len(left))
	if len(left) == 0 {
		t.Fatal("no kill landed mid-write, so the clean-up at start is not exercised")
	}
	for _, name := range left {
		if ext := filepath.Ext(name); ext == ".json" || ext == ".yaml" {
			t.Errorf("temporary file %s has a spec extension: CDI caches would read it", name)
		}
	}

	// The plugin starts on the directory: its leftovers go, the rest stays.
	rg := newRig(t, rigConfig{fixtures: []func(*fakenode.Node) error{fakenode.Demo}, specDir: dir})
	rg.registered(deviceplugin.ResourceI915, 1)
	if still := temps(t, dir); len(still) > 0 {
		t.Errorf("the plugin started and left %d temporary files: %v", len(still), still)
	}
	if got := rg.log.lines("removed leftover temporary specs", fmt.Sprintf("count=%d", len(left))); len(got) != 1 {
		t.Errorf("no log line says %d leftovers were removed:\n%s", len(left), rg.log)
	}
	if _, err := cdiapi.ReadSpec(path, 0); err != nil {
		t.Errorf("the plugin's spec: %v", err)
	}
	if data, err := os.ReadFile(other); err != nil || string(data) != otherSpec {
		t.Errorf("another vendor's spec was touched: %v", err)
	}
	if _, err := os.Stat(keepDir); err != nil {
		t.Errorf("a directory named like a temp file was removed: %v", err)
	}
}

// killWriterMidWrite starts a writer process, lets it write for a random
// moment and kills it with SIGKILL.
func killWriterMidWrite(t *testing.T, i int, path, variantsDir string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), writerEnv+"="+path, writerVariantsEnv+"="+variantsDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "writing\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("kill %d: the writer did not start: %s", i, stderr.String())
		}
	case <-time.After(waitFor):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("kill %d: the writer did not start in %s", i, waitFor)
	}
	time.Sleep(time.Duration(rand.IntN(20_000)) * time.Microsecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("kill %d: the writer ended with %v before the kill: %s", i, err, stderr.String())
	}
}
