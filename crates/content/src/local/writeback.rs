//! Starting the write-out of ingested data early.
//!
//! An ingest writes into the page cache; left alone, the kernel writes it to
//! disk only when `commit` calls fsync, which then waits for all of it (about
//! 20 ms for 64 MiB here, a third of the hashing time). Asking for the
//! write-out of each few megabytes as soon as they are written lets the
//! disk work while the writer keeps hashing, so the fsync finds little left.
//!
//! This is a hint for speed, not for durability: `sync_file_range(2)` makes
//! no promise about metadata or the disk cache, which is why commit still
//! fsyncs. Pages stay cached, so a blob read right after its pull (layer
//! unpack) still comes from memory.

// The one FFI call below has no safe wrapper in nix or rustix.
#![allow(unsafe_code)]

use std::fs::File;

/// Write-out is started each time this many new bytes are in the file.
pub(super) const STEP: u64 = 4 << 20;

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to
/// disk, without waiting for it. Failures only cost speed, so they are
/// logged at trace level and otherwise ignored.
#[cfg(target_os = "linux")]
pub(super) fn start(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;

    let (Ok(offset), Ok(len)) = (offset.try_into(), len.try_into()) else {
        return;
    };
    // SAFETY: sync_file_range(2) takes plain integers and touches no memory
    // of ours; the descriptor is valid because `file` is borrowed (so open)
    // for the whole call.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc != 0 {
        tracing::trace!(error = %std::io::Error::last_os_error(), "sync_file_range failed");
    }
}

/// Elsewhere there is no such call: commit's fsync does all the work.
#[cfg(not(target_os = "linux"))]
pub(super) fn start(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn starting_write_out_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(&[7; 10_000]).unwrap();
        start(&file, 0, 10_000);
        // Past the end and huge ranges are harmless too.
        start(&file, 5_000, u64::MAX);
        assert_eq!(std::fs::read(&path).unwrap(), vec![7; 10_000]);
    }
}
