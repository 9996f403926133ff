//! Network namespaces for pods: made by berth, pinned by a bind mount of
//! the namespace file (as `ip netns add` and containerd's `netns` package
//! do), so CNI and the pause container can both enter it by path.
//!
//! A new namespace has its loopback interface up at once: what CNI's
//! `loopback` plugin does for containerd (its `lo` network), done here on
//! the thread that made the namespace instead of by one more plugin
//! process per pod start (and one per stop: the interface goes with the
//! namespace).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{CriError, Result};

/// Creates a new network namespace pinned at `dir/<name>`.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(name);
    std::fs::File::create(&path)
        .map_err(|e| CriError::Internal(format!("creating {}: {e}", path.display())))?;
    let target = path.clone();
    // A thread of its own enters the new namespace and dies with it: no
    // other thread of the daemon ever changes namespace.
    let pinned = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| CriError::Internal(format!("unshare(CLONE_NEWNET): {e}")))?;
        loopback_up().map_err(|e| CriError::Internal(format!("setting the pod's lo up: {e}")))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            CriError::Internal(format!(
                "pinning the network namespace at {}: {e}",
                target.display()
            ))
        })
    })
    .join()
    .map_err(|_| CriError::Internal("the network namespace thread panicked".into()))?;
    if let Err(e) = pinned {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// rtnetlink's `RTM_NEWLINK`.
const RTM_NEWLINK: u16 = 16;
/// rtnetlink's answer to a request: an error code, 0 for an acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// The loopback interface's index in every network namespace (the
/// kernel's `LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: i32 = 1;
/// The interface flag `IFF_UP`.
const IFF_UP: u32 = 1;

/// Sets the loopback interface of the calling thread's network namespace
/// up, as `ip link set lo up` does: one acknowledged `RTM_NEWLINK`.
fn loopback_up() -> std::result::Result<(), nix::errno::Errno> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
    };

    let fd = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // struct nlmsghdr, then struct ifinfomsg, in host byte order.
    let flags = (NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes();
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32_u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    msg.extend_from_slice(&flags); // nlmsg_flags
    msg.extend_from_slice(&1_u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&0_u32.to_ne_bytes()); // nlmsg_pid: the kernel assigns it
    msg.extend_from_slice(&[0, 0]); // ifi_family (AF_UNSPEC), padding
    msg.extend_from_slice(&0_u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&LOOPBACK_IFINDEX.to_ne_bytes()); // ifi_index
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    nix::sys::socket::sendto(
        fd.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut answer = [0_u8; 512];
    let n = nix::sys::socket::recv(fd.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    // An acknowledgement is an NLMSG_ERROR whose error is 0 (a negated
    // errno otherwise), right after the 16-byte header.
    let kind = answer
        .get(4..6)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_ne_bytes);
    let error = answer
        .get(16..20)
        .filter(|_| n >= 20)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_ne_bytes);
    match (kind, error) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(e)) => Err(nix::errno::Errno::from_raw(-e)),
        _ => Err(nix::errno::Errno::EPROTO),
    }
}

/// Netlink's header flag of a request.
const NLM_F_REQUEST: u16 = 0x1;
/// Netlink's header flag asking for an acknowledgement.
const NLM_F_ACK: u16 = 0x4;

/// Unpins and removes the namespace at `path`; a missing one is fine.
pub fn remove(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(CriError::Internal(format!(
                "unmounting network namespace {}: {e}",
                path.display()
            )));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CriError::Internal(format!(
            "removing {}: {e}",
            path.display()
        ))),
    }
}

/// Runs `f` on a thread inside the network namespace at `path` (to dial a
/// pod's port for port forwarding).
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = std::fs::File::open(path)
        .map_err(|e| CriError::NotFound(format!("network namespace {}: {e}", path.display())))?;
    std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| CriError::Internal(format!("setns: {e}")))?;
        Ok(f())
    })
    .join()
    .map_err(|_| CriError::Internal("the network namespace thread panicked".into()))?
}
