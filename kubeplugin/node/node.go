package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/retry"
)

// allDevice is the spec's device that holds every GPU.
const allDevice = spec.AllDevice

// maxCoalesce bounds how long a stream of events can hold a rescan back:
// a device that keeps changing is still rescanned this often.
const maxCoalesce = 50 * time.Millisecond

// Subscriber is told of every new snapshot. Update is called on the node's
// goroutine, in order, after the spec holding the snapshot's healthy GPUs
// is on disk and before GPUs that left are trimmed from it, so a
// subscriber that advertises what it is given never advertises a GPU
// without its spec. It must not block for long. An error makes the node
// call it again, with the then current snapshot, after a backoff.
type Subscriber interface {
	Update(ctx context.Context, s *Snapshot) error
}

// SubscriberFunc adapts a function to a Subscriber.
type SubscriberFunc func(ctx context.Context, s *Snapshot) error

// Update calls f.
func (f SubscriberFunc) Update(ctx context.Context, s *Snapshot) error { return f(ctx, s) }

// Node keeps the node's GPUs, their CDI spec and the subscribers current.
type Node struct {
	cfg      Config
	specPath string

	mu   sync.Mutex
	subs []Subscriber

	snap atomic.Pointer[Snapshot]
	// ready is set after the first rescan that put its snapshot on disk
	// and reached every subscriber.
	ready atomic.Bool
	// ping carries liveness checks into the loop.
	ping chan chan struct{}

	// Owned by the loop goroutine.
	written *[sha256.Size]byte // the digest of the spec we last wrote; nil when none
	// owned is set once the spec's path was found to hold nothing or a
	// spec of ours (claim).
	owned bool
	retry *retry.Retry

	view devView
}

// New checks cfg and returns a node ready to Run.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.normalized()
	n := &Node{
		cfg:      cfg,
		specPath: filepath.Join(cfg.CDISpecDir, cfg.Builder.FileName()+".json"),
		ping:     make(chan chan struct{}),
		retry:    retry.New(retry.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: 30 * time.Second}),
		view:     newDevView(cfg.Scanner.DevRoot()),
	}
	n.snap.Store(&Snapshot{AllCDIName: cfg.Builder.QualifiedName(allDevice)})
	return n, nil
}

// Subscribe adds a subscriber. Subscribers added before Run see the first
// snapshot; one added later sees the next change.
func (n *Node) Subscribe(s Subscriber) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.subs = append(n.subs, s)
}

// SpecPath is where the node keeps its CDI spec.
func (n *Node) SpecPath() string { return n.specPath }

// Snapshot returns the current snapshot; before the first rescan it holds
// no GPU.
func (n *Node) Snapshot() *Snapshot { return n.snap.Load() }

// Ready reports whether the node has published its first snapshot, with
// its spec on disk, to every subscriber.
func (n *Node) Ready() error {
	if !n.ready.Load() {
		return errors.New("node: first scan not yet on disk and published")
	}
	return nil
}

// Live reports whether the node's loop answers and still sees the host's
// /dev/dri. It returns an error when ctx ends first or when the view went
// stale (see devWatch.stale).
func (n *Node) Live(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case n.ping <- done:
	case <-ctx.Done():
		return fmt.Errorf("node: loop did not answer: %w", ctx.Err())
	}
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("node: loop did not answer: %w", ctx.Err())
	}
	if why := n.view.stale(); why != "" {
		return errors.New("node: " + why)
	}
	return nil
}

