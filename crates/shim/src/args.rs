//! The shim's command line, as containerd passes it: Go-style flags
//! (`-namespace NS`, `-id=ID`, `--debug`) and an action word.

use std::path::PathBuf;

/// What the shim was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Launch the long-lived shim and print its address.
    Start,
    /// Clean up after a dead shim.
    Delete,
    /// Be the long-lived shim.
    Serve,
    /// Print the version.
    Version,
    /// `-info`: read runtime options (an `Any`) on stdin, print the
    /// runtime's `containerd.types.RuntimeInfo` on stdout.
    Info,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// `-namespace`.
    pub namespace: String,
    /// `-id`: the container id.
    pub id: String,
    /// `-address`: the daemon's gRPC socket.
    pub address: String,
    /// `-publish-binary`.
    pub publish_binary: String,
    /// `-bundle` (defaults to the working directory).
    pub bundle: Option<PathBuf>,
    /// `-debug`.
    pub debug: bool,
    /// The action.
    pub action: Action,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            namespace: String::new(),
            id: String::new(),
            address: String::new(),
            publish_binary: String::new(),
            bundle: None,
            debug: false,
            action: Action::Serve,
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                a.action = match arg.as_str() {
                    "start" => Action::Start,
                    "delete" => Action::Delete,
                    other => {
                        return Err(format!("unknown action {other:?} (want start or delete)"));
                    }
                };
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            match name {
                "debug" => a.debug = inline.is_none_or(|v| v != "false"),
                "v" | "version" => a.action = Action::Version,
                "info" => a.action = Action::Info,
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| format!("flag -{name} needs a value"))?,
                    };
                    match name {
                        "namespace" => a.namespace = value,
                        "id" => a.id = value,
                        "address" => a.address = value,
                        "publish-binary" => a.publish_binary = value,
                        "bundle" => a.bundle = Some(PathBuf::from(value)),
                        _ => {}
                    }
                }
                other => return Err(format!("unknown flag -{other}")),
            }
        }
        let standalone = matches!(a.action, Action::Version | Action::Info);
        if !standalone && (a.namespace.is_empty() || a.id.is_empty()) {
            return Err("-namespace and -id are required".into());
        }
        Ok(a)
    }

    /// The bundle directory: `-bundle`, or the working directory.
    pub fn bundle_dir(&self) -> Result<PathBuf, String> {
        match &self.bundle {
            Some(b) => Ok(b.clone()),
            None => std::env::current_dir()
                .map_err(|e| format!("finding the bundle (working directory): {e}")),
        }
    }

    /// The arguments the long-lived shim is started with.
    pub fn serve_args(&self) -> Vec<String> {
        let mut v = vec![
            "-namespace".into(),
            self.namespace.clone(),
            "-id".into(),
            self.id.clone(),
            "-address".into(),
            self.address.clone(),
        ];
        if !self.publish_binary.is_empty() {
            v.extend(["-publish-binary".into(), self.publish_binary.clone()]);
        }
        if self.debug {
            v.push("-debug".into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        Args::parse(s.split_whitespace().map(str::to_string))
    }

    #[test]
    fn containerd_start_command_line() {
        let a = parse("-namespace default -address /run/c.sock -publish-binary /usr/bin/containerd -id abc start").unwrap();
        assert_eq!(a.action, Action::Start);
        assert_eq!((a.namespace.as_str(), a.id.as_str()), ("default", "abc"));
        assert_eq!(a.address, "/run/c.sock");
        assert_eq!(a.serve_args()[..4], ["-namespace", "default", "-id", "abc"]);
    }

    #[test]
    fn inline_values_and_delete() {
        let a = parse("--namespace=ns -id=x -bundle=/b --debug delete").unwrap();
        assert_eq!(a.action, Action::Delete);
        assert_eq!(a.bundle, Some(PathBuf::from("/b")));
        assert!(a.debug);
    }

    #[test]
    fn info_needs_no_namespace_or_id() {
        assert_eq!(parse("-info").unwrap().action, Action::Info);
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        assert!(parse("-namespace ns start").unwrap_err().contains("-id"));
        assert!(
            parse("-namespace ns -id x frobnicate")
                .unwrap_err()
                .contains("frobnicate")
        );
        assert!(
            parse("-namespace ns -id")
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(parse("-nope 1").unwrap_err().contains("-nope"));
    }
}
