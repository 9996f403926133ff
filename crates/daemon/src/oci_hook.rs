//! `berthd oci-hook -- <program> <args>...`: containerd's OCI hook
//! trampoline. Some of containerd's spec options (the NVIDIA GPU option,
//! nerdctl's network hooks) add a prestart hook that calls the daemon
//! binary back this way, so that the hook's arguments and environment can
//! name things only known once the container exists.
//!
//! The runtime gives the hook the container's OCI state on stdin; each
//! argument and environment entry is expanded as a Go template with
//! containerd's functions — `{{id}}`, `{{bundle}}`, `{{rootfs}}` (the
//! spec's root path, made absolute against the bundle), `{{pid}}`,
//! `{{annotation "key"}}`, `{{status}}` — and the program replaces this
//! process (exec), so its exit status is the hook's.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the hook could not run.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The state on stdin is not OCI state JSON.
    #[error("reading the OCI state on stdin: {0}")]
    State(String),
    /// The bundle's `config.json` could not be read.
    #[error("reading {path}: {message}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An argument or environment entry is not a valid template.
    #[error("template {text:?}: {message}")]
    Template {
        /// The text.
        text: String,
        /// What is wrong with it.
        message: String,
    },
    /// Nothing to run.
    #[error("oci-hook needs the program to run after `--`")]
    NoProgram,
    /// The program could not be executed.
    #[error("executing {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The OCI state a runtime passes to hooks (the fields the template uses).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct State {
    /// Container id.
    #[serde(default)]
    pub id: String,
    /// Status (`creating`, `created`, `running`, `stopped`).
    #[serde(default)]
    pub status: String,
    /// Init process id.
    #[serde(default)]
    pub pid: i64,
    /// Bundle directory.
    #[serde(default)]
    pub bundle: String,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What the templates can name.
#[derive(Debug, Clone)]
pub struct Context {
    state: State,
    root: String,
}

impl Context {
    /// The context for `state`, with the spec's root path `root`.
    pub fn new(state: State, root: impl Into<String>) -> Context {
        Context {
            state,
            root: root.into(),
        }
    }

    fn rootfs(&self) -> String {
        if Path::new(&self.root).is_absolute() {
            self.root.clone()
        } else {
            Path::new(&self.state.bundle)
                .join(&self.root)
                .display()
                .to_string()
        }
    }

    /// The value of one action (`pid`, `annotation "k"`).
    fn call(&self, action: &str, source: &str) -> Result<String, HookError> {
        let bad = |message: String| HookError::Template {
            text: source.to_string(),
            message,
        };
        let (name, rest) = match action.split_once(char::is_whitespace) {
            Some((n, r)) => (n, r.trim()),
            None => (action, ""),
        };
        let no_args = |value: String| {
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(bad(format!("wrong number of args for {name}: want 0")))
            }
        };
        match name {
            "id" => no_args(self.state.id.clone()),
            "bundle" => no_args(self.state.bundle.clone()),
            "rootfs" => no_args(self.rootfs()),
            "pid" => no_args(self.state.pid.to_string()),
            "status" => no_args(self.state.status.clone()),
            "annotation" => {
                let key = unquote(rest)
                    .ok_or_else(|| bad("annotation takes one quoted key".to_string()))?;
                Ok(self
                    .state
                    .annotations
                    .get(&key)
                    .cloned()
                    .unwrap_or_default())
            }
            other => Err(bad(format!("function {other:?} not defined"))),
        }
    }

    /// `text` with every `{{ action }}` replaced by its value.
    pub fn render(&self, text: &str) -> Result<String, HookError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| HookError::Template {
                text: text.to_string(),
                message: "unclosed action".to_string(),
            })?;
            // Go's `{{- x -}}` trims the surrounding spaces.
            let mut action = &after[..end];
            if let Some(a) = action.strip_prefix("- ") {
                action = a;
                out.truncate(out.trim_end().len());
            }
            let trim_after = action.ends_with(" -");
            if trim_after {
                action = &action[..action.len() - 2];
            }
            out.push_str(&self.call(action.trim(), text)?);
            rest = &after[end + 2..];
            if trim_after {
                rest = rest.trim_start();
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A Go string literal (`"k"` with escapes, or a raw `` `k` ``).
fn unquote(s: &str) -> Option<String> {
    if let Some(raw) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return Some(raw.to_string());
    }
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    serde_json::from_str(&format!("\"{inner}\"")).ok()
}

/// The spec's root path, from the bundle's `config.json`.
fn spec_root(bundle: &str) -> Result<String, HookError> {
    #[derive(Deserialize, Default)]
    struct Root {
        #[serde(default)]
        path: String,
    }
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        root: Option<Root>,
    }
    let path = Path::new(bundle).join("config.json");
    let fail = |message: String| HookError::Spec {
        path: path.clone(),
        message,
    };
    let data = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
    let spec: Spec = serde_json::from_slice(&data).map_err(|e| fail(e.to_string()))?;
    Ok(spec.root.unwrap_or_default().path)
}

/// Runs the hook: reads the state from `stdin`, expands `args` (the
/// program and its arguments) and this process's environment, and execs
/// the program. Returns only on failure.
pub fn run(args: &[String], stdin: impl Read) -> HookError {
    let state: State = match serde_json::from_reader(stdin) {
        Ok(s) => s,
        Err(e) => return HookError::State(e.to_string()),
    };
    let root = match spec_root(&state.bundle) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let ctx = Context::new(state, root);
    let rendered: Result<Vec<String>, HookError> = args.iter().map(|a| ctx.render(a)).collect();
    let env: Result<Vec<String>, HookError> = std::env::vars_os()
        .map(|(k, v)| {
            let mut entry = k.to_string_lossy().into_owned();
            entry.push('=');
            entry.push_str(&v.to_string_lossy());
            ctx.render(&entry)
        })
        .collect();
    let (args, env) = match (rendered, env) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let Some(program) = args.first() else {
        return HookError::NoProgram;
    };
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&args[1..]).env_clear();
    for entry in &env {
        if let Some((k, v)) = entry.split_once('=') {
            cmd.env(k, v);
        }
    }
    let source = cmd.exec();
    HookError::Exec {
        program: program.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context::new(
            State {
                id: "c1".into(),
                status: "created".into(),
                pid: 42,
                bundle: "/run/b/c1".into(),
                annotations: BTreeMap::from([("k".to_string(), "v".to_string())]),
            },
            "rootfs",
        )
    }

    #[test]
    fn expands_containerds_template_functions() {
        let c = ctx();
        assert_eq!(
            c.render("--pid={{pid}} {{ id }} {{rootfs}} {{bundle}} {{status}}")
                .unwrap(),
            "--pid=42 c1 /run/b/c1/rootfs /run/b/c1 created"
        );
        assert_eq!(
            c.render(r#"{{annotation "k"}}/{{annotation "x"}}"#)
                .unwrap(),
            "v/"
        );
        assert_eq!(c.render("a {{- pid -}} b").unwrap(), "a42b");
        assert_eq!(c.render("plain").unwrap(), "plain");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let c = ctx();
        assert!(
            c.render("{{nope}}")
                .unwrap_err()
                .to_string()
                .contains("not defined")
        );
        assert!(
            c.render("{{pid")
                .unwrap_err()
                .to_string()
                .contains("unclosed")
        );
        assert!(
            c.render("{{pid 1}}")
                .unwrap_err()
                .to_string()
                .contains("args")
        );
    }
}
