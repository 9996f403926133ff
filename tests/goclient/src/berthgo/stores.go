package main

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func init() {
	register("leases", "Leases manager: Create, List with filter, resources, WithLease keeps content, Delete", runLeases)
	register("content", "Content store: Writer, Info, ReaderAt, Update labels, Walk, Delete", runContent)
	register("snapshots", "Snapshots service: Prepare, Mounts, Commit, Stat, View, Walk, Usage, Remove", runSnapshots)
}

func runLeases(e *env, _ []string) error {
	lm := e.client.LeasesService()
	l, err := lm.Create(e.ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour),
		leases.WithLabels(map[string]string{"berthgo": "lease"}))
	if err != nil {
		return fmt.Errorf("leases Create: %w", err)
	}
	found, err := lm.List(e.ctx, "id=="+l.ID)
	if err != nil {
		return fmt.Errorf("leases List: %w", err)
	}
	if len(found) != 1 || found[0].Labels["berthgo"] != "lease" {
		return fmt.Errorf("leases List(id==%s): got %+v", l.ID, found)
	}
	if _, ok := found[0].Labels["containerd.io/gc.expire"]; !ok {
		return fmt.Errorf("lease labels lack containerd.io/gc.expire: %v", found[0].Labels)
	}
	// Content written under the lease is one of its resources and is kept.
	ctx := leases.WithLease(e.ctx, l.ID)
	data := []byte("held by a lease\n")
	dgst := digest.FromBytes(data)
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: dgst, Size: int64(len(data))}
	if err := content.WriteBlob(ctx, e.client.ContentStore(), "berthgo-lease", bytes.NewReader(data), desc); err != nil {
		return fmt.Errorf("WriteBlob under the lease: %w", err)
	}
	res, err := lm.ListResources(e.ctx, l)
	if err != nil {
		return fmt.Errorf("ListResources: %w", err)
	}
	held := false
	for _, r := range res {
		if r.Type == "content" && r.ID == dgst.String() {
			held = true
		}
	}
	if !held {
		return fmt.Errorf("the lease's resources lack content %s: %+v", dgst, res)
	}
	extra := leases.Resource{ID: "berthgo-snap", Type: "snapshots/" + e.snapshotter}
	if err := lm.AddResource(e.ctx, l, extra); err != nil {
		return fmt.Errorf("AddResource: %w", err)
	}
	if err := lm.DeleteResource(e.ctx, l, extra); err != nil {
		return fmt.Errorf("DeleteResource: %w", err)
	}
	if err := lm.Delete(e.ctx, l, leases.SynchronousDelete); err != nil {
		return fmt.Errorf("leases Delete: %w", err)
	}
	// With the lease gone and nothing else referencing it, the
	// synchronous collection removed the blob.
	if _, err := e.client.ContentStore().Info(e.ctx, dgst); !errdefs.IsNotFound(err) {
		return fmt.Errorf("content %s after its lease was deleted: want NotFound, got %v", dgst, err)
	}
	if err := lm.Delete(e.ctx, l); !errdefs.IsNotFound(err) {
		return fmt.Errorf("deleting the lease again: want NotFound, got %v", err)
	}
	return nil
}

func runContent(e *env, _ []string) error {
	cs := e.client.ContentStore()
	// A lease keeps the blob while the test looks at it.
	ctx, done, err := e.client.WithLease(e.ctx)
	if err != nil {
		return fmt.Errorf("WithLease: %w", err)
	}
	defer done(e.ctx)
	data := bytes.Repeat([]byte("berth content "), 1000)
	dgst := digest.FromBytes(data)
	w, err := content.OpenWriter(ctx, cs, content.WithRef("berthgo-content"),
		content.WithDescriptor(ocispec.Descriptor{Digest: dgst, Size: int64(len(data))}))
	if err != nil {
		return fmt.Errorf("Writer: %w", err)
	}
	half := len(data) / 2
	if _, err := w.Write(data[:half]); err != nil {
		return fmt.Errorf("Write: %w", err)
	}
	st, err := w.Status()
	if err != nil {
		return fmt.Errorf("writer Status: %w", err)
	}
	if err := expect("writer offset", st.Offset, half); err != nil {
		return err
	}
	if _, err := w.Write(data[half:]); err != nil {
		return fmt.Errorf("Write: %w", err)
	}
	if err := w.Commit(ctx, int64(len(data)), dgst, content.WithLabels(map[string]string{"berthgo": "1"})); err != nil {
		return fmt.Errorf("Commit: %w", err)
	}
	w.Close()
	info, err := cs.Info(ctx, dgst)
	if err != nil {
		return fmt.Errorf("Info: %w", err)
	}
	if err := expect("Info size", info.Size, len(data)); err != nil {
		return err
	}
	if err := expect("Info label", info.Labels["berthgo"], "1"); err != nil {
		return err
	}
	ra, err := cs.ReaderAt(ctx, ocispec.Descriptor{Digest: dgst, Size: int64(len(data))})
	if err != nil {
		return fmt.Errorf("ReaderAt: %w", err)
	}
	if err := expect("ReaderAt Size", ra.Size(), len(data)); err != nil {
		return err
	}
	part := make([]byte, 100)
	if _, err := ra.ReadAt(part, 1000); err != nil && err != io.EOF {
		return fmt.Errorf("ReadAt: %w", err)
	}
	ra.Close()
	if !bytes.Equal(part, data[1000:1100]) {
		return fmt.Errorf("ReadAt(1000) returned other bytes: %q", part)
	}
	info.Labels = map[string]string{"berthgo": "2"}
	if _, err := cs.Update(ctx, info, "labels.berthgo"); err != nil {
		return fmt.Errorf("Update labels: %w", err)
	}
	seen := 0
	if err := cs.Walk(ctx, func(i content.Info) error {
		if i.Digest == dgst {
			seen++
			if i.Labels["berthgo"] != "2" {
				return fmt.Errorf("Walk: label not updated: %v", i.Labels)
			}
		}
		return nil
	}, "labels.berthgo==2"); err != nil {
		return fmt.Errorf("Walk: %w", err)
	}
	if err := expect("blobs Walk found with labels.berthgo==2", seen, 1); err != nil {
		return err
	}
	// Writing the same blob again: AlreadyExists, as containerd says.
	if err := content.WriteBlob(ctx, cs, "berthgo-content-2", bytes.NewReader(data),
		ocispec.Descriptor{Digest: dgst, Size: int64(len(data))}); err != nil {
		return fmt.Errorf("WriteBlob of a blob that exists should succeed: %w", err)
	}
	if err := cs.Delete(ctx, dgst); err != nil {
		return fmt.Errorf("Delete: %w", err)
	}
	if _, err := cs.Info(ctx, dgst); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Info after Delete: want NotFound, got %v", err)
	}
	return nil
}

