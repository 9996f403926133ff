//! Content digests: `algorithm:hex`, as in the OCI image spec.
//!
//! A [`Digest`] is the address of a blob. The OCI grammar allows any
//! registered algorithm; like containerd (through go-digest), berth accepts the
//! two that the image spec registers for content addressing, `sha256` (the
//! canonical one) and `sha512`, with their encodings in lowercase hex of the
//! exact length. Everything else is rejected with a message that says what is
//! wrong, since digests usually arrive from a client or a registry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::errdefs::{Category, ErrorCategory};

/// A digest or algorithm name that does not parse (invalid argument): the
/// message names the input and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DigestError(String);

impl DigestError {
    /// What is wrong, in words (the same as `Display`).
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl ErrorCategory for DigestError {
    fn category(&self) -> Category {
        Category::InvalidArgument
    }
}

type Result<T, E = DigestError> = std::result::Result<T, E>;

/// A hash algorithm that content can be addressed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the canonical algorithm: 64 hex characters.
    Sha256,
    /// SHA-512: 128 hex characters.
    Sha512,
}

impl Algorithm {
    /// The canonical algorithm, used when nothing else is asked for.
    pub const CANONICAL: Algorithm = Algorithm::Sha256;

    /// Every supported algorithm, canonical first.
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    /// The algorithm's name in a digest (`sha256`), also its blob directory.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The length of the hex encoding of this algorithm's digests.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn digester(self) -> Digester {
        match self {
            Algorithm::Sha256 => Digester::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Digester::Sha512(sha2::Sha512::new()),
        }
    }

    /// The digest of `data` under this algorithm.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut d = self.digester();
        d.update(data);
        d.digest()
    }

    /// Checks that `hex` is a valid encoding for this algorithm.
    fn validate_hex(self, hex: &str) -> std::result::Result<(), String> {
        if hex.len() != self.hex_len() {
            return Err(format!(
                "{} needs {} hex characters, got {}",
                self.as_str(),
                self.hex_len(),
                hex.len()
            ));
        }
        if let Some((i, c)) = hex
            .char_indices()
            .find(|&(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
        {
            let what = if c.is_ascii_uppercase() {
                "uppercase hex is not allowed"
            } else {
                "not a lowercase hex digit"
            };
            return Err(format!("character {c:?} at {i} of the hex part: {what}"));
        }
        Ok(())
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError(format!(
                "unsupported digest algorithm {other:?} (supported: sha256, sha512)"
            ))),
        }
    }
}

/// A validated content digest such as `sha256:e3b0c442...`.
///
/// Holds the text form, so [`Digest::as_str`] and `Display` cost nothing.
/// Ordering is by that text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses and validates `algorithm:hex`; a [`DigestError`] says what
    /// is wrong.
    pub fn parse(s: &str) -> Result<Digest> {
        let invalid = |why: String| DigestError(format!("invalid digest {s:?}: {why}"));
        if s.is_empty() {
            return Err(invalid("empty digest".into()));
        }
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(invalid(
                "missing the algorithm prefix, want e.g. sha256:<64 hex characters>".into(),
            ));
        };
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "" => return Err(invalid("empty algorithm".into())),
            other => {
                return Err(invalid(format!(
                    "unsupported algorithm {other:?} (supported: sha256, sha512)"
                )));
            }
        };
        algorithm.validate_hex(hex).map_err(invalid)?;
        Ok(Digest {
            text: s.to_owned(),
            algorithm,
        })
    }

    /// Builds a digest from an algorithm and its hex encoding, validating it.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Digest> {
        algorithm
            .validate_hex(hex)
            .map_err(|why| DigestError(format!("invalid digest {algorithm}:{hex:?}: {why}")))?;
        Ok(Digest {
            text: format!("{algorithm}:{hex}"),
            algorithm,
        })
    }

    /// The canonical (sha256) digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Algorithm::CANONICAL.digest(data)
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// The whole digest as text (`sha256:...`).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;

    fn try_from(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(s: String) -> Result<Self> {
        // Validate on the borrowed text, then keep the allocation.
        let algorithm = Digest::parse(&s)?.algorithm;
        Ok(Digest { text: s, algorithm })
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl Serialize for Digest {
    /// The text form, `sha256:...`.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Digest {
    /// A string, validated as by [`Digest::parse`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        d.deserialize_str(DigestVisitor)
    }
}

struct DigestVisitor;

impl serde::de::Visitor<'_> for DigestVisitor {
    type Value = Digest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a digest such as sha256:<64 hex characters>")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Digest, E> {
        Digest::parse(v).map_err(E::custom)
    }
}

