package fakenode

import (
	"context"
	"io"
	"sync"
)

// UeventFeed stands in for the kernel's uevent socket (a uevent.Conn):
// what a test sends is what the health monitor receives.
type UeventFeed struct {
	msgs   chan []byte
	closed chan struct{}
	once   sync.Once
}

// NewUeventFeed returns a feed with nothing sent yet.
func NewUeventFeed() *UeventFeed {
	return &UeventFeed{msgs: make(chan []byte), closed: make(chan struct{})}
}

// Send hands one message (as the node's event helpers build them) to the
// reader, waiting until it takes it or ctx ends.
func (f *UeventFeed) Send(ctx context.Context, msg []byte) error {
	select {
	case f.msgs <- msg:
		return nil
	case <-f.closed:
		return io.ErrClosedPipe
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Receive returns the next message sent.
func (f *UeventFeed) Receive(buf []byte) (int, error) {
	select {
	case m := <-f.msgs:
		return copy(buf, m), nil
	case <-f.closed:
		return 0, io.EOF
	}
}

// Close ends Receive.
func (f *UeventFeed) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}
