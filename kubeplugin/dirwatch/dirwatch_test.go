package dirwatch_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dirwatch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait: a deadline for a hang, not a timing.
const waitFor = 10 * time.Second

func newWatcher(t *testing.T) *dirwatch.Watcher {
	t.Helper()
	x, err := dirwatch.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func add(t *testing.T, f *dirwatch.Follower, p string) {
	t.Helper()
	if err := f.Add(p); err != nil {
		t.Fatal(err)
	}
}

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// collected is a follower read as the node and the device plugin read
// theirs: all the time, on a goroutine of its own, which ends when the
// Watcher closes.
type collected struct {
	f      *dirwatch.Follower
	events chan fsnotify.Event
}

func collect(f *dirwatch.Follower) *collected {
	c := &collected{f: f, events: make(chan fsnotify.Event, 1000)}
	go func() {
		for {
			select {
			case ev, ok := <-f.Events():
				if !ok {
					return
				}
				c.events <- ev
			case _, ok := <-f.Errors():
				if !ok {
					return
				}
			}
		}
	}()
	return c
}

// next returns the next event whose name is want, skipping others (a
// write follows a create).
func (c *collected) next(t *testing.T, want string) fsnotify.Event {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ev := <-c.events:
			if ev.Name == want {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event for %s", want)
		}
	}
}

// noneBefore reads the follower's events up to the one for marker, a
// file made in one of its own directories after the events named in
// names: the shared watcher delivers in order, so one of those handed to
// this follower would have come before the marker.
func (c *collected) noneBefore(t *testing.T, marker string, names ...string) {
	t.Helper()
	touch(t, marker)
	deadline := time.After(waitFor)
	for {
		select {
		case ev := <-c.events:
			if ev.Name == marker {
				return
			}
			for _, n := range names {
				if ev.Name == n {
					t.Errorf("got %v, which is not this follower's", ev)
				}
			}
		case <-deadline:
			t.Fatalf("no event for %s", marker)
		}
	}
}

func TestEachFollowerGetsTheEventsOfItsOwnDirectories(t *testing.T) {
	x := newWatcher(t)
	a, b := collect(x.Follow()), collect(x.Follow())
	dirA, dirB := t.TempDir(), t.TempDir()
	add(t, a.f, dirA)
	add(t, b.f, dirB)

	touch(t, filepath.Join(dirA, "one"))
	if ev := a.next(t, filepath.Join(dirA, "one")); !ev.Has(fsnotify.Create) {
		t.Errorf("first event %v, want a create", ev)
	}
	touch(t, filepath.Join(dirB, "two"))
	b.next(t, filepath.Join(dirB, "two"))
	a.noneBefore(t, filepath.Join(dirA, "mark"), filepath.Join(dirB, "two"))
	b.noneBefore(t, filepath.Join(dirB, "mark"), filepath.Join(dirA, "one"))
}

func TestTwoFollowersOfOneDirectoryBothSeeItUntilEachLetsGo(t *testing.T) {
	x := newWatcher(t)
	a, b := collect(x.Follow()), collect(x.Follow())
	dir, own := t.TempDir(), t.TempDir()
	add(t, a.f, dir)
	add(t, a.f, own)
	add(t, b.f, dir)
	touch(t, filepath.Join(dir, "one"))
	a.next(t, filepath.Join(dir, "one"))
	b.next(t, filepath.Join(dir, "one"))

	if err := a.f.Remove(dir); err != nil {
		t.Fatal(err)
	}
	touch(t, filepath.Join(dir, "two"))
	b.next(t, filepath.Join(dir, "two"))
	a.noneBefore(t, filepath.Join(own, "mark"), filepath.Join(dir, "two"))
	if err := a.f.Remove(dir); err == nil {
		t.Error("removing a path twice was no error")
	}
}

func TestADirectoryMadeAgainIsWatchedAgain(t *testing.T) {
	x := newWatcher(t)
	a, b := collect(x.Follow()), collect(x.Follow())
	parent := t.TempDir()
	dir := filepath.Join(parent, "dri")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	add(t, a.f, parent)
	add(t, a.f, dir)
	add(t, b.f, dir)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if ev := a.next(t, dir); !ev.Has(fsnotify.Remove) {
		t.Fatalf("%v, want the directory's removal", ev)
	}
	// The kernel dropped the watch with the directory; both followers
	// still hold the path, and the first to add it again watches it anew,
	// as the node does when its parent reports it.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for ev := a.next(t, dir); !ev.Has(fsnotify.Create); ev = a.next(t, dir) {
	}
	add(t, a.f, dir)
	touch(t, filepath.Join(dir, "card0"))
	a.next(t, filepath.Join(dir, "card0"))
	b.next(t, filepath.Join(dir, "card0"))
}

func TestAFollowerThatStopsReadingIsDroppedWhenItCloses(t *testing.T) {
	x := newWatcher(t)
	idle, busy := x.Follow(), collect(x.Follow())
	dir := t.TempDir()
	add(t, idle, dir)
	add(t, busy.f, dir)
	// idle never reads: once its queue is full the dispatcher waits on it
	// until it closes.
	for i := range 200 {
		touch(t, filepath.Join(dir, fmt.Sprint(i)))
	}
	idle.Close()
	busy.next(t, filepath.Join(dir, "199"))
	if err := idle.Add(dir); err == nil {
		t.Error("a closed follower could add a path")
	}
}

func TestClosingTheWatcherClosesEveryFollower(t *testing.T) {
	x, err := dirwatch.New()
	if err != nil {
		t.Fatal(err)
	}
	f := x.Follow()
	dir := t.TempDir()
	add(t, f, dir)
	// f does not read: Close must not wait for it.
	touch(t, filepath.Join(dir, "one"))
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if recvEvent(t, f) || recvErr(t, f) {
		t.Error("a channel is still open after Close")
	}
	late := x.Follow()
	if recvEvent(t, late) {
		t.Error("a follower of a closed watcher has an open channel")
	}
	if err := late.Add(t.TempDir()); err == nil {
		t.Error("a follower of a closed watcher could add a path")
	}
}

// recvEvent reports whether f's Events is still open once what was queued
// before the close is read.
func recvEvent(t *testing.T, f *dirwatch.Follower) bool {
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-f.Events():
			if !ok {
				return false
			}
		case <-deadline:
			t.Fatal("Events neither closed nor drained")
			return true
		}
	}
}

func recvErr(t *testing.T, f *dirwatch.Follower) bool {
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-f.Errors():
			if !ok {
				return false
			}
		case <-deadline:
			t.Fatal("Errors neither closed nor drained")
			return true
		}
	}
}
