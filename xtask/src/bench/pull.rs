//! The `pull` scenario, and the clean slate before each pull: an image,
//! its snapshots and all content removed from a daemon ([`reset_image`],
//! [`remove_snapshots`], [`remove_content`]), as the big image's set-up
//! and the `unpack` scenario need too.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::daemons::Daemon;
use super::report::{Better, Goal, Row, Summary, print_and_save};
use super::{Ctx, rounds, timed};
use crate::Result;

/// Removes image `name`, its snapshots and (with `content`) all content from `d`.
pub(super) fn reset_image(d: &Daemon, name: &str, content: bool) {
    let _ = d.ctr(&["images", "rm", "--sync", name]).status();
    remove_snapshots(d, "overlayfs");
    if content {
        remove_content(d);
    }
}

/// Removes every snapshot of snapshotter `sn` from `d`.
pub(super) fn remove_snapshots(d: &Daemon, sn: &str) {
    // Snapshots leaf first: repeat until nothing more goes.
    for _ in 0..10 {
        let out = d
            .ctr(&["snapshots", "--snapshotter", sn, "ls"])
            .stdout(Stdio::piped())
            .output();
        let keys: Vec<String> = out
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if keys.is_empty() {
            break;
        }
        for k in keys {
            let _ = d
                .ctr(&["snapshots", "--snapshotter", sn, "rm", &k])
                .status();
        }
    }
}

/// Removes all content from `d`, and waits for its blobs to be gone.
pub(super) fn remove_content(d: &Daemon) {
    let out = d
        .ctr(&["content", "ls", "-q"])
        .stdout(Stdio::piped())
        .output();
    if let Ok(o) = out {
        for digest in String::from_utf8_lossy(&o.stdout).lines() {
            let _ = d.ctr(&["content", "rm", digest]).status();
        }
    }
    // Garbage collection removes the blobs in the background: wait for
    // it, so the next pull really downloads.
    let blobs = d.root.join("io.containerd.content.v1.content/blobs/sha256");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&blobs).is_ok_and(|mut r| r.next().is_some())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pull`: the ~250 MB 6-layer image from a local registry into the
/// default snapshotter (overlayfs), fresh content each run. berthd pulls
/// daemon-side (`berthctl pull`), containerd 1.6 client-side (`ctr pull`).
/// `unpack` (see [`unpack`](super::unpack)) measures pull and unpack per snapshotter.
pub(super) fn scenario_pull(
    berth: &Daemon,
    containerd: &Daemon,
    ctx: &mut Ctx,
    s: &mut Summary,
) -> Result<()> {
    let big = ctx.big(berth)?;
    // The main row: the same client (Debian's ctr 1.6, client-side pull:
    // it fetches the blobs itself, writes them through Content.Write and
    // unpacks through Diff.Apply and Snapshots) against both daemons.
    let mut ctr_row =
        Row::new("pull 250 MB, 6 layers (ctr pull)", "s", Better::Lower).goal(Goal::AtMost(0.4));
    // Each daemon's fastest client path: berthd pulls daemon-side
    // (Transfer, berthctl pull); ctr 1.6 only pulls client-side.
    let mut transfer_row = Row::new(
        "pull 250 MB, 6 layers (berthctl pull vs ctr pull)",
        "s",
        Better::Lower,
    )
    .goal(Goal::AtMost(0.33));
    for _ in 0..rounds() {
        for d in [berth, containerd] {
            reset_image(d, &big.remote, true);
            let t = timed(d.ctr(&["images", "pull", "--plain-http", &big.remote]))?;
            ctr_row.push(d, t.as_secs_f64());
            if d.is_berth() {
                reset_image(d, &big.remote, true);
                let t = timed(d.berthctl(&["pull", "--plain-http", &big.remote]))?;
                transfer_row.push(d, t.as_secs_f64());
            } else {
                // The same ctr pull is containerd's figure in both rows.
                transfer_row.push(d, t.as_secs_f64());
            }
        }
    }
    // Leave the daemons as small as they were for later scenarios.
    for d in [berth, containerd] {
        reset_image(d, &big.remote, true);
    }
    print_and_save("pull", &mut [ctr_row, transfer_row], s)
}
