// Package retry is the one way the kubelet plugins retry what failed: an
// exponential backoff either driven by an event loop (Retry) or run to
// success (Until).
package retry

import (
	"context"
	"time"
)

// Backoff is an exponential backoff: the first wait is Duration, and each
// next one is Factor times the last, up to Cap (no cap when 0). A Factor
// of 0 or 1 waits Duration every time. Its fields are those of
// k8s.io/apimachinery's wait.Backoff that the plugins use; the device
// plugin's binary does without that module, whose klog this would link.
type Backoff struct {
	Duration time.Duration
	Factor   float64
	Cap      time.Duration
}

// Step returns the wait before the next attempt and moves b on.
func (b *Backoff) Step() time.Duration {
	d := b.Duration
	if b.Factor > 1 && (b.Cap <= 0 || b.Duration < b.Cap) {
		b.Duration = time.Duration(float64(b.Duration) * b.Factor)
		if b.Cap > 0 && b.Duration > b.Cap {
			b.Duration = b.Cap
		}
	}
	return d
}

// Retry schedules the next attempt of something an event loop retries:
// the loop selects on After, makes the attempt, and calls Reset when it
// succeeded or Failed when it did not. It is owned by one goroutine.
type Retry struct {
	initial Backoff
	cur     Backoff
	timer   *time.Timer
	at      time.Time
}

// New returns a Retry that waits b.Duration after the first failure and
// grows by b.Factor up to b.Cap.
func New(b Backoff) *Retry {
	return &Retry{initial: b, cur: b}
}

// Failed schedules the next attempt and returns how long until it. While
// an attempt is scheduled in the future, a failure keeps that time, so
// that events waking the loop meanwhile do not push the retry back; once
// it is due, the next failure waits longer.
func (r *Retry) Failed() time.Duration {
	now := time.Now()
	if r.timer != nil && now.Before(r.at) {
		return r.at.Sub(now)
	}
	d := r.cur.Step()
	r.at = now.Add(d)
	if r.timer == nil {
		r.timer = time.NewTimer(d)
	} else {
		r.timer.Reset(d)
	}
	return d
}

// Reset forgets the failures: nothing is scheduled, and the next failure
// waits the initial duration.
func (r *Retry) Reset() {
	r.cur = r.initial
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

// Pending reports whether a failure is waiting for its retry.
func (r *Retry) Pending() bool { return r.timer != nil }

// After returns a channel that fires when the scheduled attempt is due,
// and nil (never fires) when none is.
func (r *Retry) After() <-chan time.Time {
	if r.timer == nil {
		return nil
	}
	return r.timer.C
}

// Until calls f until it returns nil or ctx ends, waiting per b between
// attempts; onErr, when not nil, hears each failure and the wait before the
// next attempt. It returns ctx's error when ctx ends first.
func Until(ctx context.Context, b Backoff, f func() error, onErr func(err error, next time.Duration)) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := b.Step()
		if onErr != nil {
			onErr(err, d)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
