package app

import (
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
)

// refuseBesideDRA stops `plugin` where a DRA driver for the same GPUs
// (ours or Intel's, both named gpu.intel.com) is registered with the
// kubelet: its registration socket in the kubelet's plugins_registry
// directory accepts connections.
func refuseBesideDRA(registrarDir string) error {
	return conflict.Check(registrarDir, "the DRA driver "+conflict.DefaultDRADriverName,
		conflict.RegistrationSocket(conflict.DefaultDRADriverName))
}