func runSnapshots(e *env, _ []string) error {
	img, err := e.pull()
	if err != nil {
		return err
	}
	diffIDs, err := img.RootFS(e.ctx)
	if err != nil {
		return fmt.Errorf("RootFS: %w", err)
	}
	parent := identityChainID(diffIDs)
	sn := e.client.SnapshotService(e.snapshotter)
	ctx, done, err := e.client.WithLease(e.ctx)
	if err != nil {
		return fmt.Errorf("WithLease: %w", err)
	}
	defer done(e.ctx)
	info, err := sn.Stat(ctx, parent)
	if err != nil {
		return fmt.Errorf("Stat of the image's chain ID %s: %w", parent, err)
	}
	if err := expect("image snapshot kind", info.Kind, snapshots.KindCommitted); err != nil {
		return err
	}
	mounts, err := sn.Prepare(ctx, "berthgo-active", parent, snapshots.WithLabels(map[string]string{"berthgo": "a"}))
	if err != nil {
		return fmt.Errorf("Prepare: %w", err)
	}
	again, err := sn.Mounts(ctx, "berthgo-active")
	if err != nil {
		return fmt.Errorf("Mounts: %w", err)
	}
	if len(mounts) == 0 || fmt.Sprint(mounts) != fmt.Sprint(again) {
		return fmt.Errorf("Mounts differ from Prepare's: %v vs %v", again, mounts)
	}
	if _, err := sn.Prepare(ctx, "berthgo-active", parent); !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("Prepare of an existing key: want AlreadyExists, got %v", err)
	}
	if err := sn.Commit(ctx, "berthgo-committed", "berthgo-active"); err != nil {
		return fmt.Errorf("Commit: %w", err)
	}
	info, err = sn.Stat(ctx, "berthgo-committed")
	if err != nil {
		return fmt.Errorf("Stat: %w", err)
	}
	if info.Kind != snapshots.KindCommitted || info.Parent != parent {
		return fmt.Errorf("Stat of the commit: %+v", info)
	}
	if _, err := sn.View(ctx, "berthgo-view", "berthgo-committed"); err != nil {
		return fmt.Errorf("View: %w", err)
	}
	kinds := map[string]snapshots.Kind{}
	if err := sn.Walk(ctx, func(_ context_, i snapshots.Info) error {
		kinds[i.Name] = i.Kind
		return nil
	}); err != nil {
		return fmt.Errorf("Walk: %w", err)
	}
	if kinds["berthgo-view"] != snapshots.KindView || kinds["berthgo-committed"] != snapshots.KindCommitted {
		return fmt.Errorf("Walk: %v", kinds)
	}
	if _, err := sn.Usage(ctx, "berthgo-committed"); err != nil {
		return fmt.Errorf("Usage: %w", err)
	}
	if err := sn.Remove(ctx, "berthgo-committed"); err == nil {
		return fmt.Errorf("Remove of a snapshot with a child (the view) succeeded")
	}
	for _, k := range []string{"berthgo-view", "berthgo-committed"} {
		if err := sn.Remove(ctx, k); err != nil {
			return fmt.Errorf("Remove(%s): %w", k, err)
		}
	}
	if _, err := sn.Stat(ctx, "berthgo-view"); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Stat after Remove: want NotFound, got %v", err)
	}
	return nil
}
