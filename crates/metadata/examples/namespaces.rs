//! Opens (or creates) a metadata database and walks a namespace through its life.
//!
//! ```text
//! cargo run -p berth-metadata --example namespaces [DB_PATH]
//! ```
//!
//! With no path, the database lives in a temporary directory that is removed
//! afterwards.

use std::error::Error;

use berth_metadata::Db;

fn main() -> Result<(), Box<dyn Error>> {
    let tmp = tempfile::tempdir()?;
    let path = match std::env::args_os().nth(1) {
        Some(p) => p.into(),
        None => tmp.path().join("meta.db"),
    };

    let db = Db::open(&path)?;
    println!(
        "opened {} (schema v{})",
        db.path().display(),
        berth_metadata::SCHEMA_VERSION
    );

    let namespaces = db.namespaces();
    if !namespaces.exists("example")? {
        namespaces.create("example", [("owner", "berth-example")])?;
    }
    namespaces.set_label("example", "visits", "1")?;
    namespaces.update_labels("example", [("visits", "2"), ("owner", "")])?;

    for ns in namespaces.list_with_labels()? {
        println!("{}", ns.name);
        for (key, value) in &ns.labels {
            println!("  {key}={value}");
        }
    }

    // Validation errors carry containerd's categories and wording.
    if let Err(err) = namespaces.create("not/valid", [("k", "v")]) {
        println!("refused: {err}");
    }

    namespaces.delete("example")?;
    println!(
        "deleted example; {} namespace(s) left",
        namespaces.list()?.len()
    );
    Ok(())
}
