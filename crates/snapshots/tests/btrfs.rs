//! What is particular to the Btrfs driver: subvolumes, its mounts, its usage.

use std::fs;
use std::os::unix::fs::MetadataExt;

use berth_snapshots::btrfs::BtrfsSnapshotter;
use berth_snapshots::testsuite::{LoopFs, Scratch, with_scratch_base};
use berth_snapshots::{Labels, Snapshotter};

#[test]
fn snapshots_are_subvolumes_mounted_by_subvolid() {
    let Some(fs) = LoopFs::new("btrfs", &["-q"], 256 << 20) else {
        return;
    };
    with_scratch_base(fs.path(), || {
        let mut s = Scratch::new();
        let sn = BtrfsSnapshotter::new(s.root()).unwrap();
        assert!(sn.device().starts_with("/dev/loop"), "{}", sn.device());
        let m = sn.prepare("a", None, Labels::new()).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, "btrfs");
        assert_eq!(m[0].source, sn.device());
        assert_eq!(m[0].options.len(), 1);
        assert!(
            m[0].options[0].starts_with("subvolid="),
            "{:?}",
            m[0].options
        );
        // Every snapshot's root is a subvolume root (inode 256).
        let active = s.root().join("active/1");
        assert_eq!(fs::metadata(&active).unwrap().ino(), 256);
        {
            let g = s.mount(&m);
            fs::write(g.target().join("f"), vec![1_u8; 64 << 10]).unwrap();
            g.unmount().unwrap();
        }
        sn.commit("A", "a", Labels::new()).unwrap();
        assert!(
            !active.exists(),
            "the active subvolume goes with its commit"
        );
        let committed = s.root().join("snapshots/1");
        assert_eq!(fs::metadata(&committed).unwrap().ino(), 256);
        // Committed subvolumes are read-only.
        let e = fs::write(committed.join("g"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(30), "{e}"); // EROFS
        let v = sn.view("v", Some("A"), Labels::new()).unwrap();
        assert_eq!(v[0].options.last().map(String::as_str), Some("ro"));
        assert!(s.root().join("view/2").exists());
        // A child's usage is what it changed, not the parent's data.
        let c = sn.prepare("c", Some("A"), Labels::new()).unwrap();
        assert_eq!(sn.usage("c").unwrap().inodes, 0);
        {
            let g = s.mount(&c);
            assert_eq!(fs::read(g.target().join("f")).unwrap().len(), 64 << 10);
            fs::write(g.target().join("new"), vec![2_u8; 8 << 10]).unwrap();
            g.unmount().unwrap();
        }
        let u = sn.usage("c").unwrap();
        assert_eq!(u.inodes, 1, "{u:?}");
        assert!(u.size >= 8 << 10 && u.size < 64 << 10, "{u:?}");
        sn.remove("c").unwrap();
        sn.remove("v").unwrap();
        assert!(!s.root().join("view/2").exists());
    });
}

#[test]
fn cleanup_deletes_subvolumes_a_crash_left() {
    let Some(fs) = LoopFs::new("btrfs", &["-q"], 256 << 20) else {
        return;
    };
    with_scratch_base(fs.path(), || {
        let s = Scratch::new();
        let sn = BtrfsSnapshotter::new(s.root()).unwrap();
        sn.prepare("a", None, Labels::new()).unwrap();
        sn.commit("A", "a", Labels::new()).unwrap();
        drop(sn);
        // As a crash between making subvolumes and recording them leaves:
        // an active subvolume with the committed snapshot's id, and one
        // with an id no record has.
        let mk = |dir: &str, name: &str| {
            let out = std::process::Command::new("btrfs")
                .args(["subvolume", "create"])
                .arg(s.root().join(dir).join(name))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        };
        mk("active", "1");
        mk("snapshots", "7");
        let sn = BtrfsSnapshotter::new(s.root()).unwrap();
        sn.cleanup().unwrap();
        assert!(!s.root().join("active/1").exists());
        assert!(!s.root().join("snapshots/7").exists());
        assert!(s.root().join("snapshots/1").exists());
        // The next id is 2; a stale subvolume under it is replaced.
        mk("active", "2");
        fs::write(s.root().join("active/2/stale"), "x").unwrap();
        sn.prepare("b", Some("A"), Labels::new()).unwrap();
        assert!(!s.root().join("active/2/stale").exists());
    });
}
