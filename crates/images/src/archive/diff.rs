//! Computing a layer: the changes from a lower directory tree to an upper
//! one, as an OCI tar layer (containerd's `archive.WriteDiff`).
//!
//! Both trees are walked together in name order. An upper entry that is
//! new, or whose type, mode, owner, size, times or link target differ from
//! the lower one, is written (with the parent directories it needs); a
//! lower entry missing from the upper tree becomes a `.wh.<name>` whiteout.
//! Regular files with equal metadata but a whole-second mtime are compared
//! byte for byte, since such times cannot tell an edit apart. Hard links
//! inside the change set stay hard links. Extended attributes are not
//! carried.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Why computing a diff failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Reading a tree or writing the archive failed.
    #[error("diff at {path:?}: {source}")]
    Io {
        /// Where (relative to the trees' roots).
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl berth_types::ErrorCategory for DiffError {
    fn category(&self) -> berth_types::Category {
        match self {
            DiffError::Io { source, .. } => crate::error::io_category(source),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |source| DiffError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a written diff amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// sha256 of the uncompressed tar (the layer's diffID).
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Entries written (whiteouts included).
    pub entries: u64,
}

/// Counts and hashes what passes through to the inner writer.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Walk<W: Write> {
    lower: PathBuf,
    upper: PathBuf,
    tar: tar::Builder<Hashing<W>>,
    /// Directories (relative) already written.
    written_dirs: std::collections::HashSet<PathBuf>,
    /// (dev, inode) of files written → their archive path, for hard links.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

/// Writes the changes from `lower` to `upper` as a tar stream to `out`.
pub fn write_diff(lower: &Path, upper: &Path, out: impl Write) -> Result<DiffStats, DiffError> {
    let mut w = Walk {
        lower: lower.to_path_buf(),
        upper: upper.to_path_buf(),
        tar: tar::Builder::new(Hashing {
            inner: out,
            hash: Sha256::new(),
            size: 0,
        }),
        written_dirs: Default::default(),
        links: HashMap::new(),
        entries: 0,
    };
    w.tar.follow_symlinks(false);
    w.dir(Path::new(""))?;
    let mut hashing = w.tar.into_inner().map_err(io_err(Path::new("")))?;
    hashing.flush().map_err(io_err(Path::new("")))?;
    Ok(DiffStats {
        diff_id: format!("sha256:{:x}", hashing.hash.finalize()),
        size: hashing.size,
        entries: w.entries,
    })
}

fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = match fs::read_dir(dir) {
        Ok(r) => r
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    names.sort();
    Ok(names)
}

fn same_meta(a: &Metadata, b: &Metadata) -> bool {
    a.file_type() == b.file_type()
        && a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.rdev() == b.rdev()
        && (a.is_dir()
            || (a.size() == b.size() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()))
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let na = fa.read(&mut ba)?;
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na])?;
            if n == 0 {
                return Ok(false);
            }
            nb += n;
        }
        if ba[..na] != bb[..na] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
    }
}

impl<W: Write> Walk<W> {
    /// Diffs directory `rel` (present in the upper tree).
    fn dir(&mut self, rel: &Path) -> Result<(), DiffError> {
        let upper_dir = self.upper.join(rel);
        let lower_dir = self.lower.join(rel);
        let upper_names = sorted_names(&upper_dir).map_err(io_err(rel))?;
        let lower_names = sorted_names(&lower_dir).map_err(io_err(rel))?;
        // Deletions: in lower, not in upper.
        for name in &lower_names {
            if upper_names.binary_search(name).is_err() {
                let mut wh = std::ffi::OsString::from(".wh.");
                wh.push(name);
                self.parents(rel)?;
                self.whiteout(&rel.join(wh))?;
            }
        }
        for name in upper_names {
            let path = rel.join(&name);
            let um = fs::symlink_metadata(self.upper.join(&path)).map_err(io_err(&path))?;
            let lm = fs::symlink_metadata(self.lower.join(&path)).ok();
            let changed = match &lm {
                None => true,
                Some(lm) if !same_meta(lm, &um) => true,
                Some(_) if um.is_file() && um.mtime_nsec() == 0 => {
                    !same_content(&self.lower.join(&path), &self.upper.join(&path))
                        .map_err(io_err(&path))?
                }
                Some(lm) if um.file_type().is_symlink() => {
                    let _ = lm;
                    fs::read_link(self.lower.join(&path)).ok()
                        != fs::read_link(self.upper.join(&path)).ok()
                }
                Some(_) => false,
            };
            if um.is_dir() {
                // A directory that replaced a non-directory hides what was below.
                if changed {
                    self.parents(rel)?;
                    self.entry(&path, &um)?;
                    self.written_dirs.insert(path.clone());
                }
                self.dir(&path)?;
            } else if changed {
                self.parents(rel)?;
                self.entry(&path, &um)?;
            }
        }
        Ok(())
    }

