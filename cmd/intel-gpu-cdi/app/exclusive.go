package app

import (
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
)

// refuseBesideDRA stops `plugin` where a DRA driver for the same GPUs
// (ours or Intel's, both named gpu.intel.com) is registered with the
// kubelet: its registration socket, in the plugins_registry directory next
// to the device-plugin directory, accepts connections.
func refuseBesideDRA(kubeletSocketDir string) error {
	return conflict.Check(conflict.RegistryBeside(kubeletSocketDir), "the DRA driver "+conflict.DefaultDRADriverName,
		conflict.RegistrationSocket(conflict.DefaultDRADriverName))
}
