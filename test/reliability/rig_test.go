package reliability_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakekubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/plugintest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// waitFor bounds every wait: a deadline for a hang, not a speed goal.
const waitFor = 20 * time.Second

// counter is a plugintest.Observer that counts what the plugin reports
// and passes it on to the plugin's Prometheus metrics.
type counter struct {
	specWrites, specWriteErrs atomic.Int64
	rescans, rescanErrs       atomic.Int64
	regErrs, restarts         atomic.Int64
	metrics                   *metrics.Metrics
}

var _ plugintest.Observer = (*counter)(nil)

func (c *counter) Devices(res string, healthy, unhealthy int) {
	c.metrics.Devices(res, healthy, unhealthy)
}
func (c *counter) Allocation(res string, err error) { c.metrics.Allocation(res, err) }
func (c *counter) Registration(res string, err error) {
	c.metrics.Registration(res, err)
	if err != nil {
		c.regErrs.Add(1)
	}
}
func (c *counter) KubeletRestart() {
	c.metrics.KubeletRestart()
	c.restarts.Add(1)
}
func (c *counter) SpecWrite(err error) {
	c.metrics.SpecWrite(err)
	c.specWrites.Add(1)
	if err != nil {
		c.specWriteErrs.Add(1)
	}
}
func (c *counter) Rescan(d time.Duration, err error) {
	c.metrics.Rescan(d, err)
	c.rescans.Add(1)
	if err != nil {
		c.rescanErrs.Add(1)
	}
}

// metric returns the value of an unlabelled series on the plugin's
// /metrics page, or -1 when there is none.
func (c *counter) metric(t testing.TB, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	c.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", metrics.Path, nil))
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return -1
}

// logBuffer collects the plugin's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log lines that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(b.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// rig is the real plugin, in this process, on a fake node with a fake kubelet.
type rig struct {
	t       testing.TB
	node    *fakenode.Node
	kubelet *fakekubelet.Kubelet
	specDir string
	plugin  *plugintest.Plugin
	obs     *counter
	log     *logBuffer
	cancel  context.CancelFunc
	done    chan error
}

type rigConfig struct {
	fixtures []func(*fakenode.Node) error
	specDir  string // default: a new temporary directory
	sockDir  string // default: a new short temporary directory
	opts     []plugintest.Option
	noStart  bool
}

func newRig(t testing.TB, c rigConfig) *rig {
	t.Helper()
	node := fakenode.NewT(t)
	node.MustApply(t, c.fixtures...)
	if c.sockDir == "" {
		c.sockDir = testenv.SocketDir(t)
	}
	if c.specDir == "" {
		c.specDir = filepath.Join(t.TempDir(), "cdi")
	}
	k, err := fakekubelet.Start(c.sockDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	r := &rig{t: t, node: node, kubelet: k, specDir: c.specDir, obs: &counter{metrics: metrics.New()}, log: &logBuffer{}}
	opts := append([]plugintest.Option{
		plugintest.WithScanner(discovery.New(discovery.WithSysfsRoot(node.Sys), discovery.WithDevRoot(node.Dev))),
		plugintest.WithKubeletSocketDir(c.sockDir),
		plugintest.WithCDISpecDir(c.specDir),
		plugintest.WithObserver(r.obs),
		plugintest.WithLogger(slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}, c.opts...)
	r.plugin, err = plugintest.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !c.noStart {
		r.start()
	}
	return r
}

func (r *rig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan error, 1)
	go func() { r.done <- r.plugin.Run(ctx) }()
	r.t.Cleanup(r.stop)
}

// stop ends the plugin and checks that it returned cleanly.
func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("plugin Run returned %v", err)
		}
	case <-time.After(waitFor):
		r.t.Error("plugin did not stop")
	}
}

// alive fails the test if Run has returned: it must run until cancelled.
func (r *rig) alive() {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.t.Fatalf("plugin Run returned on its own: %v", err)
	default:
	}
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// registered waits for the n-th registration of resource and dials it.
func (r *rig) registered(resource string, n int) *fakekubelet.Client {
	r.t.Helper()
	req, err := r.kubelet.WaitRegistration(ctxFor(r.t, waitFor), resource, n)
	if err != nil {
		r.t.Fatalf("%v\nplugin log:\n%s", err, r.log)
	}
	c, err := r.kubelet.Dial(req.Endpoint)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// watch opens ListAndWatch on c until the test ends.
func (r *rig) watch(c *fakekubelet.Client) <-chan []*pluginapi.Device {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(cancel)
	ch, err := c.Watch(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return ch
}

// nextList waits for a list that satisfies ok and returns it.
func (r *rig) nextList(ch <-chan []*pluginapi.Device, what string, ok func([]*pluginapi.Device) bool) []*pluginapi.Device {
	r.t.Helper()
	return fakekubelet.NextList(r.t, ch, waitFor, what, ok, r.log)
}

var (
	ids      = fakekubelet.IDs
	cdiNames = fakekubelet.CDINames
)

func allocate(ctx context.Context, c *fakekubelet.Client, idsPerContainer ...[]string) (*pluginapi.AllocateResponse, error) {
	return c.AllocateIDs(ctx, idsPerContainer...)
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
