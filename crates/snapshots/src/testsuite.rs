//! A conformance suite for [`Snapshotter`] implementations.
//!
//! Every check takes a function that opens a snapshotter on a given root
//! (called again on the same root to test persistence) and a scratch
//! directory for mount points. The checks mount for real, so they need
//! root (`CAP_SYS_ADMIN`); each unmounts what it mounted, even when it fails.
//!
//! The [`snapshotter_conformance!`](crate::snapshotter_conformance) macro
//! turns the whole list into one `#[test]` per check:
//!
//! ```ignore
//! berth_snapshots::snapshotter_conformance!(native, |root| {
//!     berth_snapshots::native::NativeSnapshotter::new(root)
//! });
//! ```

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use crate::mount::MountGuard;
use crate::{Error, Kind, Labels, Result, Snapshotter};

/// Opens a snapshotter rooted at the given directory.
pub type Open<'a> = &'a dyn Fn(&Path) -> Result<Box<dyn Snapshotter>>;

thread_local! {
    /// Where this thread's [`Scratch`] areas go (see [`with_scratch_base`]).
    static SCRATCH_BASE: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's [`Scratch`] areas under `base` (say, a
/// filesystem a driver needs, like Btrfs), then restores the default.
pub fn with_scratch_base<T>(base: &Path, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SCRATCH_BASE.with(|b| *b.borrow_mut() = None);
        }
    }
    SCRATCH_BASE.with(|b| *b.borrow_mut() = Some(base.to_path_buf()));
    let _reset = Reset;
    f()
}

/// Reports the running test as skipped for `reason`: printed, and
/// recorded where `cargo xtask test` collects skips (`BERTH_SKIP_LOG`).
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("SKIP: {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("BERTH_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Something of the host a snapshotter needs to run, or to be tested and
/// benchmarked here (see [`needs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A filesystem the kernel must know (listed in `/proc/filesystems`).
    Filesystem(&'static str),
    /// Loop devices: `/dev/loop-control` and a free `/dev/loopN` (the
    /// driver's mounts go through one, or its tests loop-mount an image).
    LoopDevices,
    /// A program on `PATH` (installed by `cargo xtask deps`).
    Tool(&'static str),
}

impl Need {
    /// Whether this is something of the machine (kernel, devices) rather
    /// than a program a package installs.
    pub fn is_host(self) -> bool {
        !matches!(self, Need::Tool(_))
    }

    /// Why this need is not met here, or `None` if it is.
    pub fn unmet(self) -> Option<String> {
        match self {
            Need::Filesystem(fs_type) => filesystem_unsupported(fs_type),
            Need::LoopDevices => loop_devices_unavailable(),
            Need::Tool(name) => (!on_path(name))
                .then(|| format!("{name} is not installed (cargo xtask deps installs it)")),
        }
    }
}

/// What snapshotter `driver` (its plugin name: `overlayfs`, `native`,
/// `btrfs`, `blockfile`, `erofs`) needs here, for itself and for the
/// filesystem its tests make: Btrfs is tested on a loop-mounted image made
/// by `mkfs.btrfs`, blockfile needs an ext4 scratch image (`mkfs.ext4`)
/// and mounts it through loop devices, erofs mounts its layer images
/// through loop devices under overlayfs and makes them with `mkfs.erofs`.
/// Unknown names need nothing.
pub fn needs(driver: &str) -> &'static [Need] {
    use Need::{Filesystem, LoopDevices, Tool};
    match driver {
        "overlayfs" => &[Filesystem("overlay")],
        "btrfs" => &[Filesystem("btrfs"), LoopDevices, Tool("mkfs.btrfs")],
        "blockfile" => &[Filesystem("ext4"), LoopDevices, Tool("mkfs.ext4")],
        "erofs" => &[
            Filesystem("erofs"),
            Filesystem("overlay"),
            LoopDevices,
            Tool("mkfs.erofs"),
        ],
        _ => &[],
    }
}

/// Why `driver` cannot run here (every unmet [`needs`] entry, tools
/// included), empty if it can.
pub fn unmet(driver: &str) -> Vec<String> {
    needs(driver).iter().filter_map(|n| n.unmet()).collect()
}

/// Whether this machine has what `driver` needs of the kernel and devices
/// (filesystems, loop devices); if not, the running test is reported as
/// skipped with the reasons (see [`skip`]) and the caller returns. Missing
/// tools are not a reason to skip: `cargo xtask deps` installs them, and a
/// test without one fails saying so.
pub fn host_supports(driver: &str) -> bool {
    let reasons: Vec<String> = needs(driver)
        .iter()
        .filter(|n| n.is_host())
        .filter_map(|n| n.unmet())
        .collect();
    if reasons.is_empty() {
        return true;
    }
    skip(&format!("{driver}: {}", reasons.join("; ")));
    false
}

/// Why the kernel cannot mount `fs_type`, or `None`.
fn filesystem_unsupported(fs_type: &str) -> Option<String> {
    let known = fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs_type));
    (!known).then(|| format!("the kernel does not support {fs_type} (not in /proc/filesystems)"))
}

