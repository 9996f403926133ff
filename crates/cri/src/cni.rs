//! CNI: network configurations from `cni.conf_dir`, plugins from
//! `cni.bin_dir`, invoked as the CNI specification says (command in the
//! environment, configuration on stdin, result on stdout). Each pod joins
//! up to `max_conf_num` networks in file name order (`eth0`, then `net1`,
//! ...). Its loopback interface, containerd's `lo` network made by CNI's
//! `loopback` plugin, is set up by berth itself when it makes the
//! namespace ([`crate::netns::create`]): one plugin process less per pod
//! start and stop.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::error::{CriError, Result};

/// One network: a configuration list.
#[derive(Debug, Clone)]
pub struct Network {
    /// Its `name`.
    pub name: String,
    /// Its `cniVersion`.
    pub version: String,
    /// Its plugins in order.
    pub plugins: Vec<Value>,
}

/// The pod a call is for (passed to plugins in `CNI_ARGS`).
#[derive(Debug, Clone, Default)]
pub struct PodRef {
    /// Sandbox id (`CNI_CONTAINERID`).
    pub id: String,
    /// Namespace path (`CNI_NETNS`).
    pub netns: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid.
    pub uid: String,
    /// `runtimeConfig.portMappings` entries.
    pub port_mappings: Vec<Value>,
}

/// The CNI settings of the plugin.
#[derive(Debug, Clone)]
pub struct Cni {
    /// Plugin binaries.
    pub bin_dir: PathBuf,
    /// Configurations.
    pub conf_dir: PathBuf,
    /// How many configurations a pod joins.
    pub max_conf_num: usize,
}

