//! The conformance suite against both built-in drivers, mounting for real.

berth_snapshots::snapshotter_conformance!(overlay, |root: &Path| {
    berth_snapshots::overlay::OverlaySnapshotter::new(root)
});
berth_snapshots::snapshotter_conformance!(native, |root: &Path| {
    berth_snapshots::native::NativeSnapshotter::new(root)
});

#[test]
fn overlay_usage_excludes_parents() {
    berth_snapshots::testsuite::usage_excludes_parents(&|root| {
        Ok(Box::new(berth_snapshots::overlay::OverlaySnapshotter::new(
            root,
        )?))
    });
}

/// A 256 MiB Btrfs of its own for each check (`None`: skipped, recorded).
fn btrfs_fs() -> Option<berth_snapshots::testsuite::LoopFs> {
    berth_snapshots::testsuite::LoopFs::new("btrfs", &["-q"], 256 << 20)
}

berth_snapshots::snapshotter_conformance!(
    btrfs,
    |root: &Path| berth_snapshots::btrfs::BtrfsSnapshotter::new(root),
    on = super::btrfs_fs
);

#[test]
fn btrfs_usage_excludes_parents() {
    let Some(fs) = btrfs_fs() else { return };
    berth_snapshots::testsuite::with_scratch_base(fs.path(), || {
        berth_snapshots::testsuite::usage_excludes_parents(&|root| {
            Ok(Box::new(berth_snapshots::btrfs::BtrfsSnapshotter::new(
                root,
            )?))
        });
    });
}
