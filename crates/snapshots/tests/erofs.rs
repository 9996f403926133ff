//! What is particular to the EROFS driver: committed layers become EROFS
//! images, and mounts take containerd's three shapes.

use std::fs;

use berth_snapshots::erofs::ErofsSnapshotter;
use berth_snapshots::testsuite::Scratch;
use berth_snapshots::{Labels, Snapshotter};

#[test]
fn commits_become_erofs_images_and_mounts_follow_containerd() {
    if !berth_snapshots::testsuite::host_supports("erofs") {
        return;
    }
    let mut s = Scratch::new();
    let sn = match ErofsSnapshotter::new(s.root()) {
        Ok(sn) => sn,
        Err(e) if e.is_failed_precondition() => {
            berth_snapshots::testsuite::skip(&e.to_string());
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let m = sn.prepare("a", None, Labels::new()).unwrap();
    assert_eq!(m[0].kind, "bind");
    assert_eq!(m[0].options, ["rw", "rbind"]);
    {
        let g = s.mount(&m);
        fs::write(g.target().join("f"), "data").unwrap();
        g.unmount().unwrap();
    }
    sn.commit("A", "a", Labels::new()).unwrap();
    let dir = s.root().join("snapshots/1");
    let image = fs::read(dir.join("layer.erofs")).unwrap();
    // The EROFS superblock magic sits at byte 1024.
    assert_eq!(image[1024..1028], 0xe0f5_e1e2_u32.to_le_bytes());
    assert_eq!(fs::read_dir(dir.join("fs")).unwrap().count(), 0);
    assert!(sn.usage("A").unwrap().size > 0);
    // A view of one layer is its image, through a loop device.
    let v = sn.view("v", Some("A"), Labels::new()).unwrap();
    assert_eq!(v[0].kind, "erofs");
    assert_eq!(v[0].options, ["ro", "loop"]);
    {
        let g = s.mount(&v);
        assert_eq!(fs::read_to_string(g.target().join("f")).unwrap(), "data");
        g.unmount().unwrap();
    }
    // An active child is an overlay on the layer's mounted image.
    let c = sn.prepare("c", Some("A"), Labels::new()).unwrap();
    assert_eq!(c[0].kind, "overlay");
    let lower = format!("lowerdir={}", dir.join("fs").display());
    assert!(c[0].options.contains(&lower), "{:?}", c[0].options);
    assert_eq!(fs::read_to_string(dir.join("fs/f")).unwrap(), "data");
    sn.remove("c").unwrap();
    sn.remove("v").unwrap();
    sn.remove("A").unwrap();
    assert!(!dir.exists(), "the layer's mount and directory go with it");
}
