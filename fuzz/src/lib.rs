//! A small, dependency-free mutation fuzzer that runs as an ordinary test on
//! the stable toolchain.
//!
//! [`run`] feeds a target every seed in `fuzz/corpus/<target>/`, then a
//! bounded number of inputs made by stacking random mutations (bit flips,
//! interesting bytes, insertions, deletions, duplications, splices with other
//! seeds, dictionary tokens) on the seeds. The run is deterministic for a
//! given seed, so a failure in CI reproduces locally. A target panicking is
//! the failure: a parser of outside input must return an error instead. The
//! failing input is saved under `fuzz/crashes/<target>/` and its path named
//! in the panic message; add it to the corpus once fixed.
//!
//! Environment knobs for longer runs (see the README):
//! `BERTH_FUZZ_ITERS` (inputs per target, default per target),
//! `BERTH_FUZZ_SEED` (random seed, default fixed).

pub mod targets;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// How one target is fuzzed.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The name: its corpus is `fuzz/corpus/<name>/`.
    pub name: &'a str,
    /// Generated inputs when `BERTH_FUZZ_ITERS` is unset.
    pub default_iters: u64,
    /// Tokens worth inserting (keywords, operators of the grammar).
    pub dictionary: &'a [&'a str],
    /// The largest input handed to the target.
    pub max_len: usize,
}

/// What a run did, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Seeds read from the corpus.
    pub seeds: usize,
    /// Calls of the target, seeds included.
    pub executions: u64,
}

/// The corpus directory of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Runs `check` on the corpus and on generated inputs; panics (naming the
/// saved input) if `check` panics on any of them.
pub fn run(target: &Target<'_>, check: impl Fn(&[u8])) -> Stats {
    let seeds = load_corpus(target.name);
    assert!(
        !seeds.is_empty(),
        "no seeds in {}",
        corpus_dir(target.name).display()
    );
    let iters = env_u64("BERTH_FUZZ_ITERS").unwrap_or(target.default_iters);
    let mut rng = Rng::new(env_u64("BERTH_FUZZ_SEED").unwrap_or(0x6265_7274_6866_757a));
    let mut executions = 0;
    for seed in &seeds {
        execute(target.name, &check, seed);
        executions += 1;
    }
    for _ in 0..iters {
        let input = mutate(&mut rng, &seeds, target);
        execute(target.name, &check, &input);
        executions += 1;
    }
    eprintln!(
        "fuzz {}: {} seeds, {executions} executions, no panics",
        target.name,
        seeds.len()
    );
    Stats {
        seeds: seeds.len(),
        executions,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut paths: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
        Err(err) => panic!("reading corpus {}: {err}", dir.display()),
    };
    paths.sort();
    paths
        .iter()
        .map(|p| fs::read(p).unwrap_or_else(|err| panic!("reading {}: {err}", p.display())))
        .collect()
}

fn execute(target: &str, check: &impl Fn(&[u8]), input: &[u8]) {
    let crashes = Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes");
    execute_saving_to(&crashes, target, check, input);
}

fn execute_saving_to(crashes: &Path, target: &str, check: &impl Fn(&[u8]), input: &[u8]) {
    if panic::catch_unwind(AssertUnwindSafe(|| check(input))).is_ok() {
        return;
    }
    let dir = crashes.join(target);
    let path = dir.join(format!("crash-{:016x}", fnv(input)));
    let saved = fs::create_dir_all(&dir).and_then(|()| fs::write(&path, input));
    panic!(
        "fuzz target {target} panicked on {} bytes ({}): {:?}",
        input.len(),
        match saved {
            Ok(()) => format!("saved to {}", path.display()),
            Err(err) => format!("not saved: {err}"),
        },
        String::from_utf8_lossy(&input[..input.len().min(512)])
    );
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*: small, fast, and reproducible everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            // The remainder is below `n`, so it fits.
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'/', b':', b'@', b'=', b',', b'.', b'[', b']', b'{',
    b'}', b'\n', b' ', b'%', b'0', b'9',
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], target: &Target<'_>) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next().to_le_bytes()[0]).collect();
                data.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                data.drain(i..i + n);
            }
            4 if len > 0 => {
                // Duplicate a range: repeated structure (nesting, fields).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            5 => {
                // Splice the tail of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            6 if !target.dictionary.is_empty() => {
                let token = target.dictionary[rng.below(target.dictionary.len())];
                let i = rng.below(len + 1);
                data.splice(i..i, token.bytes());
            }
            7 if len > 0 => {
                data.truncate(rng.below(len));
            }
            _ => {
                // Replace with a multi-byte char or an overlong run.
                let i = rng.below(len + 1);
                let pick = ["é", "\u{10ffff}", "\u{0}", "ﬀ", "\u{202e}"];
                let s = pick[rng.below(pick.len())];
                data.splice(i..i, s.bytes());
            }
        }
    }
    data.truncate(target.max_len);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_reproducible_and_bounded() {
        let seeds = vec![b"hello".to_vec(), b"world, again".to_vec()];
        let target = Target {
            name: "unit",
            default_iters: 0,
            dictionary: &["tok"],
            max_len: 64,
        };
        let make = || {
            let mut rng = Rng::new(7);
            (0..200)
                .map(|_| mutate(&mut rng, &seeds, &target))
                .collect::<Vec<_>>()
        };
        let first = make();
        assert_eq!(first, make());
        assert!(first.iter().all(|d| d.len() <= 64));
        assert!(first.iter().any(|d| d != &seeds[0] && d != &seeds[1]));
    }

    #[test]
    fn a_panicking_target_fails_the_run_and_saves_the_input() {
        let tmp = tempfile::tempdir().unwrap();
        let failed = panic::catch_unwind(|| {
            execute_saving_to(tmp.path(), "unit", &|_: &[u8]| panic!("boom"), b"abc");
        });
        let message = *failed.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.starts_with("fuzz target unit panicked on 3 bytes (saved to "),
            "{message}"
        );
        let saved: Vec<_> = fs::read_dir(tmp.path().join("unit")).unwrap().collect();
        assert_eq!(saved.len(), 1);
        assert_eq!(fs::read(saved[0].as_ref().unwrap().path()).unwrap(), b"abc");
    }
}
