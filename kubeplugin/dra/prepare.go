package dra

import (
	"context"
	"fmt"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/utils/ptr"
)

// PrepareResourceClaims answers the kubelet with the CDI names of the
// node's one spec for every device of ours a claim was allocated: nothing
// is written for a claim but its checkpoint entry, so nothing is lost when
// /var/run/cdi is emptied at boot (the node writes the spec again at start,
// before the plugin registers).
//
// It is idempotent: a claim prepared before gets the same answer, and the
// checkpoint is written only when something changed. A claim fails with an
// error naming the device when its GPU is not on the node or is unhealthy
// (its CDI name would not resolve), or when the GPU, its SR-IOV physical
// function or one of its virtual functions is already prepared for another
// claim that still exists and does not share it. A device under admin
// access is prepared beside any other use, and an unhealthy or missing one
// is prepared without a CDI device instead of failing the claim, so that a
// monitoring pod that takes every GPU still starts.
func (d *Driver) PrepareResourceClaims(ctx context.Context, cls []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	inv := d.hub.Current()
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	next := d.prepared.clone()
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(cls))
	var changed []types.UID
	for _, claim := range cls {
		pc, err := d.prepareClaim(ctx, inv, claim, next)
		if err != nil {
			out[claim.UID] = kubeletplugin.PrepareResult{Err: err}
			continue
		}
		if old, ok := next[claim.UID]; !ok || !old.equal(pc) {
			next[claim.UID] = pc
			changed = append(changed, claim.UID)
		}
		out[claim.UID] = pc.result()
	}
	// next gains a claim only when changed says so; otherwise it can only
	// have lost stale holders, which its size shows.
	if len(changed) == 0 && len(next) == len(d.prepared) {
		return out, nil
	}
	if err := d.ckpt.save(next); err != nil {
		err = fmt.Errorf("recording the prepared claim in the checkpoint: %w", err)
		for _, uid := range changed {
			out[uid] = kubeletplugin.PrepareResult{Err: err}
		}
		return out, nil
	}
	d.setPrepared(next)
	return out, nil
}

// prepareClaim works out one claim's devices. cs is the working set of
// prepared claims: the conflict check may drop stale claims from it.
func (d *Driver) prepareClaim(ctx context.Context, inv *inventory, claim *resourceapi.ResourceClaim, cs claims) (*preparedClaim, error) {
	ref := claim.Namespace + "/" + claim.Name
	alloc := claim.Status.Allocation
	if alloc == nil {
		return nil, fmt.Errorf("claim %s is not allocated", ref)
	}
	pc := &preparedClaim{Namespace: claim.Namespace, Name: claim.Name}
	for _, r := range alloc.Devices.Results {
		if r.Driver != d.cfg.DriverName {
			continue
		}
		if r.Pool != d.cfg.NodeName {
			return nil, fmt.Errorf("claim %s request %s: device %s is in pool %s, not in this node's pool %s", ref, r.Request, r.Device, r.Pool, d.cfg.NodeName)
		}
		pd := preparedDevice{Request: r.Request, Pool: r.Pool, Device: r.Device, ShareID: r.ShareID, Admin: ptr.Deref(r.AdminAccess, false)}
		g := inv.byName[r.Device]
		switch {
		case g == nil && !pd.Admin:
			return nil, fmt.Errorf("claim %s request %s: device %s is not on this node: its GPU was removed", ref, r.Request, r.Device)
		case g != nil && !g.Healthy && !pd.Admin:
			return nil, fmt.Errorf("claim %s request %s: device %s (GPU %s) is unhealthy: %s", ref, r.Request, r.Device, g.PCIAddress(), g.Reason)
		}
		if g != nil {
			pd.PCIAddress, pd.PF = g.PCIAddress(), g.Device.SRIOV.PF
			if g.Healthy {
				pd.CDIDevices = []string{g.CDIName}
			}
		}
		if r.ShareID != nil {
			pd.Shares = 1
			if q, ok := r.ConsumedCapacity[CapacityShares]; ok {
				pd.Shares = q.Value()
			}
		}
		if err := d.checkFree(ctx, claim, &pd, cs); err != nil {
			return nil, fmt.Errorf("claim %s request %s: %w", ref, r.Request, err)
		}
		pc.Devices = append(pc.Devices, pd)
	}
	return pc, nil
}

