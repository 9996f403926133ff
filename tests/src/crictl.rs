//! `crictl` (cri-tools, from the shared tools) pointed at one berthd by a
//! config file of its own, with a hang guard on every run.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Daemon, ok, shared_tool};

/// A hang guard for one crictl run, not a timing expectation.
pub const HANG: Duration = Duration::from_secs(60);

/// `crictl` pointed at one berthd by a config file of its own.
#[derive(Debug)]
pub struct Crictl {
    bin: PathBuf,
    config: PathBuf,
}

impl Crictl {
    /// crictl for daemon `d`.
    pub fn new(d: &Daemon) -> Result<Crictl> {
        let config = d.scratch("crictl.yaml");
        let endpoint = format!("unix://{}", d.address.display());
        std::fs::write(
            &config,
            format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 120\n"),
        )?;
        Ok(Crictl {
            bin: shared_tool("crictl")?,
            config,
        })
    }

    /// The crictl command with `args`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config").arg(&self.config).args(args);
        c
    }

    /// Runs with no input.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.run_with_input(args, b"")
    }

    /// Runs with `input` on stdin (then end of file), within [`HANG`].
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Result<Output> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running crictl {args:?}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input)?;
        }
        wait_output(child, HANG).with_context(|| format!("crictl {args:?}"))
    }

    /// Runs and wants success; returns stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        ok(self.run(args)?)
            .map(|s| s.trim().to_string())
            .with_context(|| format!("crictl {args:?}"))
    }

    /// Runs, wants success, parses stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = self.ok(args)?;
        serde_json::from_str(&out).with_context(|| format!("crictl {args:?} printed {out}"))
    }
}

/// Waits for `child` (its output read on threads) at most `limit`; kills
/// it past that.
pub fn wait_output(mut child: Child, limit: Duration) -> Result<Output> {
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
