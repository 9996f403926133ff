//! The conformance suite against every built-in driver, mounting for real.
//! A driver whose kernel filesystem or loop devices are missing here is
//! reported as skipped (`BERTH_SKIP_LOG`, printed by `cargo xtask test`).

berth_snapshots::snapshotter_conformance!(
    overlay,
    |root: &Path| berth_snapshots::overlay::OverlaySnapshotter::new(root),
    requires = "overlayfs"
);
berth_snapshots::snapshotter_conformance!(native, |root: &Path| {
    berth_snapshots::native::NativeSnapshotter::new(root)
});

#[test]
fn overlay_usage_excludes_parents() {
    if !berth_snapshots::testsuite::host_supports("overlayfs") {
        return;
    }
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

/// A blockfile snapshotter on `root`, its scratch image a 64 MiB ext4 made
/// beside the root (once: reopening finds it).
fn blockfile(
    root: &std::path::Path,
) -> berth_snapshots::Result<berth_snapshots::blockfile::BlockfileSnapshotter> {
    let scratch = root.with_file_name("scratch.ext4");
    if !scratch.exists() {
        std::fs::File::create(&scratch)
            .and_then(|f| f.set_len(64 << 20))
            .expect("create scratch image");
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&scratch)
            .output()
            .expect("mkfs.ext4 (cargo xtask deps installs e2fsprogs)");
        assert!(out.status.success(), "mkfs.ext4: {out:?}");
    }
    berth_snapshots::blockfile::BlockfileSnapshotter::new(
        root,
        berth_snapshots::blockfile::BlockfileConfig {
            scratch_file: Some(scratch),
            ..Default::default()
        },
    )
}

/// Blockfile: every check but `usage_counts_own_files` (a blockfile
/// snapshot's usage is its image's size, one inode, as containerd's).
mod blockfile {
    use std::path::Path;

    use berth_snapshots::Snapshotter;

    fn open(root: &Path) -> berth_snapshots::Result<Box<dyn Snapshotter>> {
        Ok(Box::new(super::blockfile(root)?))
    }

    berth_snapshots::snapshotter_conformance!(@tests open, requires "blockfile";
        layers_stack, deletions_hide_lower_files, keys_and_parents_are_checked,
        parents_with_children_stay, labels_update, survives_reopen,
        cleanup_keeps_live_snapshots, deep_chain_mounts);
}

/// EROFS: every check but `usage_counts_own_files` (a committed layer's
/// usage is its compressed-or-not image file, one inode, as containerd's).
mod erofs {
    use std::path::Path;

    use berth_snapshots::Snapshotter;

    fn open(root: &Path) -> berth_snapshots::Result<Box<dyn Snapshotter>> {
        Ok(Box::new(berth_snapshots::erofs::ErofsSnapshotter::new(
            root,
        )?))
    }

    berth_snapshots::snapshotter_conformance!(@tests open, requires "erofs";
        layers_stack, deletions_hide_lower_files, keys_and_parents_are_checked,
        parents_with_children_stay, labels_update, survives_reopen,
        cleanup_keeps_live_snapshots, deep_chain_mounts);
}

#[test]
fn erofs_usage_excludes_parents() {
    if !berth_snapshots::testsuite::host_supports("erofs") {
        return;
    }
    berth_snapshots::testsuite::usage_excludes_parents(&|root| {
        Ok(Box::new(berth_snapshots::erofs::ErofsSnapshotter::new(
            root,
        )?))
    });
}
