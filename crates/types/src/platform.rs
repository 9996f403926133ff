//! Platforms (`linux/amd64`, `linux/arm/v7`) and choosing among them.
//!
//! This follows containerd's `platforms` package. A [`Platform`] is the OCI
//! `platform` object of an index entry or config. Names are normalised
//! before they are compared (`x86_64` → `amd64`, `aarch64` → `arm64`,
//! `armhf` → `arm/v7`, `arm64/v8` → `arm64`, `amd64/v1` → `amd64`), and a
//! [`Matcher`] decides which platforms an image may be pulled or run for,
//! ranking them:
//!
//! - [`Matcher::only`] (containerd's `Only`; [`Matcher::host`] is its
//!   `Default`): the platform plus the ones it can also run, best first:
//!   `amd64/v3` also runs `v2`, `amd64` and `386`; `arm/v7` also runs `v6`
//!   and `v5`; `arm64` also runs `arm/v8`..`arm/v5`.
//! - [`Matcher::strict`] (`OnlyStrict`): that platform only.
//! - [`Matcher::all`]: everything, no preference.
//!
//! Specifiers parse like containerd's: `linux/amd64`, `linux/arm/v7`,
//! `amd64` (the host's OS is assumed), `linux` (the host's architecture),
//! `windows(10.0.17763)/amd64` (an OS version).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::descriptor::Descriptor;
use crate::errdefs::{Category, ErrorCategory};

/// An OCI platform: what an image was built for, or what a host runs.
///
/// Empty strings mean "not set", as in the OCI JSON (where such fields are
/// omitted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, GOARCH-style: `amd64`, `arm64`, `arm`, `386`, `s390x`...
    #[serde(default)]
    pub architecture: String,
    /// Operating system, GOOS-style: `linux`, `windows`, `darwin`...
    #[serde(default)]
    pub os: String,
    /// OS version (used by Windows: `10.0.17763.1234`).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Required OS features (Windows: `win32k`).
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant: `v7` for arm, `v8` for arm64, `v2`/`v3` for amd64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// A platform from its three usual parts (`variant` may be empty).
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant: variant.to_owned(),
            ..Platform::default()
        }
    }

    /// The platform of this host, like containerd's `DefaultSpec`:
    /// `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`...
    pub fn host() -> Platform {
        let arch = host_arch();
        let variant = match arch {
            "arm64" => "v8",
            "arm" => host_arm_variant(),
            _ => "",
        };
        Platform::new(host_os(), arch, variant)
    }

    /// Parses a specifier: `<os>[(<version>[+<feature>...])][/<arch>[/<variant>]]`
    /// or just `<arch>`; see the module docs. The result is normalised.
    pub fn parse(spec: &str) -> Result<Platform, PlatformError> {
        parse_specifier(spec).map_err(|why| PlatformError {
            spec: spec.to_owned(),
            why,
        })
    }

    /// The canonical form of this platform (containerd's `Normalize`):
    /// lowercase, architecture aliases resolved, default variants dropped
    /// (`arm64/v8` → `arm64`, `amd64/v1` → `amd64`), bare `arm` made `arm/v7`,
    /// OS features sorted and deduplicated. An empty OS becomes the host's.
    pub fn normalize(&self) -> Platform {
        let os = normalize_os(&self.os);
        let (architecture, variant) = normalize_arch(&self.architecture, &self.variant);
        let mut os_features = self.os_features.clone();
        os_features.sort();
        os_features.dedup();
        Platform {
            architecture,
            os,
            os_version: self.os_version.clone(),
            os_features,
            variant,
        }
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]` (containerd's `Format`), `unknown` without an OS.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os.is_empty() {
            return f.write_str("unknown");
        }
        f.write_str(&self.os)?;
        for part in [&self.architecture, &self.variant] {
            if !part.is_empty() {
                write!(f, "/{part}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Same as [`Platform::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

/// A platform specifier that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {spec:?}: {why}")]
pub struct PlatformError {
    /// The specifier as given.
    pub spec: String,
    /// What is wrong, and the accepted form.
    pub why: String,
}

impl ErrorCategory for PlatformError {
    fn category(&self) -> Category {
        Category::InvalidArgument
    }
}

/// Which platforms are wanted, and which of them are preferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// `None` matches everything; otherwise normalised platforms, best first.
    ordered: Option<Vec<Platform>>,
}

