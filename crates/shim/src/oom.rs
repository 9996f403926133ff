//! OOM notifications: a cgroup v1 memory controller signals an eventfd
//! registered through `cgroup.event_control` each time the cgroup hits its
//! limit; each signal becomes a `/tasks/oom` event, as containerd's runc
//! shim publishes them.
//!
//! cgroup v2 hosts (OOM kills counted in `memory.events`) are not watched
//! yet: there the event is simply not published.

use std::os::fd::AsRawFd;
use std::path::Path;

use berth_api::containerd::events as ev;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;

use super::events::Publisher;
use berth_runtime::cgroups::Cgroup;

/// Watches the memory cgroup of `pid` (the init process of `container_id`)
/// until the cgroup goes away. Returns without watching on a host whose
/// containers are not in a v1 memory cgroup.
pub(crate) fn watch(container_id: String, pid: u32, publisher: Publisher) -> std::io::Result<()> {
    let dir = match Cgroup::for_pid(pid) {
        Ok(Cgroup::V1(cgroup)) => match cgroup.dir("memory") {
            Some(dir) => dir,
            None => return Ok(()),
        },
        Ok(Cgroup::V2(_)) => return Ok(()),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let control = std::fs::File::open(dir.join("memory.oom_control"))?;
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )?;
    // The EventFd owns its descriptor and AsyncFd owns the EventFd, so the
    // descriptor cannot close while registered (the deprecation's concern).
    #[allow(deprecated)]
    let efd = AsyncFd::new(efd)?;
    tokio::spawn(async move {
        // The registration lives as long as both descriptors are open.
        let _control = control;
        loop {
            let Ok(mut ready) = efd.readable().await else {
                return;
            };
            match ready.try_io(|fd| fd.get_ref().read().map_err(std::io::Error::from)) {
                Ok(Ok(_)) => {
                    // Removing the cgroup also signals: that is the end.
                    if !Path::new(&dir).join("memory.oom_control").exists() {
                        return;
                    }
                    tracing::debug!(id = %container_id, "out of memory");
                    publisher.publish(
                        "/tasks/oom",
                        &ev::TaskOom {
                            container_id: container_id.clone(),
                        },
                    );
                }
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            }
        }
    });
    Ok(())
}
