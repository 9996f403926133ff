//! Where a shim's ttrpc socket is. The shim binds it and the manager (and
//! `ctr shim --id`) finds it again from the same three names, so both sides
//! compute it here.

use std::path::Path;

use sha2::Digest;

/// Where shims put their sockets: containerd's socket root (its default
/// state directory whatever the daemon's), since clients such as
/// `ctr shim --id` compute a shim's address from it.
pub const SOCKET_DIR: &str = "/run/containerd/s";

/// The shim's ttrpc address for a container, as containerd computes it:
/// `<socket root>/<sha256 of "<daemon address>/<namespace>/<id>">`, so a
/// second `start` finds the first shim and `ctr shim --id` finds it too.
pub fn socket_address(daemon_address: &str, namespace: &str, id: &str) -> String {
    let joined = Path::new(daemon_address).join(namespace).join(id);
    let digest = sha2::Sha256::digest(joined.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{SOCKET_DIR}/{hex}")
}