impl Matcher {
    /// Matches every platform, with no preference (containerd's `All`).
    pub fn all() -> Matcher {
        Matcher { ordered: None }
    }

    /// Matches `platform` and the platforms it can also run, preferring
    /// `platform` itself (containerd's `Only`).
    pub fn only(platform: &Platform) -> Matcher {
        let mut vector = Vec::new();
        platform_vector(&platform.normalize(), &mut vector);
        Matcher::ordered(vector)
    }

    /// Matches `platform` only, after normalisation (containerd's `OnlyStrict`).
    pub fn strict(platform: &Platform) -> Matcher {
        Matcher::ordered(vec![platform.clone()])
    }

    /// Matches any of `platforms`, preferring earlier ones (containerd's `Ordered`).
    pub fn ordered(platforms: Vec<Platform>) -> Matcher {
        Matcher {
            ordered: Some(platforms.iter().map(Platform::normalize).collect()),
        }
    }

    /// The host's platform and what it can also run (containerd's `Default`).
    pub fn host() -> Matcher {
        Matcher::only(&Platform::host())
    }

    /// Whether `platform` is wanted.
    pub fn matches(&self, platform: &Platform) -> bool {
        self.rank(platform).is_some()
    }

    /// How preferred `platform` is: `Some(0)` best, larger worse, `None`
    /// not wanted. Every platform ranks 0 under [`Matcher::all`].
    pub fn rank(&self, platform: &Platform) -> Option<usize> {
        let Some(ordered) = &self.ordered else {
            return Some(0);
        };
        let p = platform.normalize();
        ordered.iter().position(|m| entry_matches(m, &p))
    }

    /// Whether `a` is preferred to `b` (containerd's `Less`).
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        match (self.rank(a), self.rank(b)) {
            (Some(x), Some(y)) => x < y,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Sorts index entries best first, stably: matching platforms by rank,
    /// then non-matching ones, then entries with no platform (as
    /// containerd's `LimitManifests` orders them).
    pub fn sort_descriptors(&self, descs: &mut [Descriptor]) {
        descs.sort_by_cached_key(|d| match &d.platform {
            None => usize::MAX,
            Some(p) => self.rank(p).unwrap_or(usize::MAX - 1),
        });
    }

    /// Whether this matcher takes every platform.
    pub fn is_all(&self) -> bool {
        self.ordered.is_none()
    }
}

impl Default for Matcher {
    /// [`Matcher::host`].
    fn default() -> Matcher {
        Matcher::host()
    }
}

impl fmt::Display for Matcher {
    /// The preferred platform (`linux/amd64`), or `all`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ordered.as_deref() {
            None => f.write_str("all"),
            Some([]) => f.write_str("none"),
            Some([first, ..]) => first.fmt(f),
        }
    }
}

/// Whether normalised `p` satisfies normalised matcher entry `m`.
fn entry_matches(m: &Platform, p: &Platform) -> bool {
    if m.os != p.os || m.architecture != p.architecture || m.variant != p.variant {
        return false;
    }
    // Windows images run only on the same build (major.minor.build).
    if m.os == "windows" && !m.os_version.is_empty() && !p.os_version.is_empty() {
        let build = |v: &str| v.split('.').take(3).collect::<Vec<_>>().join(".");
        if build(&m.os_version) != build(&p.os_version) {
            return false;
        }
    }
    // The image's required OS features must all be offered.
    p.os_features.iter().all(|f| m.os_features.contains(f))
}

