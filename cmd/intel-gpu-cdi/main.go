// Command intel-gpu-cdi makes Intel GPUs usable from containers through the
// Container Device Interface: it writes CDI specs and serves the kubelet.
package main

import (
	"context"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi/app"
)

// extra holds commands that build variants add (see combined_dra.go).
var extra []*cli.Command

func main() {
	os.Exit(app.Main(context.Background(), os.Args, os.Stdout, os.Stderr, extra...))
}
