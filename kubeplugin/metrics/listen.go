package metrics

import (
	"net/http"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/httpserver"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Listen binds addr (host:port, such as ":9400") to serve h at Path.
func Listen(addr string, h http.Handler) (*httpserver.Server, error) {
	return httpserver.Listen("metrics", addr, map[string]http.Handler{Path: h})
}
