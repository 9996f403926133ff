//! `cargo xtask install [--prefix P] [--sysconfdir E] [--destdir D]
//! [--bin-dir B]`: puts berthd, berthctl and the shim in `D/P/bin`, the
//! systemd unit in `D/P/lib/systemd/system` (its `ExecStart` naming
//! `P/bin/berthd`, with `--config` unless E is `/etc`), the default config
//! in `D/E/berth/config.toml` (kept if present), bash
//! completions and man pages under `D/P/share`. Without `--bin-dir` it
//! builds the release binaries first; `--bin-dir` installs already built ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// The unit shipped in the repo, with `ExecStart=/usr/local/bin/berthd`.
const UNIT: &str = include_str!("../../contrib/systemd/berthd.service");
/// The `ExecStart` line of [`UNIT`], replaced with the installed path.
const UNIT_EXEC: &str = "ExecStart=/usr/local/bin/berthd";
/// The binaries installed.
const BINARIES: &[&str] = &["berthd", "berthctl", "containerd-shim-berth-v2"];

/// Options of `install`.
struct Options {
    prefix: PathBuf,
    sysconfdir: PathBuf,
    destdir: PathBuf,
    bin_dir: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        prefix: PathBuf::from("/usr/local"),
        sysconfdir: PathBuf::from("/etc"),
        destdir: PathBuf::from("/"),
        bin_dir: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a directory"))
        };
        match arg.as_str() {
            "--prefix" => o.prefix = value("--prefix")?,
            "--sysconfdir" => o.sysconfdir = value("--sysconfdir")?,
            "--destdir" => o.destdir = value("--destdir")?,
            "--bin-dir" => o.bin_dir = Some(value("--bin-dir")?),
            other => {
                return Err(format!(
                    "install: unknown argument {other:?} (use --prefix, --sysconfdir, --destdir, --bin-dir)"
                ));
            }
        }
    }
    for (name, dir) in [("--prefix", &o.prefix), ("--sysconfdir", &o.sysconfdir)] {
        if !dir.is_absolute() {
            return Err(format!(
                "install: {name} {} must be absolute",
                dir.display()
            ));
        }
    }
    Ok(o)
}

/// `dir` below `destdir` (`/usr/local` in `/tmp/d` is `/tmp/d/usr/local`).
fn under(destdir: &Path, dir: &Path) -> PathBuf {
    destdir.join(dir.strip_prefix("/").unwrap_or(dir))
}

fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    eprintln!("installed {}", path.display());
    Ok(())
}

/// The standard output of `bin args...`.
fn output_of(bin: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// The unit with `ExecStart` naming berthd under `prefix`, and the config
/// under `sysconfdir` unless that is berthd's default.
fn unit_for(prefix: &Path, sysconfdir: &Path) -> String {
    let mut exec = format!("ExecStart={}", prefix.join("bin/berthd").display());
    if sysconfdir != Path::new("/etc") {
        exec.push_str(&format!(
            " --config {}",
            sysconfdir.join("berth/config.toml").display()
        ));
    }
    UNIT.replace(UNIT_EXEC, &exec)
}

pub(crate) fn install(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let bin_dir = match &o.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            crate::build_release()?;
            crate::bench::target_dir().join("release")
        }
    };
    let prefix = under(&o.destdir, &o.prefix);
    for name in BINARIES {
        let from = bin_dir.join(name);
        let data = std::fs::read(&from).map_err(|e| {
            format!(
                "cannot read {}: {e} (build first, or name the directory with --bin-dir)",
                from.display()
            )
        })?;
        write(&prefix.join("bin").join(name), &data, 0o755)?;
    }
    let berthd = prefix.join("bin/berthd");
    let berthctl = prefix.join("bin/berthctl");
    write(
        &prefix.join("lib/systemd/system/berthd.service"),
        unit_for(&o.prefix, &o.sysconfdir).as_bytes(),
        0o644,
    )?;
    let config = under(&o.destdir, &o.sysconfdir.join("berth/config.toml"));
    if config.exists() {
        eprintln!("kept {} (already present)", config.display());
    } else {
        // Defaults only: `config default` does not read a file.
        let text = output_of(&berthd, &["config", "default"])?;
        write(&config, &text, 0o644)?;
    }
    for (bin, name, section) in [(&berthd, "berthd", "8"), (&berthctl, "berthctl", "1")] {
        let completion = output_of(bin, &["completion", "bash"])?;
        write(
            &prefix.join("share/bash-completion/completions").join(name),
            &completion,
            0o644,
        )?;
        let man = output_of(bin, &["man"])?;
        write(
            &prefix
                .join(format!("share/man/man{section}"))
                .join(format!("{name}.{section}")),
            &man,
            0o644,
        )?;
    }
    Ok(())
}
