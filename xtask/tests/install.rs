//! `cargo xtask install` into temporary directories: the layout, the unit
//! checked by `systemd-analyze verify`, and the bash completions loaded by
//! bash. Installs the binaries of this build (`--bin-dir target/debug`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/debug, where berthd and berthctl of this build are.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/install-HASH: binaries are one level up.
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for name in ["berthd", "berthctl", "containerd-shim-berth-v2"] {
        assert!(
            dir.join(name).exists(),
            "{} missing: build first (cargo build -p berth-daemon -p berth-ctl -p berth-shim --bins)",
            dir.join(name).display()
        );
    }
    dir
}

fn xtask_install(args: &[&str]) {
    let bins = bin_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_berth-xtask"))
        .arg("install")
        .args(args)
        .arg("--bin-dir")
        .arg(&bins)
        .output()
        .expect("run xtask");
    assert!(
        out.status.success(),
        "xtask install {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_into_destdir_puts_everything_in_place() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().to_str().unwrap();
    xtask_install(&["--destdir", d, "--prefix", "/usr"]);
    let p = dest.path();
    for file in [
        "usr/bin/berthd",
        "usr/bin/berthctl",
        "usr/bin/containerd-shim-berth-v2",
        "usr/lib/systemd/system/berthd.service",
        "etc/berth/config.toml",
        "usr/share/bash-completion/completions/berthd",
        "usr/share/bash-completion/completions/berthctl",
        "usr/share/man/man8/berthd.8",
        "usr/share/man/man1/berthctl.1",
    ] {
        assert!(p.join(file).is_file(), "{file} not installed");
    }
    let unit = std::fs::read_to_string(p.join("usr/lib/systemd/system/berthd.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/berthd\n"), "{unit}");
    // The installed config is the full default and berthd reads it.
    let config = p.join("etc/berth/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("[plugins.\"io.containerd.gc.v1.scheduler\"]"),
        "{text}"
    );
    let out = Command::new(p.join("usr/bin/berthd"))
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
    // A second install keeps the operator's config.
    std::fs::write(&config, "version = 2\nroot = \"/srv/berth\"\n").unwrap();
    xtask_install(&["--destdir", d, "--prefix", "/usr"]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "version = 2\nroot = \"/srv/berth\"\n"
    );
}

#[test]
fn installed_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    let etc = dir.path().join("etc");
    xtask_install(&[
        "--destdir",
        "/",
        "--prefix",
        prefix.to_str().unwrap(),
        "--sysconfdir",
        etc.to_str().unwrap(),
    ]);
    let unit = prefix.join("lib/systemd/system/berthd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "Delegate=yes",
        "KillMode=process",
        "Restart=always",
        "LimitNOFILE=infinity",
        "LimitNPROC=infinity",
        "LimitCORE=infinity",
        "TasksMax=infinity",
        "ExecStartPre=-/sbin/modprobe overlay",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (cargo xtask deps installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys are only warned about: any message is a defect.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    // And the unit starts the installed berthd with the installed config.
    let exec = format!(
        "ExecStart={} --config {}",
        prefix.join("bin/berthd").display(),
        etc.join("berth/config.toml").display()
    );
    assert!(text.lines().any(|l| l == exec), "{exec} missing:\n{text}");
}

#[test]
fn installed_bash_completions_load() {
    let dest = tempfile::tempdir().unwrap();
    xtask_install(&["--destdir", dest.path().to_str().unwrap()]);
    let completions = dest
        .path()
        .join("usr/local/share/bash-completion/completions");
    for name in ["berthd", "berthctl"] {
        let file = completions.join(name);
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("source {}; complete -p {name}", file.display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("-F _{name} {name}")), "{stdout}");
    }
}
