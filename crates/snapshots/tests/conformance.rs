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
