//! Loop devices for mounts with the `loop` option (containerd's
//! `mount.setupLoop`): a file is attached to a free `/dev/loopN`, with
//! autoclear, so the device detaches by itself once the mount made on it
//! (the last user) is gone.

#![allow(unsafe_code)]

use std::ffi::c_ulong;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::{Error, Result};

/// `LOOP_CTL_GET_FREE` (on `/dev/loop-control`).
const LOOP_CTL_GET_FREE: c_ulong = 0x4c82;
/// `LOOP_CONFIGURE` (Linux 5.8): attach and configure in one call.
const LOOP_CONFIGURE: c_ulong = 0x4c0a;
/// `LO_FLAGS_READ_ONLY`.
const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: detach on the last close.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device attached to a file; detaches when its last user (the
/// mount made on it, or this handle if no mount was made) goes.
#[derive(Debug)]
pub(crate) struct LoopDevice {
    path: PathBuf,
    /// Held until the mount holds the device.
    _dev: File,
}

impl LoopDevice {
    /// The device node, `/dev/loopN`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// How many times a free device is asked for when another process takes
/// the one the kernel offered first (a race the kernel API leaves open).
const ATTEMPTS: usize = 32;

/// Attaches `file` to a free loop device, read-only if `read_only`.
pub(crate) fn attach(file: &Path, read_only: bool) -> Result<LoopDevice> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(file)
        .map_err(|e| Error::io(file, e))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| Error::io("/dev/loop-control", e))?;
    let mut last = io::Error::from_raw_os_error(nix::libc::EBUSY);
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { nix::libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Error::io("/dev/loop-control", io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut config = Box::new(LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).unwrap_or_default(),
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 },
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        });
        let name = file.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: `dev` is an open loop device and `config` a valid
        // `struct loop_config` that outlives the call, which only reads it.
        let ret = unsafe { nix::libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &raw mut *config) };
        if ret == 0 {
            debug!(device = %path.display(), file = %file.display(), read_only, "attached loop device");
            return Ok(LoopDevice { path, _dev: dev });
        }
        last = io::Error::last_os_error();
        // Taken meanwhile by someone else: ask for another.
        if last.raw_os_error() != Some(nix::libc::EBUSY) {
            break;
        }
    }
    Err(Error::io(file, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_match_linux_loop_h() {
        assert_eq!(size_of::<LoopInfo64>(), 232);
        assert_eq!(size_of::<LoopConfig>(), 304);
    }
}
