// Package reliability_test proves the plugin under faults: atomic specs
// while readers read and writers die, kubelet restarts, hostile sysfs,
// concurrent Allocates while GPUs come and go, bad flags and a spec
// directory that cannot be written. See BENCHMARKS.md, "Reliability".
package reliability_test

import (
	"fmt"
	"os"
	"testing"
)

// writerEnv switches the test binary into the spec writer that
// TestSpecWriterKilledMidWrite kills: its value is the spec path, and
// writerVariantsEnv the directory of encoded specs it writes in turn.
const (
	writerEnv         = "RELIABILITY_SPEC_WRITER"
	writerVariantsEnv = "RELIABILITY_SPEC_VARIANTS"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(writerEnv); path != "" {
		if err := runSpecWriter(path, os.Getenv(writerVariantsEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "spec writer:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
