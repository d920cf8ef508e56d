//go:build dra_combined

package main

// The DRA driver as `intel-gpu-cdi dra`, in a build that is only measured
// against the two binaries we ship (BENCHMARKS.md, "One binary or two"):
//
//	go build -tags dra_combined ./cmd/intel-gpu-cdi

import draapp "github.com/intel-gpu-cdi/intel-gpu-cdi/cmd/intel-gpu-cdi-dra/app"

func init() { extra = append(extra, draapp.Command()) }
