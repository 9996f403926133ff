//! The database layout: which redb tables exist and how their keys are built.
//!
//! containerd nests bolt buckets per namespace
//! (`v1/<namespace>/{images,containers,content,leases,snapshots/<snapshotter>}`).
//! redb has flat tables instead, so berth turns the nesting inside out: one
//! table per object kind, keyed by a tuple whose **first element is the
//! namespace**. redb orders tuple keys element by element, so all of one
//! namespace's objects of a kind are one contiguous key range, and "does
//! namespace N hold any images?" is a single seek to `(N, "")`.
//!
//! # Tables (schema version 2)
//!
//! | table | key | value | holds |
//! |---|---|---|---|
//! | `meta` | `&str` | `u64` | `"schema_version"` → [`SCHEMA_VERSION`] |
//! | `namespaces` | `&str` name | `()` | one row per namespace |
//! | `namespace_labels` | `(&str, &str)` (namespace, key) | `&str` value | a namespace's labels |
//! | `images` | `(&str, &str)` (namespace, image name) | `&[u8]` record | image records |
//! | `containers` | `(&str, &str)` (namespace, container id) | `&[u8]` record | container records |
//! | `content` | `(&str, &str)` (namespace, digest) | `&[u8]` record | a namespace's view of content blobs |
//! | `leases` | `(&str, &str)` (namespace, lease id) | `&[u8]` record | leases |
//! | `lease_resources` | `(&str, &str, &str, &str)` (namespace, lease id, type, id) | `()` | what each lease holds (since v2) |
//! | `snapshots` | `(&str, &str, &str)` (namespace, snapshotter, key) | `&[u8]` record | a namespace's view of each snapshotter |
//! | `released_content` | `&str` digest | `()` | digests whose last record was deleted, until GC reports them (since v2) |
//!
//! All tables are created (empty) when the database is opened, so read
//! transactions never meet a missing table. The object tables' records are
//! opaque bytes to redb; each store defines its record encoding in its own
//! module, summarised here.
//!
//! # Record encodings
//!
//! Records are JSON objects (serde_json): self-describing, so a later
//! version can add fields and an older record still decodes (missing fields
//! take defaults, unknown fields are ignored). Times are integers, signed
//! nanoseconds since the Unix epoch (UTC). Empty label maps are omitted.
//!
//! - `content` ([`crate::content`]): `{"size": 1234, "created": <ns>,
//!   "updated": <ns>, "labels": {"k": "v"}}`; the digest is the key.
//! - `leases` ([`crate::leases`]): `{"created": <ns>, "labels": {..}}`; its
//!   resources are rows of `lease_resources`, keyed by the resource type as
//!   containerd spells it (`content`, `ingests`, `images`,
//!   `snapshots/<snapshotter>`) and the resource id, so adding one is a
//!   single insert however many the lease holds.
//!
//! - `snapshots` ([`crate::snapshots`]): `{"name": "<driver's name>",
//!   "parent": "<parent key>", "kind": "active", "created": <ns>, "updated":
//!   <ns>, "labels": {..}, "pending": {..}}`; the collector reads `parent`
//!   and `labels`.
//!
//! - `images` ([`crate::images`]): `{"target": {"mediaType": "..", "digest":
//!   "sha256:..", "size": 1}, "labels": {..}, "created": <ns>, "updated":
//!   <ns>}`; the collector reads `target.digest` and `labels`.
//!
//! - `containers` ([`crate::containers`]): `{"snapshotter": "overlayfs",
//!   "snapshot_key": "..", "labels": {..}, "runtime": {..}, "spec": {..},
//!   ...}`; the collector reads `snapshotter`, `snapshot_key` and `labels`.
//!
//! A store that writes any of these tables must also report the object to a
//! garbage collection that may be running concurrently, with
//! `Db::track` inside its write transaction (see [`crate::gc`]).
//!
//! # Ranges
//!
//! `N + "\0"` is the smallest string greater than `N`, so the keys of
//! namespace `N` in a table are exactly those in `[(N, ""), (N + "\0", ""))`:
//! every other namespace sorts wholly before or wholly after, including
//! namespaces that merely start with `N` (`N.x`, `Nx`). The same bound skips
//! from one snapshotter to the next inside a namespace.
//!
//! # Namespace deletion
//!
//! A namespace may be deleted only when it holds no images, content blobs,
//! containers or snapshots; its labels and leases (with their resources) go
//! with it, as in containerd
//! (whose `Delete` drops the whole namespace bucket, leases included). A new
//! per-namespace table must be added to one of those two lists in
//! `namespaces.rs` (`remaining_objects` or `purge`).
//!
//! # Versions
//!
//! [`SCHEMA_VERSION`] is recorded in `meta` when the file is created. A build
//! refuses a file with a newer version ([`crate::Error::SchemaVersion`]); a
//! build that changes the layout bumps the version and adds a migration.
//!
//! - Version 1: namespaces; the object tables existed but no store wrote them.
//! - Version 2: content and lease records (encodings above), the
//!   `lease_resources` and `released_content` tables. Migrating from 1 only
//!   creates the new tables (opening does) and records the version; version
//!   1 builds refuse a version 2 file, which is what keeps them from
//!   deleting a namespace's leases but leaving their resource rows behind.

use redb::TableDefinition;

/// The layout version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 2;

/// Key in [`META`] under which the schema version is stored.
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Database-wide settings, such as the schema version.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One row per namespace, keyed by name.
pub(crate) const NAMESPACES: TableDefinition<&str, ()> = TableDefinition::new("namespaces");

/// Namespace labels keyed by `(namespace, key)`.
pub(crate) const NAMESPACE_LABELS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("namespace_labels");

/// Image records keyed by `(namespace, name)`.
pub(crate) const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");

/// Container records keyed by `(namespace, id)`.
pub(crate) const CONTAINERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("containers");

/// Content blob records keyed by `(namespace, digest)`.
pub(crate) const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("content");

/// Lease records keyed by `(namespace, id)`.
pub(crate) const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");

/// The resources leases hold, keyed by `(namespace, lease id, resource type, resource id)`.
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");

/// Digests whose last content record (in any namespace) was deleted by
/// [`crate::content::ContentStore::delete`]; the next garbage collection
/// reports them for file deletion unless they were added again meanwhile.
pub(crate) const RELEASED_CONTENT: TableDefinition<&str, ()> =
    TableDefinition::new("released_content");

/// Snapshot records keyed by `(namespace, snapshotter, key)`.
pub(crate) const SNAPSHOTS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("snapshots");

/// The exclusive upper bound of keys whose first element is `first`.
///
/// Keys are tuples compared element by element, and `first + "\0"` is the
/// smallest string greater than `first`: `(first, "")..(end_of(first), "")`
/// holds exactly the keys whose first element equals `first`.
pub(crate) fn end_of(first: &str) -> String {
    let mut end = String::with_capacity(first.len() + 1);
    end.push_str(first);
    end.push('\0');
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_bounds_a_prefix_family() {
        let end = end_of("a");
        assert!("a" < end.as_str());
        for later in ["a.b", "a-b", "ab", "a0", "b"] {
            assert!(end.as_str() < later, "{later:?} must sort after {end:?}");
        }
    }
}
