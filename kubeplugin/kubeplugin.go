// Package kubeplugin is the kubelet side of intel-gpu-cdi. Its sub-packages:
//
//   - node: the node model. It reads the GPUs (discovery), keeps the node's
//     CDI spec on disk, watches /dev/dri, and publishes immutable snapshots
//     to whoever subscribes. It imports no adapter.
//   - deviceplugin: the kubelet device plugin (v1beta1 gRPC), a subscriber.
//   - dra: the Dynamic Resource Allocation kubelet plugin, a subscriber.
//   - conflict: each plugin refuses to start where the other one serves.
//   - metrics, nfd, probe: observers and endpoints the command wires in.
//   - health: GPU health from kernel uevents and sysfs, fed to node.
//   - dirwatch, httpserver, latest, retry: small helpers both plugins
//     use (one directory watcher, the probe and metrics responder, the
//     newest inventory with a wake-up, one backoff).
//
// This package holds what they share: the error a configuration check
// returns, and the bound on a socket path.
package kubeplugin

import (
	"errors"
	"fmt"
)

// MaxSocketPathLen is the longest path a unix socket address holds: 108
// bytes with the terminating NUL.
const MaxSocketPathLen = 107

// FieldError is a configuration field whose value cannot be used. Each
// configuration checks its own fields once, where it is defined, and names
// the field; the command maps the field to the flag that set it.
type FieldError struct {
	// Field is the Go field name, such as "SharedDevNum".
	Field string
	// With, when set, is another field that conflicts with Field.
	With string
	// Reason quotes the value and says what is wrong with it and, where
	// useful, what would be right: "0 is not between 1 and 1024".
	Reason string
}

func (e *FieldError) Error() string {
	if e.With != "" {
		return e.Field + " and " + e.With + ": " + e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Invalid returns a *FieldError.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Conflict returns a *FieldError for two fields that cannot be set together.
func Conflict(field, with, format string, args ...any) error {
	return &FieldError{Field: field, With: with, Reason: fmt.Sprintf(format, args...)}
}

// AsFieldError finds a *FieldError in err's chain.
func AsFieldError(err error) (*FieldError, bool) {
	var fe *FieldError
	ok := errors.As(err, &fe)
	return fe, ok
}
