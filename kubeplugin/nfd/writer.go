package nfd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/atomicfile"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// FileName is the feature file's name in the features directory.
const FileName = "intel-gpu-cdi"

// DefaultFeaturesDir is where nfd-worker reads feature files.
const DefaultFeaturesDir = "/etc/kubernetes/node-feature-discovery/features.d"

// tempPrefix starts the temporary files: NFD ignores dot files, so it
// never reads one half written.
const tempPrefix = "." + FileName + ".tmp-"

// Retry bounds after a failed write.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 30 * time.Second
)

// Writer keeps the feature file in step with the GPUs it is told about.
// Update is cheap and never touches the disk, so it can be the plugin's
// device callback; Run does the writing.
type Writer struct {
	dir  string
	path string
	log  *slog.Logger

	mu sync.Mutex
	// want is the file content to have; nil means no file.
	want []byte
	wake chan struct{}
}

// Option configures a Writer.
type Option func(*Writer)

// WithLogger sets where failed writes are reported.
func WithLogger(l *slog.Logger) Option { return func(w *Writer) { w.log = l } }

// New returns a writer for dir/intel-gpu-cdi, creating dir (0755) when it
// does not exist: NFD may be deployed after the plugin.
func New(dir string, opts ...Option) (*Writer, error) {
	if dir == "" {
		return nil, errors.New("features directory is empty")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating features directory: %w", err)
	}
	w := &Writer{
		dir:  dir,
		path: filepath.Join(dir, FileName),
		log:  slog.New(slog.DiscardHandler),
		wake: make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(w)
	}
	return w, nil
}

// Path is the feature file.
func (w *Writer) Path() string { return w.path }

// Update sets the GPUs the file describes: the plugin's whole list, usable
// or not (see Labels). It returns at once; Run writes.
func (w *Writer) Update(devs []discovery.Device) { w.set(Labels(devs)) }

func (w *Writer) set(labels []Label) {
	var want []byte
	if labels != nil {
		want = Render(labels)
	}
	w.mu.Lock()
	w.want = want
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes the file on every Update until ctx ends, then removes it: the
// labels describe what a running plugin serves. Before the first Update
// there is no file, so one left by a run that crashed does not linger on a
// node whose GPUs are gone. A failed write is logged and retried.
func (w *Writer) Run(ctx context.Context) {
	w.cleanTemp()
	var (
		have  []byte
		known bool // whether have is what the disk holds
		retry time.Duration
	)
	for {
		w.mu.Lock()
		want := w.want
		w.mu.Unlock()
		var due <-chan time.Time
		if !known || !bytes.Equal(want, have) {
			if err := w.sync(want); err != nil {
				retry = min(max(retry*2, retryMin), retryMax)
				w.log.Error("writing NFD feature file", "path", w.path, "retryIn", retry, "err", err)
				due = time.After(retry)
				known = false
			} else {
				have, known, retry = want, true, 0
			}
		}
		select {
		case <-ctx.Done():
			if err := w.sync(nil); err != nil {
				w.log.Error("removing NFD feature file", "path", w.path, "err", err)
			}
			return
		case <-w.wake:
		case <-due:
		}
	}
}

// sync makes the file hold data, or removes it when data is nil.
func (w *Writer) sync(data []byte) error {
	if data == nil {
		if err := os.Remove(w.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return atomicfile.Write(w.path, tempPrefix+"*", data, 0o644)
}

// cleanTemp removes temporary files a crashed run left behind.
func (w *Writer) cleanTemp() {
	if _, err := atomicfile.CleanTemp(w.dir, tempPrefix); err != nil {
		w.log.Warn("removing leftover temporary feature files", "dir", w.dir, "err", err)
	}
}

// Subscriber keeps the file describing every GPU a node lists, usable or
// not: subscribe it to the node.
func (w *Writer) Subscriber() node.Subscriber {
	return node.SubscriberFunc(func(_ context.Context, s *node.Snapshot) error {
		gpus := make([]GPU, len(s.GPUs))
		for i, g := range s.GPUs {
			gpus[i] = GPU{Device: g.Device}
			switch {
			case g.Healthy:
			case g.Health != nil:
				gpus[i].Unhealthy = g.Health.Reason
			default:
				gpus[i].Unhealthy = health.ReasonNotReady
			}
		}
		w.set(LabelsOf(gpus))
		return nil
	})
}