/// Appends `p` and every platform `p` can also run, best first.
fn platform_vector(p: &Platform, out: &mut Vec<Platform>) {
    out.push(p.clone());
    let with_variant = |arch: &str, variant: String| Platform {
        architecture: arch.to_owned(),
        variant,
        ..p.clone()
    };
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(level) = variant_number(&p.variant) {
                for l in (1..level).rev() {
                    out.push(with_variant("amd64", format!("v{l}")));
                }
            }
            out.push(with_variant("386", String::new()));
        }
        "arm" => {
            if let Some(version) = variant_number(&p.variant) {
                for v in (5..version).rev() {
                    out.push(with_variant("arm", format!("v{v}")));
                }
            }
        }
        "arm64" => {
            let variant = if p.variant.is_empty() {
                "v8"
            } else {
                &p.variant
            };
            let (major_s, minor_s) = match variant.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (variant, None),
            };
            if let Some(mut major) = variant_number(major_s).filter(|&m| m >= 8) {
                // Only single-digit minors (`v8.2`) count, as upstream.
                let mut minor = match minor_s {
                    Some(m) if variant.len() == 4 => m.parse::<u32>().unwrap_or(0),
                    _ => 0,
                };
                let arm64 = |major: u32, minor: u32| {
                    if minor == 0 {
                        format!("v{major}")
                    } else {
                        format!("v{major}.{minor}")
                    }
                };
                if major == 9 {
                    for m in (0..minor).rev() {
                        out.push(with_variant("arm64", arm64(9, m)));
                    }
                    // v9.0 forked from v8.5: v9.x runs v8.(x+5) and below.
                    minor += 5;
                    major = 8;
                    out.push(with_variant("arm64", format!("v8.{minor}")));
                }
                for m in (0..minor).rev() {
                    out.push(with_variant("arm64", arm64(major, m)));
                }
            }
            let arm_variant = if variant.starts_with("v8.") || variant.starts_with("v9.") {
                "v8".to_owned()
            } else {
                variant.to_owned()
            };
            platform_vector(&with_variant("arm", arm_variant), out);
        }
        _ => {}
    }
    // Entries are compared in normalised form (`arm64/v8` is `arm64`).
    for q in out.iter_mut() {
        *q = q.normalize();
    }
}

/// `v7` → 7 (also a bare `7`).
fn variant_number(v: &str) -> Option<u32> {
    v.strip_prefix('v').unwrap_or(v).parse().ok()
}

fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return host_os().to_owned();
    }
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        _ => (arch, variant),
    }
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

/// The host OS in GOOS spelling.
pub fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The host architecture in GOARCH spelling.
pub fn host_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "mips" if little => "mipsle",
        "mips64" if little => "mips64le",
        "loongarch64" => "loong64",
        "sparc64" => "sparc64",
        other => other,
    }
}

/// The arm variant this build targets (containerd reads `/proc/cpuinfo`;
/// the target's features say the same for the code that is running).
fn host_arm_variant() -> &'static str {
    if cfg!(target_feature = "v8") {
        "v8"
    } else if cfg!(target_feature = "v7") {
        "v7"
    } else if cfg!(target_feature = "v6") {
        "v6"
    } else {
        "v5"
    }
}

fn parse_specifier(spec: &str) -> Result<Platform, String> {
    const FORM: &str =
        "want <os>[/<arch>[/<variant>]] or <arch>, e.g. linux/amd64, linux/arm/v7, arm64";
    if spec.contains('*') {
        return Err("wildcards are not supported".into());
    }
    let parts: Vec<&str> = spec.splitn(4, '/').collect();
    if parts.len() > 3 {
        return Err(format!("too many '/'-separated parts; {FORM}"));
    }
    let (os, os_version, os_features) = parse_os(parts[0])?;
    for part in &parts[1..] {
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(format!(
                "component {part:?} may only hold letters, digits, '_', '.' and '-'; {FORM}"
            ));
        }
    }
    let mut p = Platform {
        os_version,
        os_features,
        ..Platform::default()
    };
    match parts.as_slice() {
        [single] => {
            let lower = os.to_ascii_lowercase();
            let lower = if lower == "macos" {
                "darwin".to_owned()
            } else {
                lower
            };
            if is_known_os(&lower) {
                let host = Platform::host();
                p.os = lower;
                p.architecture = host.architecture;
                // containerd leaves the default arm variant (v7) implicit here.
                if p.architecture == "arm" && host.variant != "v7" {
                    p.variant = host.variant;
                }
                return Ok(p);
            }
            if !p.os_version.is_empty() || !p.os_features.is_empty() {
                return Err(format!("{single:?} is not a known operating system"));
            }
            let (arch, variant) = normalize_arch(single, "");
            if !is_known_arch(&arch) {
                return Err(format!("unknown operating system or architecture; {FORM}"));
            }
            p.os = host_os().to_owned();
            p.architecture = arch;
            p.variant = if p.architecture == "arm" && variant == "v7" {
                String::new()
            } else {
                variant
            };
            Ok(p)
        }
        [_, arch] => {
            p.os = normalize_os(&os);
            let (arch, variant) = normalize_arch(arch, "");
            p.architecture = arch;
            p.variant = if p.architecture == "arm" && variant == "v7" {
                String::new()
            } else {
                variant
            };
            Ok(p)
        }
        [_, arch, variant] => {
            p.os = normalize_os(&os);
            let (arch, variant) = normalize_arch(arch, variant);
            p.variant = if arch == "arm64" && variant.is_empty() {
                "v8".into()
            } else {
                variant
            };
            p.architecture = arch;
            Ok(p)
        }
        _ => Err(FORM.into()),
    }
}