/// Why loop devices cannot be used here, or `None`: asks util-linux's
/// `losetup --find` for a free device (which also creates one through
/// `/dev/loop-control` when all are taken) and checks its node opens.
fn loop_devices_unavailable() -> Option<String> {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
    {
        return Some(format!("no loop devices: /dev/loop-control: {e}"));
    }
    let out = match std::process::Command::new("losetup").arg("--find").output() {
        Ok(out) => out,
        Err(e) => return Some(format!("losetup (util-linux): {e}")),
    };
    if !out.status.success() {
        return Some(format!(
            "no free loop device: losetup --find: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match fs::OpenOptions::new().read(true).open(&device) {
        Ok(_) => None,
        Err(e) => Some(format!("no usable loop device: {device}: {e}")),
    }
}

/// Whether program `name` is on `PATH` (or in `/usr/sbin`, `/sbin`, where
/// Debian puts `mkfs.*` and which a non-login `PATH` may lack).
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| {
            fs::metadata(d.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A filesystem image made by `mkfs.<fs_type>`, loop-mounted on a
/// temporary directory for one test; unmounted and deleted when dropped.
#[derive(Debug)]
pub struct LoopFs {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl LoopFs {
    /// Makes a sparse `size`-byte image, formats it with `mkfs.<fs_type>`
    /// (plus `mkfs_args`) and mounts it with `-o loop`.
    ///
    /// `None` (with the skip recorded, see [`skip`]) if the kernel does not
    /// know `fs_type` or there are no loop devices; panics if the mkfs tool
    /// is missing (`cargo xtask deps` installs it) or a step fails.
    pub fn new(fs_type: &str, mkfs_args: &[&str], size: u64) -> Option<LoopFs> {
        let reasons: Vec<String> = [filesystem_unsupported(fs_type), loop_devices_unavailable()]
            .into_iter()
            .flatten()
            .collect();
        if !reasons.is_empty() {
            skip(&format!("a loop-mounted {fs_type}: {}", reasons.join("; ")));
            return None;
        }
        let base = std::env::var_os("BERTH_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-{fs_type}-"))
            .tempdir_in(base)
            .expect("create image directory");
        let image = dir.path().join("fs.img");
        fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .expect("create image file");
        let mkfs = format!("mkfs.{fs_type}");
        let out = std::process::Command::new(&mkfs)
            .args(mkfs_args)
            .arg(&image)
            .output()
            .unwrap_or_else(|e| panic!("{mkfs}: {e} (cargo xtask deps installs it)"));
        assert!(
            out.status.success(),
            "{mkfs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("create mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", fs_type, "-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -o loop {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(LoopFs { dir, mnt })
    }

    /// The mounted filesystem's root.
    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // The loop device goes with the last unmount (mount sets autoclear).
        if crate::mount::unmount_all(&self.mnt).is_err() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_file(self.dir.path().join("fs.img"));
    }
}

/// A temporary root and mount-point area for one check.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
    mounts: u32,
}

impl Scratch {
    /// A fresh scratch area (under `/var/tmp`, which is not overlayfs or tmpfs
    /// on most hosts; `BERTH_TEST_TMP` overrides).
    pub fn new() -> Scratch {
        let base = SCRATCH_BASE
            .with(|b| b.borrow().clone())
            .or_else(|| std::env::var_os("BERTH_TEST_TMP").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = tempfile::Builder::new()
            .prefix("berth-snapshots-")
            .tempdir_in(base)
            .expect("create scratch directory");
        Scratch { dir, mounts: 0 }
    }

    /// The snapshotter root inside the scratch area.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Mounts `mounts` on a new mount point; unmounted when the guard drops.
    pub fn mount(&mut self, mounts: &[crate::Mount]) -> MountGuard {
        self.mounts += 1;
        let target = self.dir.path().join(format!("mnt{}", self.mounts));
        fs::create_dir(&target).expect("create mount point");
        MountGuard::mount(mounts, &target).expect("mount snapshot")
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Writes `files` into a new active snapshot `key` on `parent` and commits it as `name`.
fn layer(
    sn: &dyn Snapshotter,
    scratch: &mut Scratch,
    name: &str,
    parent: Option<&str>,
    files: &[(&str, &str)],
) {
    let key = format!("extract-{name}");
    let mounts = sn.prepare(&key, parent, Labels::new()).unwrap();
    {
        let m = scratch.mount(&mounts);
        for (path, data) in files {
            let p = m.target().join(path);
            if let Some(dir) = p.parent() {
                fs::create_dir_all(dir).unwrap();
            }
            fs::write(p, data).unwrap();
        }
        m.unmount().unwrap();
    }
    sn.commit(name, &key, Labels::new()).unwrap();
}

/// Layers stack: a child sees its parent's files plus its own; a view sees all.
pub fn layers_stack(open: Open<'_>) {
    let mut s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    layer(&*sn, &mut s, "l1", None, &[("a", "1"), ("dir/b", "2")]);
    layer(&*sn, &mut s, "l2", Some("l1"), &[("c", "3"), ("a", "1'")]);
    let mounts = sn.view("look", Some("l2"), Labels::new()).unwrap();
    let m = s.mount(&mounts);
    let read = |p: &str| fs::read_to_string(m.target().join(p)).unwrap();
    assert_eq!(read("a"), "1'");
    assert_eq!(read("dir/b"), "2");
    assert_eq!(read("c"), "3");
    // A view is read-only.
    assert!(fs::write(m.target().join("new"), "x").is_err());
    m.unmount().unwrap();
    assert_eq!(sn.stat("look").unwrap().kind, Kind::View);
    assert_eq!(sn.stat("l2").unwrap().parent.as_deref(), Some("l1"));
}

/// Deleting a lower file in a child layer hides it in views of the child only.
pub fn deletions_hide_lower_files(open: Open<'_>) {
    let mut s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    layer(&*sn, &mut s, "base", None, &[("keep", "k"), ("gone", "g")]);
    let mounts = sn.prepare("del", Some("base"), Labels::new()).unwrap();
    let m = s.mount(&mounts);
    fs::remove_file(m.target().join("gone")).unwrap();
    m.unmount().unwrap();
    sn.commit("top", "del", Labels::new()).unwrap();
    for (parent, visible) in [("top", false), ("base", true)] {
        let key = format!("v-{parent}");
        let mounts = sn.view(&key, Some(parent), Labels::new()).unwrap();
        let m = s.mount(&mounts);
        assert!(m.target().join("keep").exists());
        assert_eq!(m.target().join("gone").exists(), visible, "in {parent}");
        m.unmount().unwrap();
    }
}

/// Keys are unique across kinds; parents must exist and be committed.
pub fn keys_and_parents_are_checked(open: Open<'_>) {
    let s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    sn.prepare("a", None, Labels::new()).unwrap();
    assert!(
        sn.prepare("a", None, Labels::new())
            .unwrap_err()
            .is_already_exists()
    );
    assert!(
        sn.view("a", None, Labels::new())
            .unwrap_err()
            .is_already_exists()
    );
    assert!(
        sn.prepare("b", Some("missing"), Labels::new())
            .unwrap_err()
            .is_not_found()
    );
    // An active snapshot cannot be a parent.
    assert!(
        sn.prepare("b", Some("a"), Labels::new())
            .unwrap_err()
            .is_invalid_argument()
    );
    assert!(
        sn.prepare("", None, Labels::new())
            .unwrap_err()
            .is_invalid_argument()
    );
    sn.commit("A", "a", Labels::new()).unwrap();
    // The key is free again after its commit.
    assert!(sn.stat("a").unwrap_err().is_not_found());
    sn.prepare("a", Some("A"), Labels::new()).unwrap();
    assert!(
        sn.commit("A", "a", Labels::new())
            .unwrap_err()
            .is_already_exists()
    );
    assert!(
        sn.commit("B", "nope", Labels::new())
            .unwrap_err()
            .is_not_found()
    );
    sn.view("v", Some("A"), Labels::new()).unwrap();
    assert!(
        sn.commit("C", "v", Labels::new())
            .unwrap_err()
            .is_failed_precondition()
    );
    assert!(sn.mounts("A").unwrap_err().is_failed_precondition());
    assert!(sn.mounts("nope").unwrap_err().is_not_found());
}

/// A parent with children (active, view or committed) cannot be removed.
pub fn parents_with_children_stay(open: Open<'_>) {
    let s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    sn.prepare("a", None, Labels::new()).unwrap();
    sn.commit("A", "a", Labels::new()).unwrap();
    sn.prepare("b", Some("A"), Labels::new()).unwrap();
    sn.view("v", Some("A"), Labels::new()).unwrap();
    let e = sn.remove("A").unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    sn.remove("b").unwrap();
    assert!(sn.remove("A").unwrap_err().is_failed_precondition());
    sn.remove("v").unwrap();
    sn.remove("A").unwrap();
    assert!(sn.remove("A").unwrap_err().is_not_found());
    let mut seen = 0;
    sn.walk(&mut |_| {
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 0);
}

/// Labels are stored as given and updated by field path.
pub fn labels_update(open: Open<'_>) {
    let s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    sn.prepare("a", None, labels(&[("x", "1"), ("y", "2")]))
        .unwrap();
    let mut info = crate::Info::new("a");
    info.labels = labels(&[("x", "10"), ("z", "3")]);
    let got = sn.update(info.clone(), &["labels.x"]).unwrap();
    assert_eq!(got.labels, labels(&[("x", "10"), ("y", "2")]));
    let got = sn.update(info.clone(), &["labels.y"]).unwrap();
    assert_eq!(got.labels, labels(&[("x", "10")]));
    let got = sn.update(info.clone(), &[]).unwrap();
    assert_eq!(got.labels, labels(&[("x", "10"), ("z", "3")]));
    assert!(
        sn.update(info.clone(), &["parent"])
            .unwrap_err()
            .is_invalid_argument()
    );
    assert_eq!(sn.stat("a").unwrap().labels, got.labels);
    assert!(
        sn.update(crate::Info::new("nope"), &[])
            .unwrap_err()
            .is_not_found()
    );
    sn.commit("A", "a", labels(&[("c", "1")])).unwrap();
    assert_eq!(sn.stat("A").unwrap().labels, labels(&[("c", "1")]));
}

/// Usage counts a snapshot's own files, measured at commit.
pub fn usage_counts_own_files(open: Open<'_>) {
    let mut s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    let big = "x".repeat(1 << 20);
    layer(&*sn, &mut s, "L", None, &[("big", &big)]);
    let u = sn.usage("L").unwrap();
    assert!(u.size >= 1 << 20, "{u:?}");
    assert!(u.inodes >= 2, "{u:?}");
}

/// For layering drivers (overlayfs): a child's usage excludes its parents'
/// files. Copying drivers (native) count the copy, as containerd's do.
pub fn usage_excludes_parents(open: Open<'_>) {
    let mut s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    let big = "x".repeat(1 << 20);
    layer(&*sn, &mut s, "L", None, &[("big", &big)]);
    sn.prepare("small", Some("L"), Labels::new()).unwrap();
    let u = sn.usage("small").unwrap();
    assert!(u.size < 1 << 20, "the parent's file must not count: {u:?}");
}

/// Every snapshot survives closing and reopening the snapshotter.
pub fn survives_reopen(open: Open<'_>) {
    let mut s = Scratch::new();
    {
        let sn = open(&s.root()).unwrap();
        layer(&*sn, &mut s, "L", None, &[("f", "data")]);
        sn.prepare("work", Some("L"), labels(&[("k", "v")]))
            .unwrap();
    }
    let sn = open(&s.root()).unwrap();
    assert_eq!(sn.stat("L").unwrap().kind, Kind::Committed);
    let info = sn.stat("work").unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::Active, Some("L"))
    );
    assert_eq!(info.labels, labels(&[("k", "v")]));
    let mounts = sn.mounts("work").unwrap();
    let m = s.mount(&mounts);
    assert_eq!(fs::read_to_string(m.target().join("f")).unwrap(), "data");
    m.unmount().unwrap();
}

/// Cleanup removes directories no record refers to, and nothing else.
pub fn cleanup_keeps_live_snapshots(open: Open<'_>) {
    let mut s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    layer(&*sn, &mut s, "L", None, &[("f", "data")]);
    let stray = s.root().join("snapshots").join("999999");
    fs::create_dir_all(stray.join("fs")).unwrap();
    sn.cleanup().unwrap();
    assert!(
        !stray.exists(),
        "cleanup must remove unreferenced directories"
    );
    let mounts = sn.view("v", Some("L"), Labels::new()).unwrap();
    let m = s.mount(&mounts);
    assert_eq!(fs::read_to_string(m.target().join("f")).unwrap(), "data");
    m.unmount().unwrap();
}

/// A chain of 50 layers mounts and shows every layer's file.
pub fn deep_chain_mounts(open: Open<'_>) {
    let mut s = Scratch::new();
    let sn = open(&s.root()).unwrap();
    let mut parent: Option<String> = None;
    for i in 0..50 {
        let name = format!("layer-{i}");
        let file = format!("f{i}");
        let data = i.to_string();
        layer(&*sn, &mut s, &name, parent.as_deref(), &[(&file, &data)]);
        parent = Some(name);
    }
    let mounts = sn.prepare("top", parent.as_deref(), Labels::new()).unwrap();
    let m = s.mount(&mounts);
    for i in 0..50 {
        let got = fs::read_to_string(m.target().join(format!("f{i}"))).unwrap();
        assert_eq!(got, i.to_string());
    }
    m.unmount().unwrap();
}

/// Defines one `#[test]` per conformance check for a snapshotter.
///
/// `$open` is a closure `|root: &Path| -> Result<impl Snapshotter>`. With
/// `on = || -> Option<LoopFs>`, each check runs on a filesystem of its own
/// (made per check; `None` means skipped), as drivers that need one (Btrfs)
/// do. With `requires = "<driver>"`, each check first checks the host has
/// what [`needs`] lists for that driver ([`host_supports`]), and is
/// reported as skipped if not. `@tests open; check, ...` (optionally
/// `@tests open, requires "<driver>"; ...`) defines only the checks named.
#[macro_export]
macro_rules! snapshotter_conformance {
    ($name:ident, $open:expr, requires = $driver:expr) => {
        mod $name {
            use std::path::Path;

            use $crate::Snapshotter;

            fn open(root: &Path) -> $crate::Result<Box<dyn Snapshotter>> {
                #[allow(clippy::redundant_closure_call)]
                let sn = ($open)(root)?;
                Ok(Box::new(sn))
            }

            $crate::snapshotter_conformance!(@tests open, requires $driver;
                layers_stack, deletions_hide_lower_files, keys_and_parents_are_checked,
                parents_with_children_stay, labels_update, usage_counts_own_files,
                survives_reopen, cleanup_keeps_live_snapshots, deep_chain_mounts);
        }
    };
    ($name:ident, $open:expr) => {
        mod $name {
            use std::path::Path;

            use $crate::Snapshotter;

            fn open(root: &Path) -> $crate::Result<Box<dyn Snapshotter>> {
                #[allow(clippy::redundant_closure_call)]
                let sn = ($open)(root)?;
                Ok(Box::new(sn))
            }

            $crate::snapshotter_conformance!(@tests open;
                layers_stack, deletions_hide_lower_files, keys_and_parents_are_checked,
                parents_with_children_stay, labels_update, usage_counts_own_files,
                survives_reopen, cleanup_keeps_live_snapshots, deep_chain_mounts);
        }
    };
    ($name:ident, $open:expr, on = $fs:expr) => {
        mod $name {
            use std::path::Path;

            use $crate::Snapshotter;

            fn open(root: &Path) -> $crate::Result<Box<dyn Snapshotter>> {
                #[allow(clippy::redundant_closure_call)]
                let sn = ($open)(root)?;
                Ok(Box::new(sn))
            }

            $crate::snapshotter_conformance!(@on $fs; open;
                layers_stack, deletions_hide_lower_files, keys_and_parents_are_checked,
                parents_with_children_stay, labels_update, usage_counts_own_files,
                survives_reopen, cleanup_keeps_live_snapshots, deep_chain_mounts);
        }
    };
    (@on $fs:expr; $open:ident; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                #[allow(clippy::redundant_closure_call)]
                let Some(fs): Option<$crate::testsuite::LoopFs> = ($fs)() else {
                    return;
                };
                $crate::testsuite::with_scratch_base(fs.path(), || {
                    $crate::testsuite::$check(&$open)
                });
            }
        )*
    };
    (@tests $open:ident, requires $driver:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                if !$crate::testsuite::host_supports($driver) {
                    return;
                }
                $crate::testsuite::$check(&$open);
            }
        )*
    };
    (@tests $open:ident; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                $crate::testsuite::$check(&$open);
            }
        )*
    };
}
