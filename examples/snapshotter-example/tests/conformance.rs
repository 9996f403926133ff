//! berth's snapshotter conformance suite, run on the example snapshotter
//! exactly as on berth's own drivers.

berth_snapshots::snapshotter_conformance!(audit, |root: &Path| {
    berth_snapshotter_example::open(root)
});
