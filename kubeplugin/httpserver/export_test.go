package httpserver

import "time"

// SetTimeouts shortens the request and shutdown timeouts for a test and
// returns what restores them.
func SetTimeouts(request, shutdown time.Duration) (restore func()) {
	r, s := requestTimeout, shutdownTimeout
	requestTimeout, shutdownTimeout = request, shutdown
	return func() { requestTimeout, shutdownTimeout = r, s }
}
