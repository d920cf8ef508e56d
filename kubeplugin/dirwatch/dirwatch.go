// Package dirwatch shares one fsnotify watcher among the parts of a
// process that follow directories (the node's /dev/dri, the device
// plugin's kubelet socket directory). fsnotify reads each of its watchers
// on a goroutine of its own with a 64 KiB buffer on that goroutine's
// stack, so every watcher costs a 128 KiB stack for as long as it runs:
// one per process instead of one per follower (BENCHMARKS.md, "At the
// floor").
package dirwatch

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"
)

// ErrClosed is returned by Add on a closed Watcher or Follower.
var ErrClosed = errors.New("directory watcher closed")

// Watcher is one fsnotify watcher and the followers it serves.
type Watcher struct {
	w *fsnotify.Watcher

	mu        sync.Mutex
	refs      map[string]int
	followers map[*Follower]struct{}
	closed    bool
	// closing ends a hand-over to a follower that does not read; done is
	// closed when the dispatcher has returned.
	closing chan struct{}
	done    chan struct{}
}

// New starts a Watcher. Close it when every follower is done.
func New() (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("creating file watcher: %w", err)
	}
	x := &Watcher{w: w, refs: map[string]int{}, followers: map[*Follower]struct{}{}, closing: make(chan struct{}), done: make(chan struct{})}
	go x.dispatch()
	return x, nil
}

// Close stops the watcher: every follower's channels are closed.
func (x *Watcher) Close() error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return nil
	}
	x.closed = true
	x.mu.Unlock()
	close(x.closing)
	err := x.w.Close()
	<-x.done
	return err
}

// Follower sees the events of the paths it added, and every error. It
// must read both channels until it closes: the events of every follower
// come through one dispatcher, which waits for each in turn, as
// fsnotify's own channels wait for their one reader.
type Follower struct {
	x      *Watcher
	events chan fsnotify.Event
	errors chan error
	stop   chan struct{}
	// paths and closed are guarded by x.mu.
	paths  map[string]bool
	closed bool
}

// queue is how many events wait for a follower: a busy parent directory
// (the kubelet socket directory's) reports every entry made in it, and a
// hand-over per event would make the dispatcher wait on the follower's
// goroutine for each.
const queue = 64

// Follow returns a new follower of x.
func (x *Watcher) Follow() *Follower {
	f := &Follower{x: x, events: make(chan fsnotify.Event, queue), errors: make(chan error, 1), stop: make(chan struct{}), paths: map[string]bool{}}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		close(f.events)
		close(f.errors)
		f.closed = true
		return f
	}
	x.followers[f] = struct{}{}
	return f
}

// Events delivers the events of the paths added, as fsnotify.Watcher's
// Events does: an entry of an added directory, or the directory itself.
// It is closed when the Watcher is.
func (f *Follower) Events() <-chan fsnotify.Event { return f.events }

// Errors delivers every error of the Watcher (such as an overflow, which
// loses events of any path). It is closed when the Watcher is.
func (f *Follower) Errors() <-chan error { return f.errors }

// Add watches path for this follower. It is added to the shared watcher
// again even when another follower has it: the kernel drops the watch of a
// removed directory, and a directory made again must be watched anew.
func (f *Follower) Add(path string) error {
	path = filepath.Clean(path)
	x := f.x
	x.mu.Lock()
	defer x.mu.Unlock()
	if f.closed || x.closed {
		return ErrClosed
	}
	if err := x.w.Add(path); err != nil {
		return err
	}
	if !f.paths[path] {
		f.paths[path] = true
		x.refs[path]++
	}
	return nil
}

// Remove stops watching path for this follower; the shared watch goes
// when no follower has it.
func (f *Follower) Remove(path string) error {
	path = filepath.Clean(path)
	x := f.x
	x.mu.Lock()
	defer x.mu.Unlock()
	if !f.paths[path] {
		return fmt.Errorf("%s: %w", path, fsnotify.ErrNonExistentWatch)
	}
	delete(f.paths, path)
	return x.release(path)
}

// release drops one reference to path. Called with x.mu held.
func (x *Watcher) release(path string) error {
	x.refs[path]--
	if x.refs[path] > 0 {
		return nil
	}
	delete(x.refs, path)
	if x.closed {
		return nil
	}
	return x.w.Remove(path)
}

// Close ends the follower: its paths are released and nothing more is
// delivered to it; an event being handed to it is dropped. Its channels
// stay open (a send to them may be under way), and are collected with it.
func (f *Follower) Close() {
	x := f.x
	x.mu.Lock()
	defer x.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	close(f.stop)
	for p := range f.paths {
		_ = x.release(p)
	}
	delete(x.followers, f)
}

// dispatch hands each event to the followers of its path and each error
// to every follower, until the fsnotify watcher closes.
func (x *Watcher) dispatch() {
	defer close(x.done)
	defer func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		for f := range x.followers {
			f.closed = true
			close(f.events)
			close(f.errors)
		}
		x.followers = nil
	}()
	var to []*Follower
	for {
		select {
		case ev, ok := <-x.w.Events:
			if !ok {
				return
			}
			dir := filepath.Dir(ev.Name)
			to = x.targets(to[:0], func(f *Follower) bool { return f.paths[ev.Name] || f.paths[dir] })
			for _, f := range to {
				select {
				case f.events <- ev:
				case <-f.stop:
				case <-x.closing:
				}
			}
		case err, ok := <-x.w.Errors:
			if !ok {
				return
			}
			to = x.targets(to[:0], func(*Follower) bool { return true })
			for _, f := range to {
				select {
				case f.errors <- err:
				case <-f.stop:
				case <-x.closing:
				}
			}
		}
	}
}

// targets appends to out the followers that want an event.
func (x *Watcher) targets(out []*Follower, wants func(*Follower) bool) []*Follower {
	x.mu.Lock()
	defer x.mu.Unlock()
	for f := range x.followers {
		if wants(f) {
			out = append(out, f)
		}
	}
	return out
}
