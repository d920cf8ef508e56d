package latest

import (
	"sync"
	"testing"
	"time"
)

func TestPublishWakesEveryWaiterWithTheNewValue(t *testing.T) {
	l := New(1)
	if got := l.Current(); got != 1 {
		t.Fatalf("Current() = %d before any Publish, want 1", got)
	}
	const waiters = 8
	var wg sync.WaitGroup
	got := make(chan int, waiters)
	ready := make(chan struct{}, waiters)
	for range waiters {
		wg.Go(func() {
			_, changed := l.Load()
			ready <- struct{}{}
			<-changed
			v, _ := l.Load()
			got <- v
		})
	}
	for range waiters {
		<-ready
	}
	l.Publish(2)
	wg.Wait()
	close(got)
	for v := range got {
		if v != 2 {
			t.Errorf("a woken reader loaded %d, want 2", v)
		}
	}
}

func TestLoadedChannelStaysOpenUntilTheNextPublish(t *testing.T) {
	l := New("a")
	_, first := l.Load()
	l.Publish("b")
	select {
	case <-first:
	default:
		t.Fatal("the channel from before Publish is still open")
	}
	v, second := l.Load()
	if v != "b" {
		t.Fatalf("Load() = %q after Publish(\"b\")", v)
	}
	select {
	case <-second:
		t.Fatal("the channel from after Publish is already closed")
	case <-time.After(10 * time.Millisecond):
	}
}
