//! What is particular to the blockfile driver: images cloned by reflink
//! where the filesystem shares extents, and mounted through loop devices.

use std::fs;
use std::process::Command;

use berth_snapshots::blockfile::{BlockfileConfig, BlockfileSnapshotter};
use berth_snapshots::testsuite::{LoopFs, Scratch, with_scratch_base};
use berth_snapshots::{Labels, Snapshotter};

/// On Btrfs, a child's image shares its data with the parent's (FICLONE),
/// and what the child writes stays its own.
#[test]
fn images_are_reflinked_on_btrfs() {
    if !berth_snapshots::testsuite::host_supports("blockfile") {
        return;
    }
    let Some(fs) = LoopFs::new("btrfs", &["-q"], 512 << 20) else {
        return;
    };
    with_scratch_base(fs.path(), || {
        let mut s = Scratch::new();
        let scratch = s.root().with_file_name("scratch.ext4");
        fs::File::create(&scratch)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&scratch)
            .output()
            .expect("mkfs.ext4 (cargo xtask deps installs e2fsprogs)");
        assert!(out.status.success(), "{out:?}");
        let config = BlockfileConfig {
            scratch_file: Some(scratch),
            ..Default::default()
        };
        let sn = BlockfileSnapshotter::new(s.root(), config).unwrap();
        let m = sn.prepare("a", None, Labels::new()).unwrap();
        {
            let g = s.mount(&m);
            fs::write(g.target().join("data"), vec![7_u8; 4 << 20]).unwrap();
            g.unmount().unwrap();
        }
        sn.commit("A", "a", Labels::new()).unwrap();
        let c = sn.prepare("c", Some("A"), Labels::new()).unwrap();
        let image = s.root().join("snapshots/2");
        let out = Command::new("filefrag")
            .arg("-v")
            .arg(&image)
            .output()
            .expect("filefrag (e2fsprogs)");
        let extents = String::from_utf8_lossy(&out.stdout);
        assert!(extents.contains("shared"), "no shared extent:\n{extents}");
        {
            let g = s.mount(&c);
            assert_eq!(fs::read(g.target().join("data")).unwrap().len(), 4 << 20);
            fs::write(g.target().join("data"), b"changed").unwrap();
            g.unmount().unwrap();
        }
        let v = sn.view("v", Some("A"), Labels::new()).unwrap();
        let g = s.mount(&v);
        assert_eq!(fs::read(g.target().join("data")).unwrap().len(), 4 << 20);
        g.unmount().unwrap();
    });
}
