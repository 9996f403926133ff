//! containerd's filter language: select objects by field values.
//!
//! List and subscribe calls in containerd's API take filters such as
//! `name==foo`, `labels."com.example.key"` or `topic~=/^\/tasks\//`. This
//! crate parses them ([`parse`], [`parse_all`]) into a [`Filter`] and matches
//! it against any object that implements [`Adaptor`], the trait that maps a
//! field path to a value. [`Fields`] is a ready-made adaptor for records made
//! of a few named strings and a `labels` map.
//!
//! # Syntax
//!
//! A filter is one or more *selectors* separated by `,`; all must match (AND).
//! A list of filters given to [`parse_all`] matches when any one does (OR).
//!
//! ```text
//! <fieldpath>                 the field is present
//! <fieldpath>==<value>        the field is present and equal to value
//! <fieldpath>!=<value>        the field is not equal to value (absent = "")
//! <fieldpath>~=<regex>        the field matches the regex anywhere (absent = "")
//! ```
//!
//! - A field path is components joined by `.`. A component is
//!   `[A-Za-z0-9_]+`, or a double-quoted string for anything else:
//!   `labels."com.example/key"`.
//! - A value is bare (anything up to `,` or whitespace, not starting with
//!   `.`, `"`, `/`, `|`, `=`, `!` or `~`), or double-quoted. After `~=` it may
//!   also be quoted with `/.../` or `|...|`.
//! - Quoted strings use Go escapes (`\n`, `\t`, `\\`, `\"`, `\x41`, `\101`,
//!   `\u00e9`, `\U0001F600`, and the closing quote character). Inside
//!   `/.../` and `|...|` other backslash pairs are kept for the regex (`\d`).
//! - Whitespace between tokens is ignored. The empty filter matches
//!   everything.
//! - Regular expressions use the `regex` crate, whose syntax follows RE2 as
//!   Go's `regexp` does. They are compiled once, at parse time, so a bad
//!   regex is a parse error rather than a filter that matches nothing.
//!
//! Errors carry the byte position and what was expected, e.g.
//! `parse error at 10: expected a field name or a quoted string, found end of input`.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use berth_filters::{Fields, parse_all};
//!
//! let filter = parse_all(&[r#"labels."com.example.tier"==web"#, "name~=^redis"]).unwrap();
//! let labels = HashMap::from([("com.example.tier".to_owned(), "web".to_owned())]);
//! assert!(filter.matches(&Fields::new().with("name", "nginx").with_labels(&labels)));
//! assert!(filter.matches(&Fields::new().with("name", "redis:7")));
//! assert!(!filter.matches(&Fields::new().with("name", "postgres")));
//! ```

use std::borrow::Cow;
use std::fmt;

mod error;
mod fields;
mod filter;
mod parser;
mod scanner;

pub use error::{Error, Result};
pub use fields::{Fields, StringMap};
pub use filter::{Filter, Operator, Selector};

/// Maps field paths to the values of one object, so a [`Filter`] can look
/// at it.
///
/// The field path is the selector's components with quotes removed:
/// `labels."a.b"` arrives as `["labels", "a.b"]` and `labels.a.b` as
/// `["labels", "a", "b"]`. Adaptors conventionally join everything after a
/// map's name with `.` so both spell the same label, and follow protobuf
/// field names (`target.digest`, `runtime.name`).
pub trait Adaptor {
    /// Returns the value at `fieldpath`, or `None` if the object has no such
    /// field (which `==` and presence selectors treat as no match).
    fn field(&self, fieldpath: &[&str]) -> Option<Cow<'_, str>>;
}

impl<T: Adaptor + ?Sized> Adaptor for &T {
    fn field(&self, fieldpath: &[&str]) -> Option<Cow<'_, str>> {
        (**self).field(fieldpath)
    }
}

/// An [`Adaptor`] made from a closure, for one-off adaptors and tests.
///
/// ```
/// use berth_filters::{AdaptorFn, parse};
///
/// let adaptor = AdaptorFn(|path: &[&str]| match path {
///     ["id"] => Some("c1".to_owned()),
///     _ => None,
/// });
/// assert!(parse("id==c1").unwrap().matches(&adaptor));
/// ```
#[derive(Clone, Copy)]
pub struct AdaptorFn<F>(pub F);

impl<F: Fn(&[&str]) -> Option<String>> Adaptor for AdaptorFn<F> {
    fn field(&self, fieldpath: &[&str]) -> Option<Cow<'_, str>> {
        (self.0)(fieldpath).map(Cow::Owned)
    }
}

