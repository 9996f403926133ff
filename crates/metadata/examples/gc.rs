//! Records content in two namespaces, holds some with a lease, and collects
//! the rest.
//!
//! ```text
//! cargo run -p berth-metadata --example gc
//! ```
//!
//! The database lives in a temporary directory that is removed afterwards.

use std::error::Error;
use std::time::SystemTime;

use berth_metadata::gc::{LABEL_EXPIRE, LABEL_REF_CONTENT};
use berth_metadata::{Db, Labels};

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

fn main() -> Result<(), Box<dyn Error>> {
    let tmp = tempfile::tempdir()?;
    let db = Db::open(tmp.path().join("meta.db"))?;
    let (content, leases) = (db.content(), db.leases());

    // A pull in "default": a layer, then a manifest that references it,
    // both held by the pull's lease until an image would reference them.
    leases.create("default", "pull", Labels::new())?;
    content.add("default", &digest(1), 4096, Labels::new(), Some("pull"))?;
    let mut manifest_labels = Labels::new();
    manifest_labels.insert(format!("{LABEL_REF_CONTENT}.l.0"), digest(1));
    content.add("default", &digest(2), 512, manifest_labels, Some("pull"))?;

    // The same layer in another namespace, held by a lease that has expired.
    let mut expired = Labels::new();
    expired.insert(LABEL_EXPIRE.to_owned(), "2000-01-01T00:00:00Z".to_owned());
    leases.create("other", "old", expired)?;
    content.add("other", &digest(1), 4096, Labels::new(), Some("old"))?;
    // And something nobody holds.
    content.add("other", &digest(3), 10, Labels::new(), None)?;

    let report = db.collect_garbage(SystemTime::now())?;
    println!("expired leases deleted: {:?}", report.removed_leases);
    println!("records removed: {:?}", report.removed_content_records);
    println!("blob files to delete: {:?}", report.removed_content);

    // Releasing the pull's lease makes the rest collectable.
    leases.delete("default", "pull")?;
    let report = db.collect_garbage(SystemTime::now())?;
    println!(
        "after releasing the pull, blob files to delete: {:?}",
        report.removed_content
    );
    println!(
        "(mark {:?}, sweep {:?} in {} transaction(s))",
        report.mark_duration, report.sweep_duration, report.sweep_transactions
    );
    Ok(())
}
