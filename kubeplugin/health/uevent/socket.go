package uevent

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// KernelGroup is the netlink multicast group the kernel sends uevents to.
// udev re-broadcasts on group 2; this package never listens there.
const KernelGroup = 1

// DefaultReceiveBuffer is the socket receive buffer asked for: a storm of
// add/remove events (a PCI rescan, hundreds of VFs enabled at once) queues
// a few thousand messages of about 1 KiB of kernel memory each before this
// process reads them. Only queued messages use the memory.
const DefaultReceiveBuffer = 16 << 20

// ErrOverflow reports that the kernel dropped messages because the receive
// buffer was full (ENOBUFS): whatever was lost must be found by reading
// sysfs again. The socket stays usable.
var ErrOverflow = errors.New("uevents lost: the socket's receive buffer overflowed")

// ErrForeign reports a message that was not sent by the kernel (a sender
// port other than 0). It was read and dropped; the socket stays usable.
var ErrForeign = errors.New("message not sent by the kernel")

// ErrTruncated reports a message longer than the buffer given to Receive.
// Its first len(buf) bytes are in buf; the socket stays usable.
var ErrTruncated = errors.New("message truncated")

// Conn is a source of kernel uevent messages: the netlink Socket, or a
// test's feed. Receive blocks for the next message; it returns ErrOverflow,
// ErrForeign or ErrTruncated for a message that must be skipped or a loss
// that must be made good, and any other error (io.EOF, os.ErrClosed) when
// the source is done. Close unblocks a pending Receive.
type Conn interface {
	Receive(buf []byte) (int, error)
	Close() error
}

// Socket is a NETLINK_KOBJECT_UEVENT socket bound to KernelGroup. A
// pending Receive waits in the Go runtime's poller, so an idle socket costs
// no CPU, and Close wakes it.
type Socket struct {
	f  *os.File
	rc syscall.RawConn
	// rcvbuf is the receive buffer the kernel granted, in bytes.
	rcvbuf int
	// closed is set by Close, so that a Receive it ends says so.
	closed atomic.Bool
}

var _ Conn = (*Socket)(nil)

// SocketOption configures Open.
type SocketOption func(*socketOptions)

type socketOptions struct{ rcvbuf int }

// WithReceiveBuffer asks for a receive buffer of n bytes (default
// DefaultReceiveBuffer). Without CAP_NET_ADMIN the kernel caps it at
// net.core.rmem_max.
func WithReceiveBuffer(n int) SocketOption { return func(o *socketOptions) { o.rcvbuf = n } }

// Open creates the socket and binds it to KernelGroup. It fails when the
// process may not create netlink sockets (seccomp, no AF_NETLINK); it
// succeeds but never receives anything in a network namespace the kernel
// does not send uevents to.
func Open(opts ...SocketOption) (*Socket, error) {
	o := socketOptions{rcvbuf: DefaultReceiveBuffer}
	for _, opt := range opts {
		opt(&o)
	}
	if o.rcvbuf <= 0 {
		return nil, fmt.Errorf("uevent socket: receive buffer %d is not positive", o.rcvbuf)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("opening NETLINK_KOBJECT_UEVENT socket: %w", err)
	}
	// FORCE passes rmem_max when the process has CAP_NET_ADMIN; without it
	// the plain option still gets as much as the sysctl allows.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.rcvbuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: KernelGroup}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding NETLINK_KOBJECT_UEVENT socket to group %d: %w", KernelGroup, err)
	}
	granted, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		granted = 0
	}
	// A non-blocking descriptor handed to os.NewFile joins the runtime
	// poller.
	f := os.NewFile(uintptr(fd), "NETLINK_KOBJECT_UEVENT")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	return &Socket{f: f, rc: rc, rcvbuf: granted}, nil
}

// ReceiveBuffer is the receive buffer the kernel granted, in bytes (it
// reports twice what was set, its bookkeeping included).
func (s *Socket) ReceiveBuffer() int { return s.rcvbuf }

// Receive reads one message into buf. See Conn for the errors.
func (s *Socket) Receive(buf []byte) (int, error) {
	var (
		n     int
		flags int
		from  unix.Sockaddr
		rerr  error
	)
	err := s.rc.Read(func(fd uintptr) bool {
		n, _, flags, from, rerr = unix.Recvmsg(int(fd), buf, nil, 0)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	})
	if err != nil {
		if s.closed.Load() {
			// The runtime's "use of closed file" is internal/poll's own
			// error, not os.ErrClosed, which Conn promises.
			err = os.ErrClosed
		}
		return 0, fmt.Errorf("receiving uevent: %w", err)
	}
	switch {
	case errors.Is(rerr, unix.ENOBUFS):
		return 0, ErrOverflow
	case rerr != nil:
		return 0, fmt.Errorf("receiving uevent: %w", rerr)
	}
	if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
		return 0, ErrForeign
	}
	if flags&unix.MSG_TRUNC != 0 {
		return n, ErrTruncated
	}
	return n, nil
}

// Close closes the socket and wakes a pending Receive, which then returns
// an error.
func (s *Socket) Close() error {
	s.closed.Store(true)
	return s.f.Close()
}

// uidMapFile is the calling process's user ID mapping.
const uidMapFile = "/proc/self/uid_map"

// ErrNotSentHere reports that the kernel does not send uevents to this
// process's network namespace: a socket would open and never hear a thing.
var ErrNotSentHere = errors.New("the kernel sends no uevents to this network namespace")

// KernelSendsHere reports whether the kernel sends its uevents to the
// caller's network namespace. It sends them to the namespaces owned by the
// initial user namespace only, and a process in another user namespace (a
// pod with hostUsers: false, a rootless container) is, short of setns
// tricks, in a network namespace of that user namespace: the test is
// whether the caller's user namespace is the initial one, whose uid_map is
// the identity over every ID ("0 0 4294967295").
func KernelSendsHere() (bool, error) {
	b, err := os.ReadFile(uidMapFile)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", uidMapFile, err)
	}
	return isInitialUIDMap(string(b)), nil
}

func isInitialUIDMap(s string) bool {
	f := strings.Fields(s)
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}
