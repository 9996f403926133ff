//! berth-transfer as a library, no daemon: pull an image from a real local
//! registry (Debian's docker-registry) and import an archive, unpacking
//! into berth-snapshots' native and overlayfs drivers over berth-content's
//! LocalStore, as `crates/transfer/examples/pull_unpack.rs` does; then
//! check the unpacked root filesystem file by file.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_content::local::LocalStore;
use berth_remotes::registry::RegistryOptions;
use berth_snapshots::Snapshotter;
use berth_snapshots::mount::MountGuard;
use berth_snapshots::native::NativeSnapshotter;
use berth_snapshots::overlay::OverlaySnapshotter;
use berth_tests::{Registry, testimages};
use berth_transfer::archive::{self, ArchiveOnly, Naming};
use berth_transfer::{Category, Progress, PullOptions, Puller, Unpacker};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A snapshotter as a third party would write it: it declares no
/// capability, so unpacking goes through its mounts (here overlayfs').
struct Plain(OverlaySnapshotter);

impl Snapshotter for Plain {
    fn stat(&self, key: &str) -> berth_snapshots::Result<berth_snapshots::Info> {
        self.0.stat(key)
    }
    fn update(
        &self,
        info: berth_snapshots::Info,
        fieldpaths: &[&str],
    ) -> berth_snapshots::Result<berth_snapshots::Info> {
        self.0.update(info, fieldpaths)
    }
    fn usage(&self, key: &str) -> berth_snapshots::Result<berth_snapshots::Usage> {
        self.0.usage(key)
    }
    fn mounts(&self, key: &str) -> berth_snapshots::Result<Vec<berth_snapshots::Mount>> {
        self.0.mounts(key)
    }
    fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: berth_snapshots::Labels,
    ) -> berth_snapshots::Result<Vec<berth_snapshots::Mount>> {
        self.0.prepare(key, parent, labels)
    }
    fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: berth_snapshots::Labels,
    ) -> berth_snapshots::Result<Vec<berth_snapshots::Mount>> {
        self.0.view(key, parent, labels)
    }
    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: berth_snapshots::Labels,
    ) -> berth_snapshots::Result<()> {
        self.0.commit(name, key, labels)
    }
    fn remove(&self, key: &str) -> berth_snapshots::Result<()> {
        self.0.remove(key)
    }
    fn walk(
        &self,
        f: &mut dyn FnMut(&berth_snapshots::Info) -> berth_snapshots::Result<()>,
    ) -> berth_snapshots::Result<()> {
        self.0.walk(f)
    }
    fn cleanup(&self) -> berth_snapshots::Result<()> {
        self.0.cleanup()
    }
}

/// Which snapshotter a test unpacks into.
#[derive(Clone, Copy)]
enum Driver {
    Native,
    Overlay,
    /// overlayfs without its capabilities.
    Plain,
}

/// A store and a snapshotter under `dir`, and pull options unpacking into it.
fn setup(
    dir: &Path,
    driver: Driver,
) -> Result<(Arc<LocalStore>, Arc<dyn Snapshotter>, PullOptions)> {
    let store = Arc::new(LocalStore::open(dir.join("content"))?);
    let (name, sn): (&str, Arc<dyn Snapshotter>) = match driver {
        Driver::Overlay => (
            "overlayfs",
            Arc::new(OverlaySnapshotter::new(dir.join("overlay"))?),
        ),
        Driver::Plain => (
            "plain",
            Arc::new(Plain(OverlaySnapshotter::new(dir.join("plain"))?)),
        ),
        Driver::Native => (
            "native",
            Arc::new(NativeSnapshotter::new(dir.join("native"))?),
        ),
    };
    let options = PullOptions {
        unpack: Some(Unpacker::new(name, sn.clone(), dir.join("tmp"))),
        registry: RegistryOptions::default().with_plain_http(true),
        ..PullOptions::default()
    };
    Ok((store, sn, options))
}

/// Mounts a view of `chain` on `dir/rootfs` and checks the layered test
/// image's files there (whiteouts applied, opaque directory, hardlink).
fn check_layered_rootfs(sn: &dyn Snapshotter, chain: &str, dir: &Path) -> Result<()> {
    let mounts = sn.view("check", Some(chain), Default::default())?;
    let target = dir.join("rootfs");
    std::fs::create_dir_all(&target)?;
    let guard = MountGuard::mount(&mounts, &target)?;
    let root = guard.target();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).with_context(|| p.to_string());
    let checked = (|| -> Result<()> {
        assert!(root.join("bin/busybox").is_file(), "bin/busybox is missing");
        assert_eq!(read("data/kept")?, "kept\n");
        assert_eq!(read("data/new")?, "new\n");
        assert!(
            !root.join("data/gone").exists(),
            "a whiteout was not applied"
        );
        let mut opq: Vec<String> = std::fs::read_dir(root.join("opq"))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        opq.sort();
        assert_eq!(opq, ["fresh"], "the opaque directory shows lower files");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(root.join("links/hard"))?.ino(),
            std::fs::metadata(root.join("links/target"))?.ino(),
            "the hardlink was not kept"
        );
        Ok(())
    })();
    guard.unmount()?;
    sn.remove("check")?;
    checked
}