// Run keeps the node current until ctx ends. It returns an error only when
// it cannot start at all (no way to watch the node, or a spec path that
// holds something not ours); a bad device or a failed spec write is logged
// and retried, never fatal. On return the spec is left in place for
// running containers.
func (n *Node) Run(ctx context.Context) error {
	log := n.cfg.Logger
	if k, err := spec.CleanTemp(n.cfg.CDISpecDir); err != nil {
		log.Warn("cleaning leftover temporary specs", "dir", n.cfg.CDISpecDir, "err", err)
	} else if k > 0 {
		log.Info("removed leftover temporary specs", "dir", n.cfg.CDISpecDir, "count", k)
	}
	n.removeOtherEncoding()

	w, err := newDevWatch(n.cfg.Scanner.DevRoot(), n.cfg.Watcher, log)
	if err != nil {
		return err
	}
	defer w.close()

	// The first write checks what holds the spec's path (claim): a
	// refusal there stops the node, at whichever rescan it comes.
	if err := n.rescan(ctx); err != nil {
		return err
	}

	var resync <-chan time.Time
	if n.cfg.ResyncPeriod > 0 {
		t := time.NewTicker(n.cfg.ResyncPeriod)
		defer t.Stop()
		resync = t.C
	}
	var healthChanged <-chan struct{}
	if n.cfg.Health != nil {
		healthChanged = n.cfg.Health.Changed()
	}
	var (
		debounce = time.NewTimer(time.Hour)
		first    time.Time // first event of the burst being collected
	)
	debounce.Stop()
	defer debounce.Stop()
	// collect waits for the rest of a burst: each event restarts the quiet
	// period, but no burst holds the rescan back longer than maxCoalesce.
	collect := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		debounce.Reset(min(n.cfg.Debounce, max(0, maxCoalesce-now.Sub(first))))
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case done := <-n.ping:
			close(done)
		case ev, ok := <-w.events():
			if !ok {
				return errors.New("watching /dev/dri: watcher closed")
			}
			if w.handle(ev) {
				collect()
			}
		case err, ok := <-w.errors():
			if !ok {
				return errors.New("watching /dev/dri: watcher closed")
			}
			// An overflow loses events: rescan to catch up.
			log.Warn("file watcher error; rescanning", "err", err)
			collect()
		case <-debounce.C:
			first = time.Time{}
			err = n.rescan(ctx)
		case <-healthChanged:
			// The kernel spoke of a GPU: no burst to wait for.
			err = n.rescan(ctx)
		case <-resync:
			err = n.rescan(ctx)
		case <-n.retry.After():
			err = n.rescan(ctx)
		}
		if err != nil {
			return err
		}
	}
}

// rescan reads the node and moves the spec and the subscribers to it, in
// the order that never advertises a GPU without its spec on disk: first
// the spec with the old and new GPUs, then the subscribers, then the spec
// with only the new GPUs. It returns an error only when the spec's path
// holds something not ours (claim); everything else is retried.
func (n *Node) rescan(ctx context.Context) error {
	log, obs := n.cfg.Logger, n.cfg.Observer
	start := time.Now()
	res, err := n.cfg.Scanner.Scan()
	if err != nil {
		obs.Rescan(time.Since(start), err)
		log.Error("scanning GPUs", "err", err)
		n.retry.Failed()
		return nil
	}
	for _, s := range res.Skipped {
		log.Warn("skipped DRM card", "card", s.Name, "reason", s.Reason)
	}
	var statuses []health.Status
	if n.cfg.Health != nil {
		statuses = n.cfg.Health.Check(res.Devices)
	}
	prev := n.snap.Load()
	next := build(res.Devices, statuses, prev, &n.cfg, n.pciGone, n.cfg.Builder.QualifiedName)
	if prev.Generation > 0 && sameGPUs(prev, next) && n.specCurrent() && !n.retry.Pending() {
		obs.Rescan(time.Since(start), nil)
		return nil
	}

	only := next.specDevices()
	both := union(only, prev)
	err = n.writeSpec(both)
	var refused *refusedError
	if errors.As(err, &refused) {
		obs.Rescan(time.Since(start), err)
		return fmt.Errorf("CDI spec: %w", refused.error)
	}
	if err != nil {
		obs.Rescan(time.Since(start), err)
		log.Error("writing CDI spec; keeping the previous snapshot", "path", n.specPath, "err", err)
		n.retry.Failed()
		return nil
	}
	n.snap.Store(next)
	failed := n.publish(ctx, next)
	// union holds next's GPUs and those leaving; with none leaving the
	// spec is already exactly next's, and building it again is waste.
	if len(both) != len(only) {
		err = n.writeSpec(only)
	}
	switch {
	case err != nil:
		// The spec on disk still holds every advertised GPU; only GPUs
		// that just left linger in it until the retry.
		log.Error("trimming CDI spec", "path", n.specPath, "err", err)
		n.retry.Failed()
	case failed:
		n.retry.Failed()
	default:
		n.retry.Reset()
		n.ready.Store(true)
	}
	obs.Rescan(time.Since(start), err)
	return nil
}

// publish hands the snapshot to every subscriber and reports whether one
// of them failed.
func (n *Node) publish(ctx context.Context, s *Snapshot) bool {
	n.mu.Lock()
	subs := append([]Subscriber(nil), n.subs...)
	n.mu.Unlock()
	failed := false
	for _, sub := range subs {
		if err := sub.Update(ctx, s); err != nil {
			n.cfg.Logger.Error("a subscriber could not take the new GPU state; retrying", "subscriber", fmt.Sprintf("%T", sub), "err", err)
			failed = true
		}
	}
	return failed
}

