package dra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/atomicfile"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/latest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// Driver is the DRA kubelet plugin for the node's Intel GPUs. It is a
// node.Subscriber: every snapshot is published as this node's
// ResourceSlices and health. Run registers with the kubelet and serves.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	ckpt checkpoint

	hub *hub
	// first is closed by the first Update: the plugin registers only once
	// the node's spec is on disk, so that it never answers a Prepare
	// without the spec its CDI names point into.
	first     chan struct{}
	firstOnce sync.Once

	// pubMu orders publishing: Update on the node's goroutine, Run when
	// the helper starts and stops.
	pubMu  sync.Mutex
	roots  pcieRoots
	helper *kubeletplugin.Helper

	// stateMu guards prepared and the checkpoint file. The helper
	// serializes Prepare and Unprepare; the reconciliation runs beside them.
	stateMu  sync.Mutex
	prepared claims
	// preparedNames is the device name → PCI address of every device of a
	// prepared claim, for the health stream, which must not wait for
	// stateMu.
	preparedNames atomic.Pointer[map[string]string]

	registered atomic.Bool
	reconcile  chan struct{}
	// stop ends Run with a fatal error the helper reported.
	stop context.CancelCauseFunc
	mu   sync.Mutex // guards stop
}

var (
	_ node.Subscriber         = (*Driver)(nil)
	_ kubeletplugin.DRAPlugin = (*Driver)(nil)
)

// New checks cfg and returns a driver. Subscribe it to a node, run both.
func New(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		return nil, kubeplugin.Invalid("Client", "is not set")
	}
	cfg = cfg.withDefaults()
	d := &Driver{
		cfg:       cfg,
		log:       cfg.Logger,
		ckpt:      checkpoint{path: filepath.Join(cfg.DataDir(), CheckpointName), driver: cfg.DriverName, node: cfg.NodeName},
		first:     make(chan struct{}),
		roots:     pcieRoots{sysfsRoot: cfg.SysfsRoot, known: map[string]string{}},
		prepared:  claims{},
		reconcile: make(chan struct{}, 1),
	}
	d.hub = latest.New(newInventory(&node.Snapshot{}, &d.cfg, &d.roots))
	d.preparedNames.Store(&map[string]string{})
	return d, nil
}

// CheckpointPath is where the prepared claims are kept.
func (d *Driver) CheckpointPath() string { return d.ckpt.path }

// Update takes a new snapshot of the node: the ResourceSlices and the
// health stream follow it. The node calls it after the spec holding the
// snapshot's healthy GPUs is on disk. Publishing does not wait for the API
// server: the helper's controller writes the slices in the background and
// retries on its own.
func (d *Driver) Update(ctx context.Context, s *node.Snapshot) error {
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	inv := newInventory(s, &d.cfg, &d.roots)
	d.hub.Publish(inv)
	d.firstOnce.Do(func() { close(d.first) })
	if d.helper == nil {
		return nil
	}
	return d.helper.PublishResources(ctx, inv.resources)
}

// Ready reports whether the driver has published a snapshot and the
// kubelet has accepted its registration.
func (d *Driver) Ready() error {
	select {
	case <-d.first:
	default:
		return errors.New("DRA driver: no GPU state yet")
	}
	if !d.registered.Load() {
		return errors.New("DRA driver: not registered with the kubelet")
	}
	return nil
}

