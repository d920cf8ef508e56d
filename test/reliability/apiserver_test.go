package reliability_test

import (
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/apiserver"
)

// startAPIServer is an etcd and a kube-apiserver of the versions
// test/cluster pins (test/apiserver), until the test ends.
func startAPIServer(t testing.TB) *apiserver.Server { return apiserver.Start(t) }
