// Package probe answers the kubelet's liveness and readiness probes over
// HTTP: GET /healthz is 200 while every liveness check passes, GET /readyz
// while every readiness check passes, and 503 with the failures otherwise.
package probe

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/httpserver"
)

// Paths of the probes.
const (
	LivePath  = "/healthz"
	ReadyPath = "/readyz"
)

// Timeout bounds one liveness check: a loop that does not answer within it
// is stuck.
const Timeout = 2 * time.Second

// Check is one component's probe answers; either may be nil.
type Check struct {
	// Name says whose answer it is in a failure message.
	Name string
	// Live returns an error when the component is stuck or can no longer
	// do its job without a restart.
	Live func(ctx context.Context) error
	// Ready returns an error while the component cannot serve yet.
	Ready func() error
}

// Handler serves LivePath and ReadyPath from the checks.
func Handler(checks ...Check) map[string]http.Handler {
	return map[string]http.Handler{
		LivePath: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), Timeout)
			defer cancel()
			answer(w, checks, func(c Check) error {
				if c.Live == nil {
					return nil
				}
				return c.Live(ctx)
			})
		}),
		ReadyPath: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			answer(w, checks, func(c Check) error {
				if c.Ready == nil {
					return nil
				}
				return c.Ready()
			})
		}),
	}
}

func answer(w http.ResponseWriter, checks []Check, run func(Check) error) {
	var failed []string
	for _, c := range checks {
		if err := run(c); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", c.Name, err))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(failed, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

// Listen binds addr (host:port, such as ":8081") for the probes.
func Listen(addr string, checks ...Check) (*httpserver.Server, error) {
	return httpserver.Listen("probes", addr, Handler(checks...))
}
