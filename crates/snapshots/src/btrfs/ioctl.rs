//! The four Btrfs ioctls the driver needs, called directly (no `btrfs`
//! command): create a subvolume, snapshot one, delete one, and read a
//! subvolume's id. Numbers and layouts are those of `linux/btrfs.h`.

#![allow(unsafe_code)]

use std::ffi::c_ulong;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{Error, Result};

/// `BTRFS_IOCTL_MAGIC`.
const MAGIC: c_ulong = 0x94;
/// `BTRFS_PATH_NAME_MAX`: the name buffer of `btrfs_ioctl_vol_args` less its NUL.
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_NAME_MAX`: the name buffer of `btrfs_ioctl_vol_args_v2` less its NUL.
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_INO_LOOKUP_PATH_MAX`.
const INO_LOOKUP_PATH_MAX: usize = 4080;
/// `BTRFS_SUBVOL_RDONLY`: the new snapshot is read-only.
const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root.
pub(crate) const FIRST_FREE_OBJECTID: u64 = 256;
/// `BTRFS_SUPER_MAGIC`, statfs(2)'s `f_type` on Btrfs.
pub(crate) const SUPER_MAGIC: i64 = 0x9123_683e;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (the qgroup union left zero).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

/// `_IOW(BTRFS_IOCTL_MAGIC, nr, T)` / `_IOWR(...)` (asm-generic encoding).
const fn request(write_only: bool, nr: c_ulong, size: usize) -> c_ulong {
    let dir: c_ulong = if write_only { 1 } else { 3 };
    (dir << 30) | ((size as c_ulong) << 16) | (MAGIC << 8) | nr
}

const SUBVOL_CREATE: c_ulong = request(true, 14, size_of::<VolArgs>());
const SNAP_DESTROY: c_ulong = request(true, 15, size_of::<VolArgs>());
const SNAP_CREATE_V2: c_ulong = request(true, 23, size_of::<VolArgsV2>());
const INO_LOOKUP: c_ulong = request(false, 18, size_of::<InoLookupArgs>());

fn open_dir(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(path, e))
}

/// Copies `name` into a NUL-terminated buffer, refusing names that do not fit.
fn fill_name<const N: usize>(buf: &mut [u8; N], name: &str, path: &Path) -> Result<()> {
    if name.is_empty() || name.len() >= N || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "{}: not a valid subvolume name",
            path.display()
        )));
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    Ok(())
}

fn check(ret: i32, path: &Path) -> Result<()> {
    if ret < 0 {
        return Err(Error::io(path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Creates the empty subvolume `dir/name` (`btrfs subvolume create`).
pub(crate) fn subvol_create(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    let d = open_dir(dir)?;
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    });
    fill_name(&mut args.name, name, &path)?;
    // SAFETY: `d` is an open directory; `args` is a valid, initialised
    // `btrfs_ioctl_vol_args` that outlives the call, which only reads it.
    let ret = unsafe { nix::libc::ioctl(d.as_raw_fd(), SUBVOL_CREATE, &raw mut *args) };
    check(ret, &path)
}

/// Snapshots subvolume `src` as `dir/name`, read-only if `readonly`
/// (`btrfs subvolume snapshot [-r]`).
pub(crate) fn snapshot(src: &Path, dir: &Path, name: &str, readonly: bool) -> Result<()> {
    let path = dir.join(name);
    let s = open_dir(src)?;
    let d = open_dir(dir)?;
    let mut args = Box::new(VolArgsV2 {
        fd: i64::from(s.as_raw_fd()),
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    });
    fill_name(&mut args.name, name, &path)?;
    // SAFETY: `d` and `s` are open directories that outlive the call;
    // `args` is a valid `btrfs_ioctl_vol_args_v2` the kernel only reads.
    let ret = unsafe { nix::libc::ioctl(d.as_raw_fd(), SNAP_CREATE_V2, &raw mut *args) };
    check(ret, &path)
}

/// Deletes subvolume `dir/name` (`btrfs subvolume delete`), read-only or not.
pub(crate) fn subvol_delete(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    let d = open_dir(dir)?;
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    });
    fill_name(&mut args.name, name, &path)?;
    // SAFETY: as in `subvol_create`.
    let ret = unsafe { nix::libc::ioctl(d.as_raw_fd(), SNAP_DESTROY, &raw mut *args) };
    check(ret, &path)
}

/// The id of the subvolume whose root is `path` (what `subvolid=` takes).
pub(crate) fn subvol_id(path: &Path) -> Result<u64> {
    let d = open_dir(path)?;
    let mut args = Box::new(InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; INO_LOOKUP_PATH_MAX],
    });
    // SAFETY: `d` is an open directory; `args` is a valid
    // `btrfs_ioctl_ino_lookup_args` the kernel reads and writes in place.
    let ret = unsafe { nix::libc::ioctl(d.as_raw_fd(), INO_LOOKUP, &raw mut *args) };
    check(ret, path)?;
    Ok(args.treeid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_linux_btrfs_h() {
        assert_eq!(size_of::<VolArgs>(), 4096);
        assert_eq!(size_of::<VolArgsV2>(), 4096);
        assert_eq!(size_of::<InoLookupArgs>(), 4096);
        assert_eq!(SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(SNAP_DESTROY, 0x5000_940f);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(INO_LOOKUP, 0xd000_9412);
    }

    #[test]
    fn names_are_checked() {
        let mut buf = [0_u8; 8];
        assert!(fill_name(&mut buf, "a/b", Path::new("x")).is_err());
        assert!(fill_name(&mut buf, "", Path::new("x")).is_err());
        assert!(fill_name(&mut buf, "12345678", Path::new("x")).is_err());
        fill_name(&mut buf, "1234567", Path::new("x")).unwrap();
    }
}
