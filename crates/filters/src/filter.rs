//! Parsed filters and how they match.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use regex::Regex;

use crate::scanner::{is_field_char, is_operator_char, is_value_char};
use crate::{Adaptor, Error, Result};

/// How a selector compares the field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// No operator: the field must be present.
    Present,
    /// `==`: the field is present and equal to the value.
    Equal,
    /// `!=`: the field is not equal to the value (an absent field counts as
    /// the empty string, as in containerd).
    NotEqual,
    /// `~=`: the field matches the regular expression anywhere (an absent
    /// field counts as the empty string, as in containerd).
    Matches,
}

impl Operator {
    /// The operator as written in a filter (`""` for [`Operator::Present`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "",
            Self::Equal => "==",
            Self::NotEqual => "!=",
            Self::Matches => "~=",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `fieldpath[<operator><value>]` term of a filter.
#[derive(Debug, Clone)]
pub struct Selector {
    pub(crate) fieldpath: Vec<String>,
    pub(crate) operator: Operator,
    pub(crate) value: String,
    /// Compiled once at parse time for [`Operator::Matches`].
    pub(crate) regex: Option<Regex>,
}

/// Field paths longer than this are passed to the adaptor from a heap buffer.
const INLINE_PATH: usize = 8;

impl Selector {
    /// The field path, one decoded component per element.
    pub fn fieldpath(&self) -> &[String] {
        &self.fieldpath
    }

    /// The comparison.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The decoded value (empty for [`Operator::Present`]).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Reports whether the object seen through `adaptor` satisfies this selector.
    pub fn matches<A: Adaptor + ?Sized>(&self, adaptor: &A) -> bool {
        let found = self.lookup(adaptor);
        match self.operator {
            Operator::Present => found.is_some(),
            Operator::Equal => found.is_some_and(|v| v == self.value.as_str()),
            Operator::NotEqual => found.as_deref().unwrap_or("") != self.value,
            Operator::Matches => match &self.regex {
                Some(re) => re.is_match(found.as_deref().unwrap_or("")),
                // Only reachable for selectors built outside the parser.
                None => false,
            },
        }
    }

    /// Asks the adaptor for this selector's field without allocating for
    /// ordinary (short) paths.
    fn lookup<'a, A: Adaptor + ?Sized>(&self, adaptor: &'a A) -> Option<Cow<'a, str>> {
        if self.fieldpath.len() <= INLINE_PATH {
            let mut buf = [""; INLINE_PATH];
            for (slot, component) in buf.iter_mut().zip(&self.fieldpath) {
                *slot = component;
            }
            adaptor.field(&buf[..self.fieldpath.len()])
        } else {
            let path: Vec<&str> = self.fieldpath.iter().map(String::as_str).collect();
            adaptor.field(&path)
        }
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.fieldpath == other.fieldpath
            && self.operator == other.operator
            && self.value == other.value
    }
}

impl Eq for Selector {}

impl fmt::Display for Selector {
    /// Writes the selector in filter syntax, quoting where needed, so that
    /// parsing the output gives back an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, component) in self.fieldpath.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            if !component.is_empty() && component.chars().all(is_field_char) {
                f.write_str(component)?;
            } else {
                write_quoted(f, component)?;
            }
        }
        if self.operator == Operator::Present {
            return Ok(());
        }
        f.write_str(self.operator.as_str())?;
        if is_bare_value(&self.value) {
            f.write_str(&self.value)
        } else {
            write_quoted(f, &self.value)
        }
    }
}

/// Whether `value` reads back as the same value without quotes.
fn is_bare_value(value: &str) -> bool {
    let mut chars = value.chars();
    match chars.next() {
        None => false,
        Some(c) if matches!(c, '"' | '/' | '|' | '.') || is_operator_char(c) => false,
        Some(c) => is_value_char(c) && chars.all(is_value_char),
    }
}

/// Writes `s` as a double-quoted string with Go escapes.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// A parsed filter: any one of its alternatives must match, and an
/// alternative matches when all of its selectors do.
///
/// [`parse`](crate::parse) gives a filter with one alternative;
/// [`parse_all`](crate::parse_all) one alternative per input string. A filter
/// with an empty alternative (from `""` or from no filters at all) matches
/// everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub(crate) alternatives: Vec<Vec<Selector>>,
}

