//! Ingests files into a local content store, the way a pull does: each one
//! through a ref, resumable, verified by digest. Then lists the store.
//!
//! ```text
//! cargo run -p berth-content --example ingest -- [ROOT [FILE...]]
//! ```
//!
//! With no arguments it uses a temporary store and a few generated blobs,
//! one of them interrupted halfway and resumed.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use berth_content::local::LocalStore;
use berth_content::{Digest, Error, IngestManager, Ingester, Labels, Manager, Result, write_blob};

/// Streams `file` into the store under `ref_`, continuing an earlier ingest.
fn ingest_file(store: &dyn Ingester, ref_: &str, path: &PathBuf) -> Result<Option<Digest>> {
    let io_err = |e| Error::Io {
        path: path.clone(),
        source: e,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut w = store.writer(ref_, None, None)?;
    // Skip what a previous run already stored.
    let offset = w.status()?.offset;
    io::copy(&mut (&mut file).take(offset), &mut io::sink()).map_err(io_err)?;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
    }
    let digest = w.digest();
    match w.commit(0, None, Labels::new()) {
        Ok(()) => Ok(Some(digest)),
        Err(Error::AlreadyExists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let _temp;
    let root = match args.next() {
        Some(root) => PathBuf::from(root),
        None => {
            _temp = tempfile::tempdir().map_err(|e| Error::Io {
                path: std::env::temp_dir(),
                source: e,
            })?;
            _temp.path().to_owned()
        }
    };
    let store = LocalStore::open(&root)?;
    println!("store at {}", root.display());

    let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if files.is_empty() {
        // A small blob in one call.
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        write_blob(&store, "config", config, &Digest::of(config), Labels::new())?;

        // A bigger one, interrupted halfway (the writer is dropped) ...
        let layer: Vec<u8> = (0..5_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let digest = Digest::of(&layer);
        let mut w = store.writer("layer", Some(layer.len() as u64), Some(&digest))?;
        w.write(&layer[..layer.len() / 2])?;
        drop(w);
        let status = store.status("layer")?;
        println!(
            "interrupted: ref {} at {}/{:?}",
            status.ref_, status.offset, status.total
        );
        // ... and finished by a later call, which resumes at the offset.
        write_blob(&store, "layer", &layer, &digest, Labels::new())?;
    }
    for (i, path) in files.iter().enumerate() {
        let ref_ = format!("file-{i}-{}", path.display());
        match ingest_file(&store, &ref_, path)? {
            Some(digest) => println!("{}: {digest}", path.display()),
            None => println!("{}: already in the store", path.display()),
        }
    }

    for info in store.list()? {
        println!("{}\t{} bytes", info.digest, info.size);
    }
    Ok(())
}