// checkFree refuses a device that another claim holds in a way that
// excludes this one. Kubernetes makes that impossible unless something
// went wrong (a force-deleted claim, a stale allocation), and the driver
// is the last line of defence. A holder that no longer exists, as the API
// server tells, is dropped from cs instead.
func (d *Driver) checkFree(ctx context.Context, claim *resourceapi.ResourceClaim, pd *preparedDevice, cs claims) error {
	if pd.Admin {
		return nil
	}
	for {
		uid, why, shares := d.holder(claim.UID, pd, cs)
		if uid == "" {
			if pd.ShareID != nil && shares+pd.Shares > int64(d.cfg.SharedDevNum) {
				return fmt.Errorf("device %s has %d of its %d shares prepared for other claims; %d more do not fit",
					pd.Device, shares, d.cfg.SharedDevNum, pd.Shares)
			}
			return nil
		}
		holder := cs[uid]
		stale, err := d.stale(ctx, uid, holder)
		if err != nil {
			return fmt.Errorf("device %s: %s is prepared for claim %s/%s, which cannot be checked: %w", pd.Device, why, holder.Namespace, holder.Name, err)
		}
		if !stale {
			return fmt.Errorf("device %s: %s is already prepared for claim %s/%s (UID %s)", pd.Device, why, holder.Namespace, holder.Name, uid)
		}
		d.log.Info("dropping a prepared claim that no longer exists", "claim", holder.Namespace+"/"+holder.Name, "uid", uid)
		delete(cs, uid)
	}
}

// holder finds a claim other than self that holds pd's GPU exclusively,
// or its SR-IOV physical or virtual function, and says how; otherwise it
// returns how many shares of the GPU other claims hold.
func (d *Driver) holder(self types.UID, pd *preparedDevice, cs claims) (types.UID, string, int64) {
	var shares int64
	for uid, c := range cs {
		if uid == self {
			continue
		}
		for _, o := range c.Devices {
			if o.Admin || o.Pool != pd.Pool {
				continue
			}
			switch {
			case o.Device == pd.Device && (o.ShareID == nil || pd.ShareID == nil):
				return uid, "the GPU", 0
			case o.Device == pd.Device:
				shares += o.Shares
			case pd.PF != "" && o.PCIAddress == pd.PF:
				return uid, "its SR-IOV physical function " + pd.PF, 0
			case o.PF != "" && pd.PCIAddress != "" && o.PF == pd.PCIAddress:
				return uid, "its SR-IOV virtual function " + o.PCIAddress, 0
			}
		}
	}
	return "", "", shares
}

// UnprepareResourceClaims forgets the claims: there is nothing on the node
// to undo. A claim that is not prepared is no error (the kubelet may ask
// again). Afterwards the other prepared claims are checked against the API
// server in the background.
func (d *Driver) UnprepareResourceClaims(_ context.Context, cls []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := make(map[types.UID]error, len(cls))
	d.stateMu.Lock()
	next := d.prepared.clone()
	for _, c := range cls {
		delete(next, c.UID)
		out[c.UID] = nil
	}
	if len(next) != len(d.prepared) {
		if err := d.ckpt.save(next); err != nil {
			err = fmt.Errorf("removing the claim from the checkpoint: %w", err)
			for _, c := range cls {
				if _, ok := d.prepared[c.UID]; ok {
					out[c.UID] = err
				}
			}
		} else {
			d.setPrepared(next)
		}
	}
	d.stateMu.Unlock()
	d.reconcileSoon()
	return out, nil
}
