package bench

// The test binary accepts -update, so that go test ./... -args -update,
// which rewrites the golden specs, runs here too.
import _ "github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