impl Filter {
    /// A filter that matches every object.
    pub fn always() -> Self {
        Self {
            alternatives: vec![Vec::new()],
        }
    }

    /// Reports whether the object seen through `adaptor` matches.
    pub fn matches<A: Adaptor + ?Sized>(&self, adaptor: &A) -> bool {
        self.alternatives
            .iter()
            .any(|all| all.iter().all(|s| s.matches(adaptor)))
    }

    /// Reports whether this filter matches every object, so callers can skip
    /// building adaptors.
    pub fn matches_everything(&self) -> bool {
        self.alternatives.iter().any(Vec::is_empty)
    }

    /// The alternatives (OR), each a list of selectors (AND).
    pub fn alternatives(&self) -> impl Iterator<Item = &[Selector]> {
        self.alternatives.iter().map(Vec::as_slice)
    }

    /// Combines two filters so that an object matches when either does.
    pub fn or(mut self, other: Filter) -> Self {
        self.alternatives.extend(other.alternatives);
        self
    }
}

impl Default for Filter {
    /// The filter that matches everything.
    fn default() -> Self {
        Self::always()
    }
}

impl FromStr for Filter {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn selector(s: &str) -> Selector {
        let filter = parse(s).unwrap();
        assert_eq!(filter.alternatives.len(), 1);
        assert_eq!(filter.alternatives[0].len(), 1, "{s}");
        filter.alternatives[0][0].clone()
    }

    #[test]
    fn operator_strings() {
        assert_eq!(Operator::Present.to_string(), "");
        assert_eq!(Operator::Equal.to_string(), "==");
        assert_eq!(Operator::NotEqual.to_string(), "!=");
        assert_eq!(Operator::Matches.to_string(), "~=");
    }

    #[test]
    fn accessors() {
        let s = selector(r#"labels."a.b"~=/^x\/y/"#);
        assert_eq!(s.fieldpath(), ["labels", "a.b"]);
        assert_eq!(s.operator(), Operator::Matches);
        assert_eq!(s.value(), "^x/y");
    }

    #[test]
    fn display_quotes_only_when_needed() {
        for (input, shown) in [
            ("name", "name"),
            ("name==foo", "name==foo"),
            (
                "labels.foo==omg_asdf.asdf-qwer",
                "labels.foo==omg_asdf.asdf-qwer",
            ),
            (r#"labels."a b"!="c,d""#, r#"labels."a b"!="c,d""#),
            (r#"labels."a.b"=="""#, r#"labels."a.b"=="""#),
            (r#"x=="/tasks/exit""#, r#"x=="/tasks/exit""#),
            (r#"x~=/a\/b\d/"#, r#"x~=a/b\d"#),
            (r#"x~="a b""#, r#"x~="a b""#),
            (r#"x=="\n\"\\""#, r#"x=="\n\"\\""#),
            (r#"x==".leading-dot""#, r#"x==".leading-dot""#),
            (r#"x=="=eq""#, r#"x=="=eq""#),
            (r#"x=="\x01""#, r#"x=="\u0001""#),
        ] {
            assert_eq!(selector(input).to_string(), shown, "{input}");
        }
    }

    #[test]
    fn filter_or_and_always() {
        let f = Filter::always();
        assert!(f.matches_everything());
        assert_eq!(Filter::default(), f);
        let name: Filter = "name==a".parse().unwrap();
        assert!(!name.matches_everything());
        let either = name.clone().or("name==b".parse().unwrap());
        assert_eq!(either.alternatives().count(), 2);
        assert!(either.or(Filter::always()).matches_everything());
    }

    #[test]
    fn long_field_paths_reach_the_adaptor() {
        let path: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        let filter = parse(&path.join(".")).unwrap();
        let adaptor =
            crate::AdaptorFn(|p: &[&str]| (p.len() == 12 && p[11] == "p11").then(String::new));
        assert!(filter.matches(&adaptor));
        let short = parse("p0.p1").unwrap();
        assert!(!short.matches(&adaptor));
    }
}
