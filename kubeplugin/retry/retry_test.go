package retry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFailedGrowsTheWaitUpToTheCapAndResetStartsOver(t *testing.T) {
	r := New(Backoff{Duration: time.Millisecond, Factor: 2, Cap: 4 * time.Millisecond})
	assert.Nil(t, r.After(), "nothing scheduled")
	assert.False(t, r.Pending())
	var got []time.Duration
	for range 5 {
		got = append(got, r.Failed())
		<-r.After() // the attempt is due: the next failure waits longer
	}
	assert.Equal(t, []time.Duration{1, 2, 4, 4, 4}, scale(got, time.Millisecond))
	assert.True(t, r.Pending())
	r.Reset()
	assert.False(t, r.Pending())
	assert.Nil(t, r.After())
	assert.Equal(t, time.Millisecond, r.Failed())
}

func TestAFailureBeforeTheRetryIsDueKeepsItsTime(t *testing.T) {
	r := New(Backoff{Duration: time.Hour, Factor: 2})
	first := r.Failed()
	second := r.Failed()
	assert.Equal(t, time.Hour, first)
	assert.LessOrEqual(t, second, time.Hour, "an event that woke the loop does not push the retry back")
	r.Reset()
}

func scale(ds []time.Duration, unit time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d / unit
	}
	return out
}

func TestUntilRetriesUntilSuccess(t *testing.T) {
	calls := 0
	var waits []time.Duration
	err := Until(context.Background(), Backoff{Duration: time.Microsecond, Factor: 2}, func() error {
		calls++
		if calls < 4 {
			return errors.New("not yet")
		}
		return nil
	}, func(err error, next time.Duration) { waits = append(waits, next) })
	require.NoError(t, err)
	assert.Equal(t, 4, calls)
	assert.Equal(t, []time.Duration{time.Microsecond, 2 * time.Microsecond, 4 * time.Microsecond}, waits)
}

func TestUntilStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Until(ctx, Backoff{Duration: time.Hour}, func() error {
		calls++
		cancel()
		return errors.New("refused")
	}, nil)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, calls)
}

func TestBackoffStepsGrowByTheFactorUpToTheCap(t *testing.T) {
	tests := []struct {
		name string
		b    Backoff
		want []time.Duration
	}{
		{"doubling, capped", Backoff{Duration: 5, Factor: 2, Cap: 30}, []time.Duration{5, 10, 20, 30, 30}},
		{"doubling, no cap", Backoff{Duration: 5, Factor: 2}, []time.Duration{5, 10, 20, 40, 80}},
		{"a cap below the first wait does not shorten it", Backoff{Duration: 5, Factor: 2, Cap: 3}, []time.Duration{5, 5, 5, 5, 5}},
		{"no factor waits the same", Backoff{Duration: 5}, []time.Duration{5, 5, 5, 5, 5}},
		{"a factor below 1 does not shrink", Backoff{Duration: 5, Factor: 0.5}, []time.Duration{5, 5, 5, 5, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			var got []time.Duration
			for range tt.want {
				got = append(got, b.Step())
			}
			assert.Equal(t, tt.want, got)
		})
	}
}
