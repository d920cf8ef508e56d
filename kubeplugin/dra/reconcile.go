package dra

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/retry"
)

// reconcileBackoff paces the retries of a reconciliation the API server
// did not answer.
var reconcileBackoff = retry.Backoff{Duration: time.Second, Factor: 2, Cap: time.Minute}

// reconcileGap is the least time between two reconciliations. Each asks
// the API server about every prepared claim, through the client's rate
// limit that Prepare's claim reads share: with pods coming and going, the
// Unprepares of a gap are checked together, once.
var reconcileGap = 2 * time.Second

// reconcileSoon asks for a reconciliation; requests made while one waits
// are one.
func (d *Driver) reconcileSoon() {
	select {
	case d.reconcile <- struct{}{}:
	default:
	}
}

// reconcileLoop drops checkpointed claims that no longer exist, when asked:
// at start (claims deleted while the plugin was down are never unprepared
// by the kubelet, which no longer knows them) and after Unprepares (a
// claim whose Prepare the kubelet retried after its Unprepare), at most
// once per reconcileGap.
func (d *Driver) reconcileLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.reconcile:
		}
		_ = retry.Until(ctx, reconcileBackoff, func() error { return d.reconcileOnce(ctx) },
			func(err error, next time.Duration) {
				d.log.Warn("checking prepared claims against the API server; retrying", "err", err, "in", next)
			})
		// Requests made meanwhile wait in d.reconcile and are one.
		gap := time.NewTimer(reconcileGap)
		select {
		case <-ctx.Done():
			gap.Stop()
			return
		case <-gap.C:
		}
	}
}

// reconcileOnce asks the API server about every prepared claim and drops
// those that are gone, were replaced by a claim of the same name, or are no
// longer allocated.
func (d *Driver) reconcileOnce(ctx context.Context) error {
	d.stateMu.Lock()
	cs := d.prepared
	d.stateMu.Unlock()
	var stale []types.UID
	for uid, c := range cs {
		s, err := d.stale(ctx, uid, c)
		if err != nil {
			return err
		}
		if s {
			stale = append(stale, uid)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	next := d.prepared.clone()
	for _, uid := range stale {
		delete(next, uid)
	}
	if len(next) == len(d.prepared) {
		return nil
	}
	if err := d.ckpt.save(next); err != nil {
		return fmt.Errorf("dropping stale claims from the checkpoint: %w", err)
	}
	d.setPrepared(next)
	d.log.Info("dropped prepared claims that no longer exist", "uids", claimUIDs(stale))
	return nil
}

// stale reports whether a prepared claim is gone from the API server, was
// replaced (same name, another UID), or is no longer allocated.
func (d *Driver) stale(ctx context.Context, uid types.UID, c *preparedClaim) (bool, error) {
	claim, err := d.cfg.Client.ResourceV1().ResourceClaims(c.Namespace).Get(ctx, c.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("getting claim %s/%s: %w", c.Namespace, c.Name, err)
	}
	return claim.UID != uid || claim.Status.Allocation == nil, nil
}
