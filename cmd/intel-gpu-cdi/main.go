// Command intel-gpu-cdi makes Intel GPUs usable from containers through the
// Container Device Interface: it writes CDI specs and serves the kubelet.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
)

// extra holds commands that build variants add (see combined_dra.go).
var extra []*cli.Command

func main() {
	if err := app.New(extra...).Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "intel-gpu-cdi: %v\n", err)
		os.Exit(1)
	}
}
