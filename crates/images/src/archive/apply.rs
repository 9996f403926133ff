//! Applying a layer (a tar stream, plain or gzip) to a directory, never
//! writing outside it.
//!
//! Containment does not rely on checking names: every parent directory is
//! opened with `openat2(RESOLVE_IN_ROOT)`, so the kernel resolves `..` and
//! symlinks as if the root were `/`, and every entry is then created
//! relative to that directory handle (`*at` calls, `O_NOFOLLOW`). A layer
//! that plants `evil -> /` and then writes `evil/etc/passwd` writes
//! `<root>/etc/passwd`. Hardlink targets are resolved the same way, so a
//! link can only point at a file inside the root. Names with `..` are
//! rejected outright, as containerd does.
//!
//! OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) either remove what they
//! hide ([`Whiteouts::Remove`], for plain directories) or are converted to
//! overlayfs' form ([`Whiteouts::Overlay`]: a 0:0 character device, the
//! `trusted.overlay.opaque` xattr) when applying into an overlay upper dir.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};

/// Largest PAX header or GNU long name accepted (containerd's Go tar reader
/// refuses similar sizes); bigger ones are an attack or a broken stream.
const MAX_HEADER_DATA: u64 = 1 << 20;

/// How OCI whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Remove what they hide (a plain directory holding all layers).
    Remove,
    /// Convert to overlayfs whiteouts (applying into an overlay upper dir).
    Overlay,
}

/// The compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream (the layer's diffID).
    pub diff_id: String,
    /// Size of the uncompressed tar stream.
    pub size: u64,
    /// Entries applied.
    pub entries: u64,
    /// Whiteout entries among them (`.wh.<name>` and `.wh..wh..opq`).
    pub whiteouts: u64,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An entry's name is not acceptable (`..`).
    #[error("layer entry {path:?}: {reason}")]
    BadPath {
        /// The name in the archive.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The stream is not a valid (compressed) tar archive.
    #[error("malformed layer (after {offset} bytes of tar): {message}")]
    Malformed {
        /// Uncompressed bytes read before the problem.
        offset: u64,
        /// What was wrong.
        message: String,
    },
    /// The diffID does not match the expected one.
    #[error("layer diffID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// What the image config says.
        expected: String,
        /// What the stream hashes to.
        actual: String,
    },
    /// A filesystem operation failed.
    #[error("layer entry {path:?}: {source}")]
    Io {
        /// The entry.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl berth_types::ErrorCategory for ApplyError {
    fn category(&self) -> berth_types::Category {
        use berth_types::Category;
        match self {
            ApplyError::BadPath { .. }
            | ApplyError::Malformed { .. }
            | ApplyError::DiffIdMismatch { .. } => Category::InvalidArgument,
            ApplyError::Io { source, .. } => crate::error::io_category(source),
        }
    }
}

/// Counts and hashes what the tar reader consumes.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn io_err(path: &str) -> impl FnOnce(rustix::io::Errno) -> ApplyError + '_ {
    move |e| ApplyError::Io {
        path: path.to_string(),
        source: e.into(),
    }
}

/// The entry's path as components inside the root; `..` is refused.
fn clean_path(raw: &Path) -> Result<PathBuf, ApplyError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(ApplyError::BadPath {
                    path: raw.display().to_string(),
                    reason: "names with `..` are not allowed in layers",
                });
            }
            Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Opens directory `rel` under `root`, resolved as if `root` were `/`.
fn open_dir_in_root(root: &OwnedFd, rel: &Path) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        root,
        rel,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Opens (creating missing levels, mode 0755) directory `rel` under `root`.
fn ensure_dir(root: &OwnedFd, rel: &Path) -> rustix::io::Result<OwnedFd> {
    match open_dir_in_root(root, rel) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e),
    }
    let mut dir = open_dir_in_root(root, Path::new("."))?;
    let mut so_far = PathBuf::new();
    for c in rel.components() {
        so_far.push(c);
        match rustix::fs::mkdirat(&dir, c.as_os_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        dir = open_dir_in_root(root, &so_far)?;
    }
    Ok(dir)
}

/// Removes `name` in `dir` (recursively for a directory); missing is fine.
fn remove_all_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> rustix::io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            empty_dir(&sub)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()),
    }
}