// Run serves until ctx ends: it loads the checkpoint, waits for the first
// snapshot, registers with the kubelet, publishes the ResourceSlices, and
// drops checkpointed claims that no longer exist. It returns an error when
// it cannot start or when the helper fails for good (a gRPC server that
// stopped serving); the kubelet's restarts need nothing from it: the kubelet
// finds the registration socket again.
func (d *Driver) Run(ctx context.Context) error {
	dir := d.cfg.DataDir()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("creating the plugin data directory: %w", err)
	}
	if n, err := atomicfile.CleanTemp(dir, checkpointTempPrefix); err != nil {
		d.log.Warn("removing leftover checkpoint temporary files", "dir", dir, "err", err)
	} else if n > 0 {
		d.log.Info("removed leftover checkpoint temporary files", "dir", dir, "count", n)
	}
	prepared, note, err := d.ckpt.load()
	if err != nil {
		return err
	}
	if note != "" {
		d.log.Error(note)
	}
	d.stateMu.Lock()
	d.setPrepared(prepared)
	d.stateMu.Unlock()
	d.log.Info("loaded checkpoint", "path", d.ckpt.path, "claims", len(prepared))

	select {
	case <-ctx.Done():
		return nil
	case <-d.first:
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.mu.Lock()
	d.stop = cancel
	d.mu.Unlock()
	helper, err := kubeletplugin.Start(klog.NewContext(ctx, logr.FromSlogHandler(d.log.Handler())), d,
		kubeletplugin.DriverName(d.cfg.DriverName),
		kubeletplugin.NodeName(d.cfg.NodeName),
		kubeletplugin.KubeClient(d.cfg.Client),
		kubeletplugin.RegistrarDirectoryPath(d.cfg.RegistrarDir),
		kubeletplugin.PluginDataDirectoryPath(dir),
		kubeletplugin.GRPCInterceptor(d.observeRegistration),
	)
	if err != nil {
		return fmt.Errorf("starting the DRA kubelet plugin (registration socket %s, DRA socket %s): %w",
			d.cfg.RegistrationSocket(), d.cfg.DRASocket(), err)
	}
	// The first publication waits for the helper's informer to sync with
	// the API server, which may take long: Update must not wait for it
	// meanwhile, and what it brings is published right after.
	inv := d.hub.Current()
	if err := helper.PublishResources(ctx, inv.resources); err != nil {
		helper.Stop()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("publishing ResourceSlices: %w", err)
	}
	d.pubMu.Lock()
	d.helper = helper
	if cur := d.hub.Current(); cur != inv {
		err = helper.PublishResources(ctx, cur.resources)
	}
	d.pubMu.Unlock()
	if err != nil {
		helper.Stop()
		return fmt.Errorf("publishing ResourceSlices: %w", err)
	}
	d.log.Info("serving", "registration", d.cfg.RegistrationSocket(), "dra", d.cfg.DRASocket())

	var wg sync.WaitGroup
	wg.Go(func() { d.reconcileLoop(ctx) })
	d.reconcileSoon()
	<-ctx.Done()

	d.pubMu.Lock()
	d.helper = nil
	d.pubMu.Unlock()
	helper.Stop()
	wg.Wait()
	d.registered.Store(false)
	if fatal := (fatalError{}); errors.As(context.Cause(ctx), &fatal) {
		return fatal.error
	}
	return nil
}

// fatalError is a helper error that ends Run.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// HandleError hears the helper's background errors. Publishing errors are
// recoverable (the helper retries them): they are logged. Any other error
// means a gRPC server of the helper stopped: Run returns it, so the process
// exits and is restarted.
func (d *Driver) HandleError(_ context.Context, err error, msg string) {
	var dropped *resourceslice.DroppedFieldsError
	switch {
	case errors.As(err, &dropped):
		d.log.Error("the API server dropped fields of a ResourceSlice: the cluster lacks a feature this driver uses "+
			"(allowMultipleAllocations needs DRAConsumableCapacity: set --shared-dev-num 1 on such a cluster)",
			"features", dropped.DisabledFeatures(), "err", err)
	case errors.Is(err, kubeletplugin.ErrRecoverable):
		d.log.Error(msg, "err", err)
	default:
		d.log.Error(msg+"; stopping", "err", err)
		d.mu.Lock()
		stop := d.stop
		d.mu.Unlock()
		if stop != nil {
			stop(fatalError{fmt.Errorf("%s: %w", msg, err)})
		}
	}
}

// observeRegistration notes the kubelet's verdict on our registration, for
// Ready. The helper keeps it too, but unguarded.
func (d *Driver) observeRegistration(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if info.FullMethod == registerapi.Registration_NotifyRegistrationStatus_FullMethodName {
		if st, ok := req.(*registerapi.RegistrationStatus); ok {
			d.registered.Store(st.PluginRegistered)
			if st.PluginRegistered {
				d.log.Info("registered with the kubelet", "driver", d.cfg.DriverName)
			} else {
				d.log.Error("the kubelet refused the registration", "driver", d.cfg.DriverName, "err", st.Error)
			}
		}
	}
	return resp, err
}

// setPrepared installs a new set of prepared claims. Called with stateMu
// held.
func (d *Driver) setPrepared(cs claims) {
	d.prepared = cs
	names := map[string]string{}
	for _, c := range cs {
		for _, dev := range c.Devices {
			if dev.Pool == d.cfg.NodeName {
				names[dev.Device] = dev.PCIAddress
			}
		}
	}
	d.preparedNames.Store(&names)
}

// claimUIDs lists the UIDs of claims, for logs.
func claimUIDs(uids []types.UID) []string {
	out := make([]string, len(uids))
	for i, u := range uids {
		out[i] = string(u)
	}
	return out
}
