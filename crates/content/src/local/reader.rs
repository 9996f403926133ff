//! Positional reads of a committed blob file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::ReaderAt;
use crate::error::{Error, Result};

/// A blob opened for reading: `pread(2)` on its file.
///
/// The file stays readable after the blob is deleted. [`LocalReader::file`]
/// and [`LocalReader::path`] let a server hand the file to `sendfile(2)` or
/// `splice(2)` instead of copying through user space.
#[derive(Debug)]
pub struct LocalReader {
    file: File,
    size: u64,
    path: PathBuf,
}

impl LocalReader {
    pub(crate) fn new(file: File, size: u64, path: PathBuf) -> LocalReader {
        LocalReader { file, size, path }
    }

    /// The blob's file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the blob's file is (it may since have been deleted).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ReaderAt for LocalReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
    }

    fn size(&self) -> u64 {
        self.size
    }
}
