//! `cargo xtask <command>` starts here.
//!
//! berth-xtask depends on crates whose build scripts need `protoc`, so on a
//! fresh machine it cannot be compiled before the Debian packages are in.
//! This launcher has no dependencies: it installs what is missing (the
//! same list and code as `cargo xtask deps`), then hands the command to
//! berth-xtask through `cargo run`.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

#[path = "../../src/deps.rs"]
mod deps;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = deps::deps() {
        eprintln!("xtask: installing berth's packages: {e}");
        return ExitCode::FAILURE;
    }
    if args.first().map(String::as_str) == Some("deps") {
        return ExitCode::SUCCESS;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // exec: Ctrl-C and the exit status reach the real task unchanged.
    let err = Command::new(cargo)
        .args(["run", "--quiet", "--package", "berth-xtask", "--"])
        .args(&args)
        .exec();
    eprintln!("xtask: cannot run berth-xtask: {err}");
    ExitCode::FAILURE
}
