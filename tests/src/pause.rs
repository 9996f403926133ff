//! A pause image for CRI pods, built here: a tiny static C program (Debian's
//! `gcc` and `libc6-dev`, `gcc -static`) that sleeps until SIGTERM or
//! SIGINT and reaps the zombies of the pod's PID namespace, as Kubernetes'
//! pause does. Its own module so a shared pause image can replace it.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::testimages::{self, Layout};

const SOURCE: &str = r#"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"#;

/// Builds the pause image into the OCI layout at `dir` (its command
/// `/pause`), compiling in `dir`'s parent.
pub fn image(dir: &Path) -> Result<Layout> {
    let work = dir
        .parent()
        .context("the pause image directory needs a parent")?
        .join("pause-build");
    std::fs::create_dir_all(&work)?;
    let src = work.join("pause.c");
    let bin = work.join("pause");
    std::fs::write(&src, SOURCE)?;
    let out = std::process::Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .context("running gcc: run `cargo xtask deps` (Debian packages gcc, libc6-dev)")?;
    if !out.status.success() {
        bail!(
            "gcc -static failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = std::fs::read(&bin)?;
    testimages::from_files(
        dir,
        vec![("pause".into(), data, 0o755)],
        &["/pause"],
        "pause:1",
    )
}
