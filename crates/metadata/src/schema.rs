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
//! # Tables (schema version 1)
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
//! | `snapshots` | `(&str, &str, &str)` (namespace, snapshotter, key) | `&[u8]` record | a namespace's view of each snapshotter |
//!
//! All tables are created (empty) when the database is first opened, so read
//! transactions never meet a missing table. The object tables' records are
//! opaque bytes at this layer; each store that fills a table defines its
//! record encoding in its own module.
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
//! containers or snapshots; its labels and leases go with it, as in containerd
//! (whose `Delete` drops the whole namespace bucket, leases included). A new
//! per-namespace table must be added to one of those two lists in
//! `namespaces.rs` (`remaining_objects` or `purge`).
//!
//! # Versions
//!
//! [`SCHEMA_VERSION`] is recorded in `meta` when the file is created. A build
//! refuses a file with a newer version ([`crate::Error::SchemaVersion`]); a
//! build that changes the layout bumps the version and adds a migration.

use redb::TableDefinition;

/// The layout version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 1;

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
