//! The fuzz targets: one per parser of outside input.
//!
//! Each [`Def`] names its corpus, the tokens worth inserting and the check
//! run on every input. The same checks run under the seeded mutation
//! fuzzer (the crate's tests) and under libFuzzer (`cargo xtask fuzz`),
//! so a target is written once.

mod auth;
mod config;
mod events;
mod filters;
mod hosts;
mod layer;
mod manifest;
mod oci_hook;
mod options;
mod reference;
mod user;

use crate::Target;

/// A fuzz target: how it is fuzzed and what it checks.
#[derive(Debug, Clone)]
pub struct Def {
    /// Name, corpus, dictionary and input bounds.
    pub target: Target<'static>,
    /// The check: returns for any input; panics only on a bug.
    pub check: fn(&[u8]),
}

/// Runs of plain in-memory parsers: cheap, so many inputs.
const PARSER_ITERS: u64 = 20_000;

/// Every target, in the order the README lists them.
pub fn all() -> Vec<Def> {
    vec![
        reference::def(),
        manifest::def(),
        filters::def(),
        config::def(),
        hosts::def(),
        layer::def(),
        auth::def(),
        events::def(),
        options::def(),
        oci_hook::def(),
        user::def(),
    ]
}

/// The target called `name`, if there is one.
pub fn by_name(name: &str) -> Option<Def> {
    all().into_iter().find(|d| d.target.name == name)
}

/// Input bytes as text, as the parsers of text see them.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Splits `data` at its first NUL into two inputs (the second may be empty).
fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
