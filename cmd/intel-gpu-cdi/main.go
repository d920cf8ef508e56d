// Command intel-gpu-cdi makes Intel GPUs usable from containers through the
// Container Device Interface: it writes CDI specs and serves the kubelet.
package main

import (
	"context"
	"os"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
)

func main() {
	os.Exit(app.Main(context.Background(), os.Args, os.Stdout, os.Stderr))
}