fn pull_and_check(driver: Driver, repo: &str) -> Result<()> {
    let registry = Registry::start()?;
    let dir = tempfile::tempdir()?;
    let layout = testimages::layered(&dir.path().join("image"))?;
    let reference = registry.push_layout(&layout, repo, "v1")?;
    let (store, sn, mut options) = setup(dir.path(), driver)?;
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    options.progress = Progress::to(move |e| {
        if let Ok(mut v) = seen.lock() {
            v.push(e.event);
        }
    });
    let rt = runtime()?;
    let puller = Puller::new(store.clone());
    let pulled = rt.block_on(puller.pull(&reference, &options))?;
    assert_eq!(pulled.name, reference);
    assert_eq!(pulled.root.digest.to_string(), layout.root.digest);
    assert!(pulled.downloaded > 0);
    for layer in &layout.layers {
        let digest = berth_content::Digest::parse(&layer.digest)?;
        assert!(
            berth_content::Provider::reader_at(&*store, &digest).is_ok(),
            "layer {} is not in the store",
            layer.digest
        );
    }
    let events = events.lock().map(|v| v.clone()).unwrap_or_default();
    for wanted in ["resolving", "resolved", "complete", "unpacking", "unpacked"] {
        assert!(
            events.iter().any(|e| e == wanted),
            "no {wanted:?} in {events:?}"
        );
    }
    let chain = pulled.chain_id.context("the pull did not unpack")?;
    check_layered_rootfs(&*sn, chain.as_str(), dir.path())?;

    // Again: everything is local, nothing is downloaded, the same top layer.
    let again = rt.block_on(puller.pull(&reference, &options))?;
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.chain_id, Some(chain));
    Ok(())
}

#[test]
fn pull_unpacks_into_the_native_snapshotter_without_a_daemon() -> Result<()> {
    pull_and_check(Driver::Native, "lib/native")
}

#[test]
fn pull_unpacks_into_overlayfs_without_a_daemon() -> Result<()> {
    pull_and_check(Driver::Overlay, "lib/overlay")
}

#[test]
fn pull_unpacks_through_mounts_into_a_snapshotter_without_capabilities() -> Result<()> {
    pull_and_check(Driver::Plain, "lib/plain")
}

#[test]
fn an_imported_archive_unpacks_without_a_daemon() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let layout = testimages::layered(&dir.path().join("image"))?;
    let file = dir.path().join("layered.tar");
    layout.write_archive(&file)?;
    let (store, sn, options) = setup(dir.path(), Driver::Native)?;
    let reader = std::fs::File::open(&file)?;
    let imported = archive::import(&*store, reader, "import", &Naming::with_prefix("import"))?;
    let (name, root) = imported
        .images
        .into_iter()
        .next()
        .context("the archive names no image")?;
    assert_eq!(name, "docker.io/library/layered:latest");
    let rt = runtime()?;
    let pulled =
        rt.block_on(Puller::new(store).fetch(&name, &root, Arc::new(ArchiveOnly), None, &options))?;
    assert_eq!(pulled.downloaded, 0);
    let chain = pulled.chain_id.context("the import did not unpack")?;
    check_layered_rootfs(&*sn, chain.as_str(), dir.path())
}

#[test]
fn a_missing_image_is_not_found() -> Result<()> {
    let registry = Registry::start()?;
    let dir = tempfile::tempdir()?;
    let (store, _sn, options) = setup(dir.path(), Driver::Native)?;
    let reference = format!("{}/lib/none:v1", registry.host);
    let err = runtime()?
        .block_on(Puller::new(store).pull(&reference, &options))
        .err()
        .context("pulling an image the registry does not have succeeded")?;
    assert_eq!(err.category(), Category::NotFound, "{err}");
    Ok(())
}

#[test]
fn an_image_in_the_store_unpacks_with_the_unpacker_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let layout = testimages::layered(&dir.path().join("image"))?;
    let file = dir.path().join("layered.tar");
    layout.write_archive(&file)?;
    let (store, sn, mut options) = setup(dir.path(), Driver::Overlay)?;
    let unpacker = options.unpack.take().context("no unpacker")?;
    let imported = archive::import(
        &*store,
        std::fs::File::open(&file)?,
        "import",
        &Naming::with_prefix("import"),
    )?;
    let (_, root) = imported.images.into_iter().next().context("no image")?;
    let unpacked = runtime()?.block_on(unpacker.unpack(
        store.clone(),
        &root,
        &berth_images::Matcher::host(),
        &Progress::none(),
    ))?;
    // The config now names the snapshot, so a collector keeps both.
    let info = berth_content::Manager::info(&*store, &unpacked.config.digest)?;
    assert_eq!(
        info.labels.get("containerd.io/gc.ref.snapshot.overlayfs"),
        Some(&unpacked.chain_id.to_string()),
        "{:?}",
        info.labels
    );
    check_layered_rootfs(&*sn, unpacked.chain_id.as_str(), dir.path())
}
