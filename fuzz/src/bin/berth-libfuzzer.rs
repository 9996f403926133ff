//! The libFuzzer driver: one binary for every target, picked by the
//! `BERTH_FUZZ_TARGET` environment variable (built and run by
//! `cargo xtask fuzz`, which instruments it for coverage).

#![no_main]

use std::sync::OnceLock;

use berth_fuzz::targets::{self, Def};

fn target() -> &'static Def {
    static TARGET: OnceLock<Def> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("BERTH_FUZZ_TARGET").unwrap_or_default();
        targets::by_name(&name).unwrap_or_else(|| {
            let names: Vec<String> = targets::all()
                .into_iter()
                .map(|d| d.target.name.to_string())
                .collect();
            eprintln!(
                "BERTH_FUZZ_TARGET={name:?} names no target; one of: {}",
                names.join(", ")
            );
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let def = target();
    if data.len() <= def.target.max_len {
        (def.check)(data);
    }
});
