package bench

import (
	"slices"
	"testing"
	"time"
)

// ReportLatencies adds p50 and p99 of the samples, in units of scale, to
// an in-process benchmark's output as p50-<unit> and p99-<unit>. It sorts
// samples.
func ReportLatencies(b *testing.B, samples []time.Duration, unit string, scale time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	pct := func(p float64) float64 {
		return float64(samples[int(p*float64(len(samples)-1))]) / float64(scale)
	}
	b.ReportMetric(pct(0.50), "p50-"+unit)
	b.ReportMetric(pct(0.99), "p99-"+unit)
}
