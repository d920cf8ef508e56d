// Package latest holds the newest of a series of values, such as the
// inventory a kubelet plugin serves, and lets readers wait for the next
// one without polling.
package latest

import "sync"

// Value is the newest published value of type T. The zero Value is not
// usable: make one with New. It is safe for concurrent use.
type Value[T any] struct {
	mu      sync.Mutex
	v       T
	changed chan struct{}
}

// New returns a Value that holds v until the first Publish.
func New[T any](v T) *Value[T] {
	return &Value[T]{v: v, changed: make(chan struct{})}
}

// Load returns the current value and a channel that is closed when a newer
// one is published.
func (l *Value[T]) Load() (T, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v, l.changed
}

// Current returns the current value.
func (l *Value[T]) Current() T {
	v, _ := l.Load()
	return v
}

// Publish makes v the current value and wakes every reader waiting on a
// channel from Load.
func (l *Value[T]) Publish(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v = v
	close(l.changed)
	l.changed = make(chan struct{})
}
