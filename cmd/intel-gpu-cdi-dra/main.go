// Command intel-gpu-cdi-dra is the Dynamic Resource Allocation kubelet
// plugin of intel-gpu-cdi: it publishes the node's Intel GPUs in
// ResourceSlices and answers the kubelet with CDI device names.
package main

import (
	"context"
	"os"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi-dra/app"
	cdiapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
)

func main() {
	os.Exit(cdiapp.Run(context.Background(), app.New(), os.Args, os.Stdout, os.Stderr))
}
