// Package conflict keeps a node's GPUs from being served by two kubelet
// plugins at once. The device plugin and the DRA driver hand out the same
// GPUs; the kubelet would let both allocate them, and a GPU could then go
// to two containers that each think they own it. The manifests choose one
// per node (a node label); as a safety net each binary refuses to start
// where the other one's socket is live.
//
// The package imports no kubelet API, so the device plugin's binary can
// use it without linking the DRA driver's dependencies.
package conflict

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// DefaultDRADriverName is the DRA driver's default name, also that of
// Intel's own DRA driver: the device plugin looks for its registration
// socket.
const DefaultDRADriverName = "gpu.intel.com"

// RegistrationSocket is the name of a DRA driver's registration socket in
// the kubelet's plugins_registry directory.
func RegistrationSocket(driver string) string { return driver + "-reg.sock" }

// RegistryBeside returns the kubelet's plugins_registry directory next to
// its device-plugin directory: both live in the kubelet's default root
// directory (/var/lib/kubelet/device-plugins, /var/lib/kubelet/plugins_registry).
func RegistryBeside(devicePluginDir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(devicePluginDir)), "plugins_registry")
}

// DefaultRegistrarDir is the kubelet's plugins_registry directory with its
// default --root-dir: where DRA drivers register.
const DefaultRegistrarDir = "/var/lib/kubelet/plugins_registry"

// ErrServed is what Check's errors wrap.
var ErrServed = errors.New("another kubelet plugin already serves this node's GPUs")

// dialTimeout bounds the connection attempt to a socket. A live server
// accepts at once (the kernel completes a unix connect without the
// server's help until its backlog is full).
const dialTimeout = time.Second

// live reports whether a unix socket at path accepts a connection. A
// socket file left by a process that died refuses, and is not live.
func live(path string) bool {
	conn, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Check returns an error wrapping ErrServed, naming the socket and what
// serves it (other), when one of the named sockets in dir is live.
func Check(dir, other string, names ...string) error {
	for _, name := range names {
		p := filepath.Join(dir, name)
		if live(p) {
			return fmt.Errorf("%w: %s is live at %s; run either the device plugin or the DRA driver on a node, never both "+
				"(the manifests choose one per node by label)", ErrServed, other, p)
		}
	}
	return nil
}