    /// Writes the directory headers of `rel` and its ancestors not written yet.
    fn parents(&mut self, rel: &Path) -> Result<(), DiffError> {
        let mut missing = Vec::new();
        let mut p = rel;
        while !p.as_os_str().is_empty() && !self.written_dirs.contains(p) {
            missing.push(p.to_path_buf());
            p = p.parent().unwrap_or(Path::new(""));
        }
        for dir in missing.into_iter().rev() {
            let m = fs::symlink_metadata(self.upper.join(&dir)).map_err(io_err(&dir))?;
            self.entry(&dir, &m)?;
            self.written_dirs.insert(dir);
        }
        Ok(())
    }

    fn header(m: &Metadata) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(u64::from(m.uid()));
        h.set_gid(u64::from(m.gid()));
        h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
        h.set_size(0);
        h
    }

    fn entry(&mut self, rel: &Path, m: &Metadata) -> Result<(), DiffError> {
        let full = self.upper.join(rel);
        let mut h = Self::header(m);
        let ft = m.file_type();
        let result = if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            // Directory entries end in `/`, as containerd's and Docker's
            // layer writers name them (`etc/`, not `etc`).
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            self.tar.append_data(&mut h, Path::new(&name), io::empty())
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(&full).map_err(io_err(rel))?;
            self.tar.append_link(&mut h, rel, target)
        } else if ft.is_file() {
            let key = (m.dev(), m.ino());
            if m.nlink() > 1 {
                if let Some(first) = self.links.get(&key).cloned() {
                    h.set_entry_type(tar::EntryType::Link);
                    self.entries += 1;
                    return self
                        .tar
                        .append_link(&mut h, rel, first)
                        .map_err(io_err(rel));
                }
                self.links.insert(key, rel.to_path_buf());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.size());
            let f = File::open(&full).map_err(io_err(rel))?;
            self.tar.append_data(&mut h, rel, f)
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let dev = m.rdev();
            let _ = h.set_device_major(u32::try_from(nix::sys::stat::major(dev)).unwrap_or(0));
            let _ = h.set_device_minor(u32::try_from(nix::sys::stat::minor(dev)).unwrap_or(0));
            self.tar.append_data(&mut h, rel, io::empty())
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            self.tar.append_data(&mut h, rel, io::empty())
        } else {
            // Sockets have no place in a layer.
            return Ok(());
        };
        self.entries += 1;
        result.map_err(io_err(rel))
    }

    fn whiteout(&mut self, rel: &Path) -> Result<(), DiffError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        self.entries += 1;
        self.tar
            .append_data(&mut h, rel, io::empty())
            .map_err(io_err(rel))
    }
}

/// [`write_diff`], compressed as `compression` says (the diffID is still
/// that of the uncompressed tar).
pub fn write_layer(
    lower: &Path,
    upper: &Path,
    out: impl Write,
    compression: super::Compression,
) -> Result<DiffStats, DiffError> {
    match compression {
        super::Compression::None => write_diff(lower, upper, out),
        super::Compression::Gzip => {
            // Fast level: layers are written once and read many times, but
            // commit latency is what a user waits for.
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            let stats = write_diff(lower, upper, &mut enc)?;
            enc.finish().map_err(io_err(Path::new("")))?;
            Ok(stats)
        }
        super::Compression::Zstd => {
            // Level 3, zstd's default: fast and already smaller than gzip.
            let mut enc = zstd::stream::write::Encoder::new(out, 3)
                .map_err(io_err(Path::new("(zstd stream)")))?;
            let stats = write_diff(lower, upper, &mut enc)?;
            enc.finish().map_err(io_err(Path::new("(zstd stream)")))?;
            Ok(stats)
        }
    }
}