/// `<os>[(<version>[+<feature>...])]`.
fn parse_os(part: &str) -> Result<(String, String, Vec<String>), String> {
    let valid_os = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    };
    let Some(open) = part.find('(') else {
        if !valid_os(part) {
            return Err(format!(
                "OS {part:?} may only hold letters, digits, '_' and '-' (optionally followed by (<version>))"
            ));
        }
        return Ok((part.to_owned(), String::new(), Vec::new()));
    };
    let os = &part[..open];
    let Some(inner) = part[open + 1..].strip_suffix(')') else {
        return Err(format!("OS options in {part:?} must end with ')'"));
    };
    if !valid_os(os) {
        return Err(format!(
            "OS {os:?} may only hold letters, digits, '_' and '-'"
        ));
    }
    let valid_opt = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%' | b'-'))
    };
    let mut pieces = inner.split('+');
    let version = pieces.next().unwrap_or("");
    if !valid_opt(version) {
        return Err(format!("OS version {version:?} has invalid characters"));
    }
    let mut features = Vec::new();
    for f in pieces {
        if f.is_empty() || !valid_opt(f) {
            return Err(format!(
                "OS feature {f:?} is empty or has invalid characters"
            ));
        }
        features.push(percent_decode(f)?);
    }
    Ok((os.to_owned(), percent_decode(version)?, features))
}