impl<F> fmt::Debug for AdaptorFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdaptorFn(..)")
    }
}

/// Parses one filter: selectors joined by `,`, all of which must match.
///
/// The empty string gives a filter that matches everything.
pub fn parse(filter: &str) -> Result<Filter> {
    parser::parse(filter)
}

/// Parses several filters into one that matches when any of them does, as
/// containerd's List and Subscribe calls do with their `filters` field.
///
/// No filters at all gives a filter that matches everything. The first
/// filter that fails to parse is the error.
pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter> {
    if filters.is_empty() {
        return Ok(Filter::always());
    }
    let mut alternatives = Vec::with_capacity(filters.len());
    for filter in filters {
        alternatives.extend(parser::parse(filter.as_ref())?.alternatives);
    }
    Ok(Filter { alternatives })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Entry {
        name: &'static str,
        other: &'static str,
        labels: HashMap<String, String>,
    }

    fn entry(name: &'static str, other: &'static str, labels: &[(&str, &str)]) -> Entry {
        Entry {
            name,
            other,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// The objects of containerd's filter tests, rebuilt here.
    fn corpus() -> Vec<Entry> {
        vec![
            entry("foo", "", &[("foo", "true")]),
            entry("bar", "", &[]),
            entry(
                "foo",
                "",
                &[("foo", "present"), ("more complex label", "present")],
            ),
            entry("bar", "", &[("bar", "true")]),
            entry(
                "fooer",
                "",
                &[("more complex label with \\ and \"", "present")],
            ),
            entry(
                "fooer",
                "",
                &[("more complex label with \\ and \".post", "present")],
            ),
            entry("baz", "too complex, yo", &[]),
            entry("bazo", "abc", &[]),
            entry("compound", "", &[("foo", "omg_asdf.asdf-qwer")]),
        ]
    }

    fn adaptor(e: &Entry) -> Fields<'_> {
        Fields::new()
            .with("name", e.name)
            .with("other", e.other)
            .with_labels(&e.labels)
    }

    /// Indexes of the corpus entries that `filter` matches.
    fn select(filter: &str) -> Vec<usize> {
        let filter = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        corpus()
            .iter()
            .enumerate()
            .filter(|(_, e)| filter.matches(&adaptor(e)))
            .map(|(i, _)| i)
            .collect()
    }

    fn parse_err(filter: &str) -> (usize, String) {
        match parse(filter) {
            Ok(f) => panic!("{filter:?} parsed: {f:?}"),
            Err(Error::Parse {
                position, message, ..
            }) => (position, message),
            Err(e) => panic!("{filter:?}: unexpected error {e}"),
        }
    }

    const ALL: [usize; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];

    #[test]
    fn empty_matches_everything() {
        assert_eq!(select(""), ALL);
        assert!(parse("").unwrap().matches_everything());
    }

    #[test]
    fn presence() {
        assert_eq!(select("name"), ALL);
        assert_eq!(select("labels.foo"), [0, 2, 8]);
        assert_eq!(select("labels.foo,name"), [0, 2, 8]);
        assert_eq!(select("other"), [6, 7]);
        assert_eq!(select("missing"), [0usize; 0]);
    }

    #[test]
    fn equality() {
        assert_eq!(select("labels.foo==true"), [0]);
        assert_eq!(select("labels.foo==omg_asdf.asdf-qwer"), [8]);
        assert_eq!(select("name==bar"), [1, 3]);
        assert_eq!(select("name==bar,labels.bar"), [3]);
        assert_eq!(select("name==bar,labels.bar==true"), [3]);
        assert_eq!(select("name==bar,labels.bar==wrong"), [0usize; 0]);
        assert_eq!(select(r#"other=="too complex, yo""#), [6]);
    }

    #[test]
    fn inequality_treats_absent_as_empty() {
        assert_eq!(select("name!=bar"), [0, 2, 4, 5, 6, 7, 8]);
        assert_eq!(select("labels.foo!=true"), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(select(r#"other!="""#), [6, 7]);
    }

    #[test]
    fn regular_expressions() {
        assert_eq!(select("other~=[abc]+,name!=foo"), [6, 7]);
        assert_eq!(select("other~=/[abc]+/,name!=foo"), [6, 7]);
        assert_eq!(select("other~=/[abc]{1,2}/,name!=foo"), [6, 7]);
        assert_eq!(select("other~=|[abc]{1,2}|,name!=foo"), [6, 7]);
        assert_eq!(select(r#"other~="^abc$""#), [7]);
        assert_eq!(select(r"name~=/^ba\w$/"), [1, 3, 6]);
        assert_eq!(select("name~=(?i)^BAZ"), [6, 7]);
        // Valid, but matches nothing.
        assert_eq!(select(r#"other~=/[abc]{0,1}"\//,name!=foo"#), [0usize; 0]);
        // An absent field is matched as the empty string.
        assert_eq!(select("other~=^$"), [0, 1, 2, 3, 4, 5, 8]);
    }

    #[test]
    fn quoted_field_paths() {
        assert_eq!(select(r#"name==foo,labels."more complex label""#), [2]);
        assert_eq!(
            select(r#"labels."more complex label with \\ and \""==present"#),
            [4]
        );
        assert_eq!(
            select(r#"labels."more complex label with \\ and \"".post==present"#),
            [5]
        );
        assert_eq!(select(r#""name"==foo"#), [0, 2]);
        assert_eq!(select(r#"labels."f\x6fo"==true"#), [0]);
    }

    #[test]
    fn whitespace_between_tokens() {
        assert_eq!(select(" name == bar , labels.bar "), [3]);
        assert_eq!(select("name==bar\t,\nlabels . bar"), [3]);
    }

    #[test]
    fn alt_quotes_are_rejected_outside_regexps() {
        assert_eq!(
            parse_err("labels.|foo|==omg_asdf.asdf-qwer"),
            (
                7,
                "|...| quoting is not allowed in field paths, use double quotes".to_owned()
            )
        );
        let hint = "/.../ quoting is only allowed after \"~=\"; double-quote values that \
                    start with '/', e.g. topic==\"/tasks/exit\"";
        assert_eq!(parse_err("topic==/tasks/exit/"), (7, hint.to_owned()));
        assert_eq!(parse_err("topic!= /tasks/exit"), (8, hint.to_owned()));
        assert_eq!(parse_err("topic==/x"), (7, hint.to_owned()));
        assert_eq!(
            parse_err("x==|a|").1,
            hint.replace('/', "|").replace("|tasks|exit", "/tasks/exit")
        );
    }

    #[test]
    fn errors_name_position_and_expectation() {
        for (input, position, message) in [
            (
                r#"labels.?"more complex label with \\ and \"".post==present"#,
                7,
                r#"expected a field name or a quoted string, found "?""#,
            ),
            (
                "name==foo,",
                10,
                "expected a field name or a quoted string, found end of input",
            ),
            (
                "labels.",
                7,
                "expected a field name or a quoted string, found end of input",
            ),
            (
                "image~=,id?=?fbaq",
                7,
                r#"expected a value or a quoted string, found ",""#,
            ),
            (
                "labels.ns/key==value",
                9,
                "quoted string starting with '/' is not terminated",
            ),
            (
                "labels.key~=/value",
                12,
                "quoted string starting with '/' is not terminated",
            ),
            (
                "name=foo",
                4,
                r#"unsupported operator "=", expected "==", "!=" or "~=""#,
            ),
            (
                "name===foo",
                4,
                r#"unsupported operator "===", expected "==", "!=" or "~=""#,
            ),
            (
                "name==",
                6,
                "expected a value or a quoted string, found end of input",
            ),
            (
                "name==foo bar",
                10,
                r#"expected "," or end of input, found "bar""#,
            ),
            (
                "name==foo,x,",
                12,
                "expected a field name or a quoted string, found end of input",
            ),
            (
                ",name",
                0,
                r#"expected a field name or a quoted string, found ",""#,
            ),
            (
                "   ",
                3,
                "expected a field name or a quoted string, found end of input",
            ),
            (
                r#"labels."a"b"#,
                10,
                "expected \".\", an operator (\"==\", \"!=\" or \"~=\"), \",\" or end of input, found \"b\"",
            ),
            ("name\0", 4, "unexpected null character"),
        ] {
            assert_eq!(
                parse_err(input),
                (position, message.to_owned()),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn unquoted_dash_hints_at_quoting() {
        let (position, message) = parse_err("labels.foo-bar==x");
        assert_eq!(position, 10);
        assert!(message.contains(r#"found "-""#), "{message}");
        assert!(message.contains(r#"labels."a-b""#), "{message}");
    }

    #[test]
    fn error_display() {
        let err = parse("name==foo,").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"parse error at 10: expected a field name or a quoted string, found end of input (in filter "name==foo,")"#
        );
        assert_eq!(err.position(), 10);
        assert_eq!(err.input(), "name==foo,");
    }

    #[test]
    fn bad_regex_is_a_parse_time_error() {
        let err = parse("name==x,other~=[abc").unwrap_err();
        assert!(matches!(err, Error::Regex { position: 15, .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("invalid regular expression at 15"),
            "{err}"
        );
        // Bounded compiled size.
        assert!(parse("x~=((a{100}){100}){100}").is_err());
    }

    #[test]
    fn parse_all_ors_filters() {
        let f = parse_all(&["name==bar", "labels.foo==true"]).unwrap();
        let matched: Vec<usize> = corpus()
            .iter()
            .enumerate()
            .filter(|(_, e)| f.matches(&adaptor(e)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(matched, [0, 1, 3]);

        let none: [String; 0] = [];
        assert!(parse_all(&none).unwrap().matches_everything());
        assert!(parse_all(&[String::new()]).unwrap().matches_everything());
        assert!(
            parse_all(&["name==x".to_owned(), String::new()])
                .unwrap()
                .matches_everything()
        );

        let err = parse_all(&["name==x", "name=="]).unwrap_err();
        assert_eq!(err.input(), "name==");
    }

    #[test]
    fn matches_through_dyn_adaptor() {
        let e = entry("foo", "", &[]);
        let a = adaptor(&e);
        let dynamic: &dyn Adaptor = &a;
        assert!(parse("name==foo").unwrap().matches(dynamic));
        assert!(parse("name==foo").unwrap().matches(&dynamic));
    }

    /// A small deterministic PRNG (xorshift64*), so the fuzz tests need no
    /// dependency and fail reproducibly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let e = entry("foo", "abc", &[("foo", "true"), ("a.b", "c")]);
        let a = adaptor(&e);
        for _ in 0..20_000 {
            let len = rng.below(40);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[0]).collect();
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(f) = parse(&text) {
                let _ = f.matches(&a);
            }
        }
    }

    #[test]
    fn random_grammar_soup_never_panics() {
        const PIECES: &[&str] = &[
            "name",
            "labels",
            ".",
            ",",
            "==",
            "!=",
            "~=",
            "=",
            "!",
            "~",
            "\"",
            "/",
            "|",
            "\\",
            "\\x4",
            "\\u00e9",
            "\\U0010ffff",
            "\\777",
            "\\n",
            "\\",
            "a",
            "0",
            "_",
            " ",
            "\t",
            "\n",
            "\0",
            "牛",
            "é",
            "[",
            "]",
            "(",
            ")",
            "*",
            "+",
            "?",
            "{",
            "}",
            "^",
            "$",
            "-",
            "\u{7f}",
            "\u{200d}",
        ];
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        let e = entry("foo", "abc", &[("foo", "true")]);
        let a = adaptor(&e);
        let mut parsed = 0;
        for _ in 0..50_000 {
            let n = rng.below(12);
            let text: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            match parse(&text) {
                Ok(f) => {
                    parsed += 1;
                    let _ = f.matches(&a);
                }
                Err(err) => assert!(err.position() <= text.len(), "{text:?}: {err}"),
            }
        }
        assert!(
            parsed > 100,
            "the soup should sometimes be valid ({parsed})"
        );
    }

    #[test]
    fn display_round_trips_random_selectors() {
        const WORDS: &[&str] = &[
            "a", "name", "_x", "0", "", "a.b", "a b", "c,d", "\"q\"", "\\", "/", "|", ".lead",
            "=eq", "!x", "~y", "\n", "\t", "é", "牛", "\u{1}", "[a-z]+", "-", "x=y",
        ];
        let mut rng = Rng(42);
        for _ in 0..5_000 {
            let fieldpath: Vec<String> = (0..=rng.below(3))
                .map(|_| WORDS[rng.below(WORDS.len())].to_owned())
                .collect();
            let operator = [
                Operator::Present,
                Operator::Equal,
                Operator::NotEqual,
                Operator::Matches,
            ][rng.below(4)];
            let value = if operator == Operator::Present {
                String::new()
            } else {
                (0..=rng.below(3))
                    .map(|_| WORDS[rng.below(WORDS.len())])
                    .collect()
            };
            let regex = match operator {
                Operator::Matches => match regex::Regex::new(&value) {
                    Ok(re) => Some(re),
                    Err(_) => continue,
                },
                _ => None,
            };
            let selector = Selector {
                fieldpath,
                operator,
                value,
                regex,
            };
            let text = selector.to_string();
            let back = parse(&text).unwrap_or_else(|e| panic!("{selector:?} as {text:?}: {e}"));
            assert_eq!(
                back.alternatives().collect::<Vec<_>>(),
                [&[selector][..]],
                "{text:?}"
            );
        }
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
