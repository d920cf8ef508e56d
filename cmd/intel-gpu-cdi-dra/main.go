// Command intel-gpu-cdi-dra is the Dynamic Resource Allocation kubelet
// plugin of intel-gpu-cdi: it publishes the node's Intel GPUs in
// ResourceSlices and answers the kubelet with CDI device names.
package main

import (
	"fmt"
	"os"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi-dra/app"
)

func main() {
	if err := app.New().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", app.Name, err)
		os.Exit(1)
	}
}