/// A streaming hasher that yields a [`Digest`].
#[derive(Clone)]
pub enum Digester {
    /// A running SHA-256.
    Sha256(sha2::Sha256),
    /// A running SHA-512.
    Sha512(sha2::Sha512),
}

impl Digester {
    /// Feeds `data` into the hash.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far; the hasher keeps running.
    pub fn digest(&self) -> Digest {
        let (algorithm, text) = match self {
            Digester::Sha256(h) => (Algorithm::Sha256, encode_hex(&h.clone().finalize())),
            Digester::Sha512(h) => (Algorithm::Sha512, encode_hex(&h.clone().finalize())),
        };
        Digest {
            text: format!("{algorithm}:{text}"),
            algorithm,
        }
    }

    /// The algorithm being computed.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digester::Sha256(_) => Algorithm::Sha256,
            Digester::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Forgets everything fed so far.
    pub fn reset(&mut self) {
        *self = self.algorithm().digester();
    }
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Digester").field(&self.algorithm()).finish()
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_well_known() {
        assert_eq!(Digest::of(b"").as_str(), EMPTY_SHA256);
        let d = Algorithm::Sha512.digest(b"");
        assert!(
            d.hex().starts_with("cf83e1357eefb8bdf1542850d66d8007"),
            "{d}"
        );
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn parse_round_trips() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(d.hex(), &EMPTY_SHA256[7..]);
        assert_eq!(Digest::from_hex(Algorithm::Sha256, d.hex()).unwrap(), d);
        let s512 = Algorithm::Sha512.digest(b"x").to_string();
        assert_eq!(Digest::try_from(s512.clone()).unwrap().as_str(), s512);
    }

    #[test]
    fn malformed_digests_say_what_is_wrong() {
        // Right length, but a path: never becomes one.
        let traversal = format!("sha256:{}x", "../".repeat(21));
        let cases = [
            ("", "empty digest"),
            ("e3b0c442", "missing the algorithm prefix"),
            (":abcd", "empty algorithm"),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e",
                "unsupported algorithm \"md5\"",
            ),
            ("sha256:abc", "sha256 needs 64 hex characters, got 3"),
            ("sha512:abc", "sha512 needs 128 hex characters, got 3"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "uppercase hex is not allowed",
            ),
            (
                "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "not a lowercase hex digit",
            ),
            (&traversal, "character '.' at 0 of the hex part"),
        ];
        for (input, want) in cases {
            let err = Digest::parse(input).unwrap_err();
            assert_eq!(err.category(), Category::InvalidArgument, "{input}");
            let msg = err.to_string();
            assert!(msg.contains(want), "{input}: {msg}");
            assert!(msg.starts_with("invalid digest "), "{msg}");
        }
    }

    #[test]
    fn digester_keeps_running_after_digest() {
        let mut d = Algorithm::Sha256.digester();
        d.update(b"hello ");
        let _ = d.digest();
        d.update(b"world");
        assert_eq!(d.digest(), Digest::of(b"hello world"));
        d.reset();
        assert_eq!(d.digest().as_str(), EMPTY_SHA256);
    }

    #[test]
    fn serde_is_the_text_form() {
        let d = Digest::of(b"");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let err = serde_json::from_str::<Digest>("\"sha256:abc\"").unwrap_err();
        assert!(err.to_string().contains("needs 64 hex characters"), "{err}");
    }

    #[test]
    fn algorithm_names_parse() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
        }
        assert!("blake3".parse::<Algorithm>().is_err());
    }
}
