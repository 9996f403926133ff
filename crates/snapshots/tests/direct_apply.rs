//! The DirectApply capability of the built-in drivers: files written into
//! `writable_dir` (or staged and adopted) are what a mount of the committed
//! snapshot shows.

use std::fs;

use berth_snapshots::mount::MountGuard;
use berth_snapshots::native::NativeSnapshotter;
use berth_snapshots::overlay::OverlaySnapshotter;
use berth_snapshots::{Snapshotter, Whiteouts};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Commits `key` as `name` and checks a view of it shows `file` = `text`.
fn check_view(sn: &dyn Snapshotter, key: &str, name: &str, file: &str, text: &str) -> Result {
    sn.commit(name, key, Default::default())?;
    let dir = tempfile::tempdir()?;
    let mounts = sn.view("check", Some(name), Default::default())?;
    let guard = MountGuard::mount(&mounts, dir.path())?;
    let seen = fs::read_to_string(guard.target().join(file));
    guard.unmount()?;
    sn.remove("check")?;
    assert_eq!(seen?, text);
    Ok(())
}

#[test]
fn native_writes_in_place_and_stages_nothing() -> Result {
    let root = tempfile::tempdir()?;
    let sn = NativeSnapshotter::new(root.path())?;
    let direct = sn.direct_apply().ok_or("native declares no DirectApply")?;
    assert_eq!(direct.whiteouts(), Whiteouts::Remove);
    assert_eq!(direct.staging_dir(), None);
    sn.prepare("a", None, Default::default())?;
    fs::write(direct.writable_dir("a")?.join("hello"), "native\n")?;
    assert!(direct.adopt("a", root.path()).is_err());
    check_view(&sn, "a", "base", "hello", "native\n")?;
    // Committed snapshots are not writable.
    let err = direct
        .writable_dir("base")
        .err()
        .ok_or("a committed snapshot was writable")?;
    assert!(err.is_failed_precondition(), "{err}");
    Ok(())
}

#[test]
fn overlay_adopts_a_staged_layer_above_its_parent() -> Result {
    let root = tempfile::tempdir()?;
    let sn = OverlaySnapshotter::new(root.path())?;
    let direct = sn
        .direct_apply()
        .ok_or("overlayfs declares no DirectApply")?;
    assert_eq!(direct.whiteouts(), Whiteouts::Overlay);
    let staging = direct.staging_dir().ok_or("overlayfs stages no layers")?;
    sn.prepare("a", None, Default::default())?;
    fs::write(direct.writable_dir("a")?.join("lower"), "lower\n")?;
    check_view(&sn, "a", "base", "lower", "lower\n")?;

    // A layer made before its snapshot existed, then moved in.
    let staged = staging.join("layer");
    fs::create_dir_all(&staged)?;
    fs::write(staged.join("upper"), "upper\n")?;
    sn.prepare("b", Some("base"), Default::default())?;
    direct.adopt("b", &staged)?;
    assert!(!staged.exists(), "the staged directory was not moved");
    check_view(&sn, "b", "top", "upper", "upper\n")?;
    // The parent's files show through too.
    let dir = tempfile::tempdir()?;
    let guard = MountGuard::mount(&sn.view("v", Some("top"), Default::default())?, dir.path())?;
    let lower = fs::read_to_string(guard.target().join("lower"));
    guard.unmount()?;
    assert_eq!(lower?, "lower\n");

    // A restarted driver empties its staging directory.
    fs::create_dir_all(staging.join("left-over"))?;
    drop(sn);
    let _sn = OverlaySnapshotter::new(root.path())?;
    assert!(!staging.join("left-over").exists());
    Ok(())
}