impl Cni {
    /// The networks a pod joins: configuration files in name order.
    pub fn networks(&self) -> Result<Vec<Network>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.conf_dir) {
            Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(CriError::Internal(format!(
                    "reading cni.conf_dir {}: {e}",
                    self.conf_dir.display()
                )));
            }
        };
        files.retain(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "conflist" | "conf" | "json"))
        });
        files.sort();
        let mut out = Vec::new();
        for f in files {
            if out.len() >= self.max_conf_num.max(1) {
                break;
            }
            let text = std::fs::read_to_string(&f)
                .map_err(|e| CriError::Internal(format!("reading {}: {e}", f.display())))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                CriError::InvalidArgument(format!("CNI configuration {}: {e}", f.display()))
            })?;
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
            let plugins = match v["plugins"].as_array() {
                Some(p) => p.clone(),
                // A single-plugin `.conf` is a list of one.
                None => vec![v.clone()],
            };
            if plugins.is_empty() {
                continue;
            }
            out.push(Network {
                name,
                version,
                plugins,
            });
        }
        Ok(out)
    }

    /// Whether any network is configured (the NetworkReady condition).
    pub fn ready(&self) -> bool {
        self.networks().is_ok_and(|n| !n.is_empty())
    }

    /// Attaches the pod to every network; returns each network's result
    /// (the first configured network's IPs are the pod's). As go-cni's
    /// `Setup` (containerd's default): the networks are attached at once,
    /// each network's plugins in order.
    pub async fn setup(&self, pod: &PodRef) -> Result<Vec<Value>> {
        let networks = self.networks()?;
        if networks.is_empty() {
            return Err(CriError::FailedPrecondition(format!(
                "cni plugin not initialized: no network configuration in {}",
                self.conf_dir.display()
            )));
        }
        futures::future::join_all(
            networks
                .iter()
                .enumerate()
                .map(|(i, n)| async move { self.add(n, pod, &ifname(i)).await }),
        )
        .await
        .into_iter()
        .collect()
    }

    /// Detaches the pod from every network; errors of single plugins are
    /// logged (teardown must not get stuck on a half-made network).
    pub async fn teardown(&self, pod: &PodRef) -> Result<()> {
        let networks = self.networks()?;
        let mut first_error = None;
        for (i, n) in networks.iter().enumerate().rev() {
            let ifname = ifname(i);
            for plugin in n.plugins.iter().rev() {
                if let Err(e) = self.invoke("DEL", n, plugin, pod, &ifname, None).await {
                    tracing::warn!(network = %n.name, error = %e, "CNI DEL failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn add(&self, n: &Network, pod: &PodRef, ifname: &str) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in &n.plugins {
            let out = self
                .invoke("ADD", n, plugin, pod, ifname, prev.as_ref())
                .await?;
            prev = Some(out);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    async fn invoke(
        &self,
        command: &str,
        n: &Network,
        plugin: &Value,
        pod: &PodRef,
        ifname: &str,
        prev: Option<&Value>,
    ) -> Result<Value> {
        let kind = plugin["type"].as_str().unwrap_or_default();
        if kind.is_empty() || kind.contains('/') {
            return Err(CriError::InvalidArgument(format!(
                "network {}: a plugin without a valid \"type\"",
                n.name
            )));
        }
        let binary = self.bin_dir.join(kind);
        let t0 = std::time::Instant::now();
        let mut conf = plugin.clone();
        conf["name"] = json!(n.name);
        conf["cniVersion"] = json!(n.version);
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        if plugin["capabilities"]["portMappings"] == json!(true) && !pod.port_mappings.is_empty() {
            conf["runtimeConfig"] = json!({ "portMappings": pod.port_mappings });
        }
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.namespace, pod.name, pod.id, pod.uid
        );
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.id)
            .env("CNI_NETNS", &pod.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", &self.bin_dir)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CriError::FailedPrecondition(format!(
                    "CNI plugin {kind}: cannot run {}: {e} (is it installed in cni.bin_dir?)",
                    binary.display()
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let body = serde_json::to_vec(&conf).unwrap_or_default();
            stdin.write_all(&body).await.map_err(|e| {
                CriError::Internal(format!("CNI plugin {kind}: writing its config: {e}"))
            })?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| CriError::Internal(format!("CNI plugin {kind}: {e}")))?;
        tracing::debug!(
            plugin = kind,
            command,
            ifname,
            elapsed = ?t0.elapsed(),
            "CNI plugin ran"
        );
        if !out.status.success() {
            let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let msg = err["msg"].as_str().map_or_else(
                || String::from_utf8_lossy(&out.stderr).trim().to_string(),
                |m| {
                    format!("{m} {}", err["details"].as_str().unwrap_or_default())
                        .trim()
                        .to_string()
                },
            );
            return Err(CriError::Internal(format!(
                "plugin type={kind:?} name={:?} failed ({command}): {msg}",
                n.name
            )));
        }
        if out.stdout.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| CriError::Internal(format!("CNI plugin {kind}: result is not JSON: {e}")))
    }
}

/// The interface of the `i`th network in the pod: `eth0`, `net1`, ...
fn ifname(i: usize) -> String {
    if i == 0 {
        "eth0".to_string()
    } else {
        format!("net{i}")
    }
}

/// The pod IPs of a network's result (`ips[].address` without prefix).
pub fn ips_of(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect()
}

/// Whether `dir` holds a usable plugin `name`.
pub fn has_plugin(dir: &Path, name: &str) -> bool {
    dir.join(name).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_drop_the_prefix() {
        let r = json!({"ips": [{"address": "10.1.2.3/24"}, {"address": "fd00::3/64"}]});
        assert_eq!(ips_of(&r), vec!["10.1.2.3", "fd00::3"]);
    }

    #[test]
    fn conf_files_in_name_order_up_to_the_limit() {
        let dir = std::env::temp_dir().join(format!("berth-cri-cni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .expect("w");
        std::fs::write(
            dir.join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .expect("w");
        std::fs::write(dir.join("ignored.txt"), "x").expect("w");
        let cni = Cni {
            bin_dir: dir.clone(),
            conf_dir: dir.clone(),
            max_conf_num: 1,
        };
        let n = cni.networks().expect("networks");
        std::fs::remove_dir_all(&dir).expect("rm");
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].name, "a");
        assert_eq!(n[0].plugins.len(), 1);
    }
}
