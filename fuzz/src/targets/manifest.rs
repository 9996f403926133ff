//! Manifest, index and image config JSON.

use berth_images::{Descriptor, manifest, media};

use super::{Def, PARSER_ITERS};
use crate::Target;

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "manifest",
            default_iters: PARSER_ITERS,
            dictionary: &[
                r#""mediaType":"#,
                r#""schemaVersion":"#,
                r#""manifests":[]"#,
                r#""layers":[]"#,
                r#""config":{}"#,
                r#""platform":{"os":"linux","architecture":"arm","variant":"v7"}"#,
                r#""digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855""#,
                r#""size":-1"#,
                r#""size":18446744073709551616"#,
                "null",
                "1e400",
                r#""\ud800""#,
                media::OCI_MANIFEST,
                media::OCI_INDEX,
                media::DOCKER_MANIFEST_LIST,
            ],
            max_len: 16 << 10,
        },
        check,
    }
}

fn check(data: &[u8]) {
    for mt in [media::OCI_MANIFEST, media::DOCKER_MANIFEST] {
        let _ = manifest::parse_manifest(&Descriptor::of(mt, data), data);
    }
    for mt in [media::OCI_INDEX, media::DOCKER_MANIFEST_LIST] {
        if let Ok(index) = manifest::parse_index(&Descriptor::of(mt, data), data) {
            let mut manifests = index.manifests;
            for p in manifests.iter().filter_map(|d| d.platform.as_ref()) {
                let _ = p.normalize();
            }
            berth_images::Matcher::host().sort_descriptors(&mut manifests);
        }
    }
    for mt in [media::OCI_CONFIG, media::DOCKER_CONFIG] {
        if let Ok(config) = manifest::parse_config(&Descriptor::of(mt, data), data) {
            let _ = config.platform();
            let _ = manifest::chain_ids(&config.rootfs.diff_ids);
        }
    }
    // A descriptor whose size or digest does not match is refused.
    let _ = manifest::parse_manifest(&Descriptor::of(media::OCI_MANIFEST, b"x"), data);
}