// pciGone reports whether a PCI function left the bus.
func (n *Node) pciGone(pci string) bool {
	_, err := os.Stat(filepath.Join(n.cfg.Scanner.SysfsRoot(), "bus", "pci", "devices", pci))
	return errors.Is(err, fs.ErrNotExist)
}

// specCurrent reports whether the spec we last wrote is still on disk (a
// reboot empties /var/run/cdi; an admin may remove the file).
func (n *Node) specCurrent() bool {
	if n.written == nil {
		return true
	}
	_, err := os.Stat(n.specPath)
	return err == nil
}

// writeSpec makes the spec on disk hold exactly devs, writing only when
// that changes what is there. With no device the spec is removed: a CDI
// spec must have one.
func (n *Node) writeSpec(devs []discovery.Device) error {
	obs := n.cfg.Observer
	if len(devs) == 0 {
		if _, err := spec.RemoveStale(n.specPath, n.cfg.Builder.Kind()); err != nil {
			obs.SpecWrite(err)
			if !n.owned && errors.Is(err, spec.ErrNotOwned) {
				return &refusedError{err}
			}
			return err
		}
		n.owned, n.written = true, nil
		return nil
	}
	s, err := n.cfg.Builder.Build(devs)
	if err != nil {
		return err
	}
	// A digest, not the bytes: they would stay live as long as the spec
	// does not change, which on a node is for ever. The spec is encoded
	// into the digest and, when it changed, again into the file, never
	// whole in memory.
	h := sha256.New()
	if err := spec.Encode(h, s, spec.FormatJSON); err != nil {
		return err
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if !n.owned {
		if err := n.claim(sum); err != nil {
			obs.SpecWrite(err)
			return err
		}
	}
	if n.written != nil && *n.written == sum {
		if _, err := os.Stat(n.specPath); err == nil {
			return nil
		}
	}
	if err := n.stillOurs(); err != nil {
		obs.SpecWrite(err)
		return err
	}
	err = spec.WriteEncodedFrom(n.specPath, func(w io.Writer) error { return spec.Encode(w, s, spec.FormatJSON) })
	obs.SpecWrite(err)
	if err != nil {
		return err
	}
	n.written = &sum
	return nil
}

// refusedError is claim's refusal of what holds the spec's path.
type refusedError struct{ error }

func (e *refusedError) Unwrap() error { return e.error }

// claim checks, at the first write, what the spec is replaced by renaming
// over: the path must hold nothing or a spec of ours. A file that is byte
// for byte the spec about to be written is ours without parsing it, and is
// kept: that is a plugin restarted on an unchanged node, the usual case,
// since /var/run/cdi outlives the pod, and the CDI library's parser
// allocated about 1.7 MB for the spec of 64 GPUs, which stayed resident
// (3 MiB more RSS after a restart; BENCHMARKS.md, "At the floor").
// Anything else goes through spec.CheckOwner.
func (n *Node) claim(sum [sha256.Size]byte) error {
	if sameFile(n.specPath, sum) {
		n.owned, n.written = true, &sum
		return nil
	}
	if _, err := spec.CheckOwner(n.specPath, n.cfg.Builder.Kind()); err != nil {
		return &refusedError{err}
	}
	n.owned = true
	return nil
}

// sameFile reports whether path is a regular file, readable by every
// runtime (spec.Mode), whose content has the digest sum. It reads through
// a small buffer: the spec is never in memory whole.
func sameFile(path string, sum [sha256.Size]byte) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != spec.Mode {
		return false
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.LimitReader(f, fi.Size()+1), make([]byte, 4<<10)); err != nil {
		return false
	}
	var got [sha256.Size]byte
	h.Sum(got[:0])
	return got == sum
}

// stillOurs checks, cheaply, that nothing but a regular file took the
// spec's path since claim checked it at the first write.
func (n *Node) stillOurs() error {
	fi, err := os.Lstat(n.specPath)
	if err != nil || fi.Mode().IsRegular() {
		return nil
	}
	_, err = spec.CheckOwner(n.specPath, n.cfg.Builder.Kind())
	return err
}

// removeOtherEncoding removes our own spec written under the other
// extension (by an older run or by `generate`): two files with the same
// device names make runtimes drop those devices.
func (n *Node) removeOtherEncoding() {
	other := filepath.Join(n.cfg.CDISpecDir, n.cfg.Builder.FileName()+".yaml")
	removed, err := spec.RemoveStale(other, n.cfg.Builder.Kind())
	switch {
	case err != nil:
		n.cfg.Logger.Warn("a spec of another owner may conflict with ours", "path", other, "err", err)
	case removed:
		n.cfg.Logger.Info("removed our spec in the other encoding", "path", other)
	}
}