/// Undoes the `%XX` escapes containerd's `FormatAll` writes into OS options.
fn percent_decode(s: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("%-escapes in {s:?} are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn host_is_normalised_and_named_like_containerd() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64/v8");
        assert!(Matcher::host().matches(&host));
        assert!(Matcher::default().matches(&host));
    }

    #[test]
    fn specifiers_parse_and_normalise() {
        let host_arch = Platform::host().architecture;
        let cases = [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("Linux/AMD64", "linux/amd64"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/arm", "linux/arm"),
            ("linux/armhf", "linux/arm"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/arm64/8", "linux/arm64/v8"),
            ("linux/i386", "linux/386"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("amd64", "linux/amd64"),
            ("aarch64", "linux/arm64"),
            ("armel", "linux/arm/v6"),
            ("macos/arm64", "darwin/arm64"),
            ("windows/amd64", "windows/amd64"),
        ];
        for (spec, want) in cases {
            assert_eq!(p(spec).to_string(), want, "{spec}");
        }
        assert_eq!(p("linux").to_string(), format!("linux/{host_arch}"));
        let w = p("windows(10.0.17763+win32k)/amd64");
        assert_eq!(
            (w.os.as_str(), w.os_version.as_str()),
            ("windows", "10.0.17763")
        );
        assert_eq!(w.os_features, ["win32k"]);
    }

    #[test]
    fn bad_specifiers_say_why() {
        let cases = [
            ("", "OS \"\" may only hold"),
            ("linux/*", "wildcards are not supported"),
            ("linux/amd64/v1/x", "too many '/'-separated parts"),
            ("linux/", "component \"\" may only hold"),
            ("linux/am d64", "component \"am d64\""),
            ("toaster", "unknown operating system or architecture"),
            ("windows(10", "must end with ')'"),
        ];
        for (spec, want) in cases {
            let err = Platform::parse(spec).unwrap_err().to_string();
            assert!(err.contains(want), "{spec:?}: {err}");
            assert!(err.starts_with("invalid platform"), "{err}");
        }
    }

    #[test]
    fn only_matches_compatible_platforms_in_preference_order() {
        // (matcher platform, candidate, expected rank)
        let cases: &[(&str, &str, Option<usize>)] = &[
            ("linux/amd64", "linux/amd64", Some(0)),
            ("linux/amd64", "linux/x86_64", Some(0)),
            ("linux/amd64", "linux/amd64/v1", Some(0)),
            ("linux/amd64", "linux/386", Some(1)),
            ("linux/amd64", "linux/amd64/v2", None),
            ("linux/amd64", "linux/arm64", None),
            ("linux/amd64", "windows/amd64", None),
            ("linux/amd64/v3", "linux/amd64/v2", Some(1)),
            ("linux/amd64/v3", "linux/amd64", Some(2)),
            ("linux/amd64/v3", "linux/386", Some(3)),
            ("linux/arm64/v8", "linux/arm64", Some(0)),
            ("linux/arm64/v8", "linux/arm64/v8", Some(0)),
            ("linux/arm64", "linux/arm/v8", Some(1)),
            ("linux/arm64", "linux/arm/v7", Some(2)),
            ("linux/arm64", "linux/arm", Some(2)),
            ("linux/arm64", "linux/arm/v5", Some(4)),
            ("linux/arm64", "linux/amd64", None),
            ("linux/arm/v7", "linux/arm/v6", Some(1)),
            ("linux/arm/v7", "linux/arm/v8", None),
            ("linux/arm/v6", "linux/arm/v7", None),
            ("linux/arm64/v8.2", "linux/arm64/v8.1", Some(1)),
            ("linux/arm64/v8.2", "linux/arm64", Some(2)),
            ("linux/arm64/v9", "linux/arm64/v8.5", Some(1)),
            ("linux/arm64/v9", "linux/arm64/v8", Some(6)),
            ("linux/arm64/v9", "linux/arm/v9", Some(7)),
            ("linux/arm64/v9", "linux/arm/v7", Some(9)),
        ];
        for &(m, cand, want) in cases {
            let matcher = Matcher::only(&p(m));
            assert_eq!(matcher.rank(&p(cand)), want, "{m} vs {cand}");
        }
    }

    #[test]
    fn strict_and_all() {
        let strict = Matcher::strict(&p("linux/amd64"));
        assert!(strict.matches(&p("linux/x86_64")));
        assert!(!strict.matches(&p("linux/386")));
        let all = Matcher::all();
        assert!(all.matches(&Platform::new("plan9", "mips", "")));
        assert!(!all.less(&p("linux/amd64"), &p("linux/arm64")));
        assert_eq!(all.to_string(), "all");
        assert_eq!(strict.to_string(), "linux/amd64");
    }

    #[test]
    fn os_features_and_windows_builds() {
        let mut host = p("windows(10.0.17763)/amd64");
        host.os_features = vec!["win32k".into()];
        let m = Matcher::strict(&host);
        let mut img = p("windows(10.0.17763.1234)/amd64");
        assert!(m.matches(&img), "same build, any revision");
        img.os_features = vec!["win32k".into()];
        assert!(m.matches(&img), "offered feature");
        img.os_features = vec!["other".into()];
        assert!(!m.matches(&img), "feature the host lacks");
        assert!(!m.matches(&p("windows(10.0.20348)/amd64")), "another build");
    }

    #[test]
    fn index_entries_sort_by_preference() {
        let d = |platform: Option<&str>, tag: &str| Descriptor {
            platform: platform.map(p),
            annotations: [("t".to_owned(), tag.to_owned())].into(),
            ..Descriptor::new("x", crate::Digest::of(tag.as_bytes()), 1)
        };
        let mut descs = vec![
            d(None, "attestation"),
            d(Some("linux/arm/v7"), "armv7"),
            d(Some("linux/386"), "386"),
            d(Some("linux/amd64"), "amd64"),
            d(Some("linux/arm/v6"), "armv6"),
        ];
        Matcher::only(&p("linux/amd64")).sort_descriptors(&mut descs);
        let order: Vec<&str> = descs.iter().map(|d| d.annotations["t"].as_str()).collect();
        assert_eq!(order, ["amd64", "386", "armv7", "armv6", "attestation"]);
    }

    #[test]
    fn serde_uses_oci_field_names() {
        let json = r#"{"architecture":"arm64","os":"linux","variant":"v8","os.version":"1","os.features":["a"]}"#;
        let pl: Platform = serde_json::from_str(json).unwrap();
        assert_eq!(pl.variant, "v8");
        assert_eq!(pl.os_version, "1");
        let back = serde_json::to_string(&Platform::new("linux", "amd64", "")).unwrap();
        assert_eq!(back, r#"{"architecture":"amd64","os":"linux"}"#);
    }
}