/// Removes everything inside `dir`.
fn empty_dir(dir: &OwnedFd) -> rustix::io::Result<()> {
    let names: Vec<std::ffi::OsString> = {
        let listing = rustix::fs::openat(
            dir,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut d = rustix::fs::Dir::read_from(&listing)?;
        let mut names = Vec::new();
        while let Some(e) = d.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(std::ffi::OsString::from(
                    std::str::from_utf8(n)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| String::from_utf8_lossy(n).into_owned()),
                ));
            }
        }
        names
    };
    for n in names {
        remove_all_at(dir, &n)?;
    }
    Ok(())
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(0),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The plain tar of a layer `stream` compressed with `compression`, read
/// in large steps (large reads from the source, large decompressed ones).
///
/// Errors: a zstd stream whose decoder cannot be set up.
pub fn decompress<'a>(
    stream: impl Read + 'a,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    let stream = io::BufReader::with_capacity(1 << 20, stream);
    Ok(match compression {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(io::BufReader::with_capacity(
            1 << 20,
            flate2::bufread::GzDecoder::new(stream),
        )),
        Compression::Zstd => Box::new(io::BufReader::with_capacity(
            1 << 20,
            zstd::stream::read::Decoder::with_buffer(stream)?,
        )),
    })
}

/// Applies the layer `stream` to directory `root`.
///
/// With `expected_diff_id`, a mismatch is an error once the whole stream
/// was read (the caller then discards the directory's changes).
pub fn apply(
    root: &Path,
    stream: impl Read,
    compression: Compression,
    whiteouts: Whiteouts,
    expected_diff_id: Option<&str>,
) -> Result<ApplyStats, ApplyError> {
    let reader = decompress(stream, compression).map_err(|source| ApplyError::Io {
        path: "(zstd stream)".to_string(),
        source,
    })?;
    let mut hashing = Hashing {
        inner: reader,
        hash: Sha256::new(),
        count: 0,
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("/"))?;
    let mut entries = 0_u64;
    let mut whiteout_count = 0_u64;
    // One large buffer for all file data: fewer, bigger reads and writes.
    let mut buf = vec![0_u8; 1 << 20];
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    {
        // The tar parser buffers extension headers whole before this loop
        // sees them: the guard refuses oversized ones as they stream in.
        let mut archive = tar::Archive::new(super::guard::HeaderGuard::new(
            &mut hashing,
            MAX_HEADER_DATA,
        ));
        archive.set_preserve_permissions(true);
        let iter = archive.entries().map_err(|e| ApplyError::Malformed {
            offset: 0,
            message: e.to_string(),
        })?;
        for entry in iter.raw(false) {
            let mut entry = entry.map_err(|e| ApplyError::Malformed {
                offset: 0,
                message: e.to_string(),
            })?;
            let kind = entry.header().entry_type();
            let raw_path = entry.path().map_err(|e| ApplyError::Malformed {
                offset: 0,
                message: format!("unreadable entry name: {e}"),
            })?;
            let entry_name = raw_path.display().to_string();
            let path = clean_path(&raw_path)?;
            entries += 1;
            let Some(name) = path.file_name().map(std::ffi::OsStr::to_os_string) else {
                continue; // the root itself
            };
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let dir = ensure_dir(&root_fd, &parent).map_err(io_err(&entry_name))?;
            let name_str = name.to_string_lossy().into_owned();

            // Whiteouts.
            if let Some(hidden) = name_str.strip_prefix(".wh.") {
                whiteout_count += 1;
                if hidden == ".wh..opq" {
                    match whiteouts {
                        Whiteouts::Remove => empty_dir(&dir).map_err(io_err(&entry_name))?,
                        Whiteouts::Overlay => rustix::fs::fsetxattr(
                            &dir,
                            "trusted.overlay.opaque",
                            b"y",
                            rustix::fs::XattrFlags::empty(),
                        )
                        .map_err(io_err(&entry_name))?,
                    }
                } else {
                    remove_all_at(&dir, std::ffi::OsStr::new(hidden))
                        .map_err(io_err(&entry_name))?;
                    if whiteouts == Whiteouts::Overlay {
                        rustix::fs::mknodat(
                            &dir,
                            hidden,
                            FileType::CharacterDevice,
                            Mode::empty(),
                            0,
                        )
                        .map_err(io_err(&entry_name))?;
                    }
                }
                continue;
            }

            let header = entry.header().clone();
            let mode = Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o7777);
            let uid = header.uid().unwrap_or(0);
            let gid = header.gid().unwrap_or(0);
            let mtime = header.mtime().unwrap_or(0);
            // A new entry replaces an old one, except a directory over a directory.
            let existing = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).ok();
            let is_dir_entry = kind.is_dir();
            if let Some(st) = existing {
                let old_is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if !(is_dir_entry && old_is_dir) {
                    remove_all_at(&dir, &name).map_err(io_err(&entry_name))?;
                }
            }
            let owner = (
                u32::try_from(uid).unwrap_or(0),
                u32::try_from(gid).unwrap_or(0),
            );
            if is_dir_entry {
                match rustix::fs::mkdirat(&dir, &name, mode) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io_err(&entry_name)(e)),
                }
                let sub = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err(&entry_name))?;
                chown_fd(&sub, owner).map_err(io_err(&entry_name))?;
                rustix::fs::fchmod(&sub, mode).map_err(io_err(&entry_name))?;
                set_xattrs(&sub, &mut entry);
                dir_times.push((path.clone(), mtime));
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                let fd = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err(&entry_name))?;
                let mut file = std::fs::File::from(fd);
                copy_data(&mut entry, &mut file, &mut buf).map_err(|e| ApplyError::Malformed {
                    offset: 0,
                    message: format!("reading {entry_name:?}: {e}"),
                })?;
                chown_fd(&file, owner).map_err(io_err(&entry_name))?;
                // After chown, which clears set-id bits.
                rustix::fs::fchmod(&file, mode).map_err(io_err(&entry_name))?;
                set_xattrs(file.as_fd(), &mut entry);
                rustix::fs::futimens(&file, &times(mtime)).map_err(io_err(&entry_name))?;
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                rustix::fs::symlinkat(target.as_path(), &dir, &name)
                    .map_err(io_err(&entry_name))?;
                chown_at(&dir, &name, owner).map_err(io_err(&entry_name))?;
                let _ =
                    rustix::fs::utimensat(&dir, &name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW);
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = clean_path(&target)?;
                let Some(target_name) = target.file_name() else {
                    return Err(ApplyError::BadPath {
                        path: entry_name,
                        reason: "a hardlink to the root directory",
                    });
                };
                let target_dir =
                    open_dir_in_root(&root_fd, target.parent().unwrap_or(Path::new("")))
                        .map_err(io_err(&entry_name))?;
                rustix::fs::linkat(&target_dir, target_name, &dir, &name, AtFlags::empty())
                    .map_err(io_err(&entry_name))?;
                // As containerd: the link's header owner and mode apply to
                // the shared inode (lchown, then chmod unless a symlink).
                chown_at(&dir, &name, owner).map_err(io_err(&entry_name))?;
                let linked = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(&entry_name))?;
                if FileType::from_raw_mode(linked.st_mode) != FileType::Symlink {
                    rustix::fs::chmodat(&dir, &name, mode, AtFlags::empty())
                        .map_err(io_err(&entry_name))?;
                }
            } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                let file_type = if kind.is_character_special() {
                    FileType::CharacterDevice
                } else if kind.is_block_special() {
                    FileType::BlockDevice
                } else {
                    FileType::Fifo
                };
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                rustix::fs::mknodat(&dir, &name, file_type, mode, dev)
                    .map_err(io_err(&entry_name))?;
                chown_at(&dir, &name, owner).map_err(io_err(&entry_name))?;
            } else {
                tracing::debug!(entry = %entry_name, kind = ?kind, "skipping unsupported tar entry type");
            }
        }
    }
    // Directory times last: creating entries inside them changed them.
    for (path, mtime) in dir_times.iter().rev() {
        if let Ok(fd) = open_dir_in_root(&root_fd, path) {
            let _ = rustix::fs::futimens(&fd, &times(*mtime));
        }
    }
    // Read to the end: the diffID covers trailing padding too.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| ApplyError::Malformed {
        offset: 0,
        message: format!("after the last entry: {e}"),
    })?;
    let diff_id = format!("sha256:{:x}", hashing.hash.finalize());
    if let Some(expected) = expected_diff_id
        && expected != diff_id
    {
        return Err(ApplyError::DiffIdMismatch {
            expected: expected.to_string(),
            actual: diff_id,
        });
    }
    Ok(ApplyStats {
        diff_id,
        size: hashing.count,
        entries,
        whiteouts: whiteout_count,
    })
}

/// Copies `from` to `to` through `buf`, until the end of `from`.
fn copy_data(from: &mut impl Read, to: &mut impl io::Write, buf: &mut [u8]) -> io::Result<()> {
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

/// `fchown(fd, uid, gid)`.
fn chown_fd(fd: impl AsFd, (uid, gid): (u32, u32)) -> rustix::io::Result<()> {
    nix::unistd::fchown(
        fd,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32))
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
fn chown_at(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    (uid, gid): (u32, u32),
) -> rustix::io::Result<()> {
    nix::unistd::fchownat(
        dir,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32))
}

/// Sets the entry's `SCHILY.xattr.*` PAX records on `fd`; refused ones are
/// skipped (as containerd does for unsupported namespaces).
fn set_xattrs<R: Read>(fd: impl AsFd, entry: &mut tar::Entry<'_, R>) {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return;
    };
    for ext in exts.flatten() {
        let Ok(key) = ext.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.")
            && let Err(e) = rustix::fs::fsetxattr(
                &fd,
                name,
                ext.value_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
        {
            tracing::debug!(xattr = name, error = %e, "skipping xattr the filesystem refuses");
        }
    }
}
