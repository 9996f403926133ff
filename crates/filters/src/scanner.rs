//! The tokenizer for the filter language.
//!
//! The scanner is a cursor over the input (`Copy`, so the parser peeks by
//! copying it). Whitespace before a token is skipped. What a run of ordinary
//! characters becomes depends on where the parser is: after an operator it is
//! a [`Kind::Value`] (almost anything but `,` and whitespace), elsewhere a
//! [`Kind::Field`] (`[A-Za-z0-9_]+`). Quoted strings are decoded while they
//! are scanned, so an escape error points at the escape itself.

use std::fmt;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// End of the input.
    Eof,
    /// `,` between selectors.
    Comma,
    /// `.` between the components of a field path.
    Dot,
    /// A run of `=`, `!` and `~`; the parser decides which runs are operators.
    Operator(&'a str),
    /// A bare field path component.
    Field(&'a str),
    /// A bare value (only scanned in value position).
    Value(&'a str),
    /// A quoted string: the quote character, the raw text and the decoded text.
    Quoted {
        /// `"`, `/` or `|`.
        quote: char,
        /// The text as written, quotes included.
        raw: &'a str,
        /// The text with quotes removed and escapes decoded.
        value: String,
    },
    /// Any other character.
    Other(char),
}

/// A token and the byte offset at which it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    /// Byte offset of the token's first character.
    pub(crate) pos: usize,
    /// What the token is.
    pub(crate) kind: Kind<'a>,
}

impl fmt::Display for Token<'_> {
    /// Describes the token for "found ..." in error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Eof => f.write_str("end of input"),
            Kind::Comma => f.write_str("\",\""),
            Kind::Dot => f.write_str("\".\""),
            Kind::Operator(s) | Kind::Field(s) | Kind::Value(s) => write!(f, "{s:?}"),
            Kind::Quoted { raw, .. } => write!(f, "{raw:?}"),
            Kind::Other(c) => write!(f, "{:?}", c.to_string()),
        }
    }
}

/// A malformed token: where, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    /// Byte offset of the problem.
    pub(crate) pos: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// Which tokens a run of plain characters may form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Field path position: plain runs are `[A-Za-z0-9_]+`.
    Field,
    /// Value position (right after an operator): plain runs are values.
    Value,
}

/// A cursor over the filter text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanner<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// Starts scanning `input` from its beginning.
    pub(crate) fn new(input: &'a str) -> Self {
        Self { input, pos: 0 }
    }

    /// Returns the next token without consuming it.
    pub(crate) fn peek(&self, mode: Mode) -> Result<Token<'a>, LexError> {
        let mut copy = *self;
        copy.scan(mode)
    }

    /// The position and character where the next token starts, if any.
    pub(crate) fn peek_char(&self) -> Option<(usize, char)> {
        let mut copy = *self;
        copy.skip_whitespace();
        copy.current().map(|c| (copy.pos, c))
    }

    /// Consumes and returns the next token.
    pub(crate) fn scan(&mut self, mode: Mode) -> Result<Token<'a>, LexError> {
        self.skip_whitespace();
        let pos = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Token {
                pos,
                kind: Kind::Eof,
            });
        };
        let kind = match c {
            '"' | '/' | '|' => self.quoted(pos, c)?,
            ',' => Kind::Comma,
            '.' => Kind::Dot,
            '\0' => {
                return Err(LexError {
                    pos,
                    message: "unexpected null character".to_owned(),
                });
            }
            c if is_operator_char(c) => {
                self.eat_while(is_operator_char);
                Kind::Operator(&self.input[pos..self.pos])
            }
            c if mode == Mode::Value && is_value_char(c) => {
                self.eat_while(is_value_char);
                Kind::Value(&self.input[pos..self.pos])
            }
            c if mode == Mode::Field && is_field_char(c) => {
                self.eat_while(is_field_char);
                Kind::Field(&self.input[pos..self.pos])
            }
            c => Kind::Other(c),
        };
        Ok(Token { pos, kind })
    }

    fn current(&self) -> Option<char> {
        self.input
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.current()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, pred: impl Fn(char) -> bool) {
        while let Some(c) = self.current() {
            if !pred(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn skip_whitespace(&mut self) {
        self.eat_while(char::is_whitespace);
    }

    /// Scans a quoted string whose opening `quote` is at `start` and has been
    /// consumed, decoding Go-style escapes.
    ///
    /// Inside `/.../` and `|...|` (regular expressions), a backslash before a
    /// character that has no Go escape meaning is kept as written, so `\d` and
    /// `\.` reach the regex compiler; containerd rejects those.
    fn quoted(&mut self, start: usize, quote: char) -> Result<Kind<'a>, LexError> {
        let unterminated = || LexError {
            pos: start,
            message: format!("quoted string starting with {quote:?} is not terminated"),
        };
        let mut bytes = Vec::new();
        loop {
            let at = self.pos;
            let c = match self.bump() {
                None | Some('\n') => return Err(unterminated()),
                Some(c) => c,
            };
            if c == quote {
                break;
            }
            if c != '\\' {
                push_char(&mut bytes, c);
                continue;
            }
            let Some(e) = self.bump() else {
                return Err(unterminated());
            };
            match e {
                'a' => bytes.push(0x07),
                'b' => bytes.push(0x08),
                'f' => bytes.push(0x0c),
                'n' => bytes.push(b'\n'),
                'r' => bytes.push(b'\r'),
                't' => bytes.push(b'\t'),
                'v' => bytes.push(0x0b),
                '\\' => bytes.push(b'\\'),
                e if e == quote => push_char(&mut bytes, e),
                '0'..='7' => {
                    let v = self.digits(at, 8, 2, u32::from(e) - u32::from('0'))?;
                    let byte = u8::try_from(v).map_err(|_| LexError {
                        pos: at,
                        message: format!(
                            "octal escape \"{}\" is above \\377",
                            &self.input[at..self.pos]
                        ),
                    })?;
                    bytes.push(byte);
                }
                'x' => {
                    let v = self.digits(at, 16, 2, 0)?;
                    // Two hex digits always fit a byte.
                    bytes.push(u8::try_from(v).unwrap_or(u8::MAX));
                }
                'u' | 'U' => {
                    let n = if e == 'u' { 4 } else { 8 };
                    let v = self.digits(at, 16, n, 0)?;
                    let c = char::from_u32(v).ok_or_else(|| LexError {
                        pos: at,
                        message: format!(
                            "escape \"{}\" is not a valid Unicode code point",
                            &self.input[at..self.pos]
                        ),
                    })?;
                    push_char(&mut bytes, c);
                }
                e if quote != '"' => {
                    bytes.push(b'\\');
                    push_char(&mut bytes, e);
                }
                e => {
                    return Err(LexError {
                        pos: at,
                        message: format!("illegal escape sequence \"\\{e}\""),
                    });
                }
            }
        }
        let value = String::from_utf8(bytes).map_err(|_| LexError {
            pos: start,
            message: "quoted string decodes to invalid UTF-8".to_owned(),
        })?;
        Ok(Kind::Quoted {
            quote,
            raw: &self.input[start..self.pos],
            value,
        })
    }

    /// Reads `n` digits in `radix` after an escape that starts at `at`,
    /// continuing from `acc`.
    fn digits(&mut self, at: usize, radix: u32, n: usize, acc: u32) -> Result<u32, LexError> {
        let mut acc = acc;
        for _ in 0..n {
            let digit = self.current().and_then(|c| c.to_digit(radix));
            let Some(d) = digit else {
                let end = self.current().map_or(self.pos, |c| self.pos + c.len_utf8());
                return Err(LexError {
                    pos: at,
                    message: format!(
                        "illegal numeric escape sequence \"{}\"",
                        &self.input[at..end]
                    ),
                });
            };
            self.pos += 1;
            acc = acc * radix + d;
        }
        Ok(acc)
    }
}

fn push_char(bytes: &mut Vec<u8>, c: char) {
    let mut buf = [0; 4];
    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Characters of a bare field path component.
pub(crate) fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters that form operators.
pub(crate) fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '~')
}

/// Characters of a bare value.
pub(crate) fn is_value_char(c: char) -> bool {
    c != ',' && !c.is_whitespace() && !c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans all of `input`, switching to value mode after each operator as
    /// the parser does; stops at the first error.
    fn tokens(input: &str) -> Vec<Result<(usize, Kind<'_>), LexError>> {
        let mut s = Scanner::new(input);
        let mut mode = Mode::Field;
        let mut out = Vec::new();
        loop {
            match s.scan(mode) {
                Ok(t) => {
                    let eof = t.kind == Kind::Eof;
                    mode = match t.kind {
                        Kind::Operator(_) => Mode::Value,
                        _ => Mode::Field,
                    };
                    out.push(Ok((t.pos, t.kind)));
                    if eof {
                        return out;
                    }
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    fn quoted(quote: char, raw: &str, value: &str) -> Kind<'static> {
        Kind::Quoted {
            quote,
            raw: Box::leak(raw.to_owned().into_boxed_str()),
            value: value.to_owned(),
        }
    }

    fn err(pos: usize, message: &str) -> Result<(usize, Kind<'static>), LexError> {
        Err(LexError {
            pos,
            message: message.to_owned(),
        })
    }

    #[test]
    fn field_alone() {
        assert_eq!(
            tokens("name"),
            vec![Ok((0, Kind::Field("name"))), Ok((4, Kind::Eof))]
        );
    }

    #[test]
    fn selectors_with_operators() {
        assert_eq!(
            tokens("name==value,foo!=bar"),
            vec![
                Ok((0, Kind::Field("name"))),
                Ok((4, Kind::Operator("=="))),
                Ok((6, Kind::Value("value"))),
                Ok((11, Kind::Comma)),
                Ok((12, Kind::Field("foo"))),
                Ok((15, Kind::Operator("!="))),
                Ok((17, Kind::Value("bar"))),
                Ok((20, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn field_paths() {
        assert_eq!(
            tokens("labels.foo=value,other.bar~=match"),
            vec![
                Ok((0, Kind::Field("labels"))),
                Ok((6, Kind::Dot)),
                Ok((7, Kind::Field("foo"))),
                Ok((10, Kind::Operator("="))),
                Ok((11, Kind::Value("value"))),
                Ok((16, Kind::Comma)),
                Ok((17, Kind::Field("other"))),
                Ok((22, Kind::Dot)),
                Ok((23, Kind::Field("bar"))),
                Ok((26, Kind::Operator("~="))),
                Ok((28, Kind::Value("match"))),
                Ok((33, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn bare_regexp_values_keep_backslashes() {
        assert_eq!(
            tokens(r"name~=[abc]\+,foo=test"),
            vec![
                Ok((0, Kind::Field("name"))),
                Ok((4, Kind::Operator("~="))),
                Ok((6, Kind::Value(r"[abc]\+"))),
                Ok((13, Kind::Comma)),
                Ok((14, Kind::Field("foo"))),
                Ok((17, Kind::Operator("="))),
                Ok((18, Kind::Value("test"))),
                Ok((22, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn slash_quoted_regexp() {
        assert_eq!(
            tokens("name~=/[abc]{0,2}/,foo=test"),
            vec![
                Ok((0, Kind::Field("name"))),
                Ok((4, Kind::Operator("~="))),
                Ok((6, quoted('/', "/[abc]{0,2}/", "[abc]{0,2}"))),
                Ok((18, Kind::Comma)),
                Ok((19, Kind::Field("foo"))),
                Ok((22, Kind::Operator("="))),
                Ok((23, Kind::Value("test"))),
                Ok((27, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn multibyte_values_and_pipe_quotes() {
        assert_eq!(
            tokens("name~=牛,labels.moo=true"),
            vec![
                Ok((0, Kind::Field("name"))),
                Ok((4, Kind::Operator("~="))),
                Ok((6, Kind::Value("牛"))),
                Ok((9, Kind::Comma)),
                Ok((10, Kind::Field("labels"))),
                Ok((16, Kind::Dot)),
                Ok((17, Kind::Field("moo"))),
                Ok((20, Kind::Operator("="))),
                Ok((21, Kind::Value("true"))),
                Ok((25, Kind::Eof)),
            ]
        );
        assert_eq!(
            tokens("name~=|牛|,x"),
            vec![
                Ok((0, Kind::Field("name"))),
                Ok((4, Kind::Operator("~="))),
                Ok((6, quoted('|', "|牛|", "牛"))),
                Ok((11, Kind::Comma)),
                Ok((12, Kind::Field("x"))),
                Ok((13, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(
            tokens(r#"name~="asdf\n\tfooo""#),
            vec![
                Ok((0, Kind::Field("name"))),
                Ok((4, Kind::Operator("~="))),
                Ok((6, quoted('"', r#""asdf\n\tfooo""#, "asdf\n\tfooo"))),
                Ok((20, Kind::Eof)),
            ]
        );
        let all = r#""\a\b\f\n\r\t\v\\\"\101\x42\u00e9\U0001F600\xc3\xa9""#;
        assert_eq!(
            tokens(all)[0],
            Ok((0, quoted('"', all, "\x07\x08\x0c\n\r\t\x0b\\\"ABé😀é")))
        );
    }

    #[test]
    fn null_is_illegal() {
        assert_eq!(
            tokens("foo\x00bar"),
            vec![
                Ok((0, Kind::Field("foo"))),
                err(3, "unexpected null character")
            ]
        );
    }

    #[test]
    fn spaces_are_skipped() {
        assert_eq!(
            tokens("foo = bar    "),
            vec![
                Ok((0, Kind::Field("foo"))),
                Ok((4, Kind::Operator("="))),
                Ok((6, Kind::Value("bar"))),
                Ok((13, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn punctuated_values() {
        assert_eq!(
            tokens("compound.labels==punctuated_value.foo-bar"),
            vec![
                Ok((0, Kind::Field("compound"))),
                Ok((8, Kind::Dot)),
                Ok((9, Kind::Field("labels"))),
                Ok((15, Kind::Operator("=="))),
                Ok((17, Kind::Value("punctuated_value.foo-bar"))),
                Ok((41, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn partial_and_missing_values() {
        assert_eq!(
            tokens("interrupted="),
            vec![
                Ok((0, Kind::Field("interrupted"))),
                Ok((11, Kind::Operator("="))),
                Ok((12, Kind::Eof)),
            ]
        );
        assert_eq!(
            tokens("input==,id!=ff"),
            vec![
                Ok((0, Kind::Field("input"))),
                Ok((5, Kind::Operator("=="))),
                Ok((7, Kind::Comma)),
                Ok((8, Kind::Field("id"))),
                Ok((10, Kind::Operator("!="))),
                Ok((12, Kind::Value("ff"))),
                Ok((14, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn second_word_after_value_is_a_field() {
        assert_eq!(
            tokens("doublevalue=value value"),
            vec![
                Ok((0, Kind::Field("doublevalue"))),
                Ok((11, Kind::Operator("="))),
                Ok((12, Kind::Value("value"))),
                Ok((18, Kind::Field("value"))),
                Ok((23, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn leading_quoted_field() {
        assert_eq!(
            tokens(r#""leading quote".postquote==value"#),
            vec![
                Ok((0, quoted('"', r#""leading quote""#, "leading quote"))),
                Ok((15, Kind::Dot)),
                Ok((16, Kind::Field("postquote"))),
                Ok((25, Kind::Operator("=="))),
                Ok((27, Kind::Value("value"))),
                Ok((32, Kind::Eof)),
            ]
        );
    }

    #[test]
    fn quoted_regexp_escaped_delimiter() {
        assert_eq!(
            tokens(r"input~=/foo\/bar/,id!=ff")[2],
            Ok((7, quoted('/', r"/foo\/bar/", "foo/bar")))
        );
        assert_eq!(
            tokens("input~=|foo/bar|,id!=ff")[2],
            Ok((7, quoted('|', "|foo/bar|", "foo/bar")))
        );
    }

    #[test]
    fn regexp_quotes_keep_unknown_escapes() {
        assert_eq!(
            tokens(r"x~=/\d+\.\w/")[2],
            Ok((3, quoted('/', r"/\d+\.\w/", r"\d+\.\w")))
        );
    }

    #[test]
    fn unterminated_quotes() {
        assert_eq!(
            tokens("labels.containerd.io/key==value")[5],
            err(20, "quoted string starting with '/' is not terminated")
        );
        assert_eq!(
            tokens("labels.\"containerd.io\nkey\"==value")[2],
            err(7, "quoted string starting with '\"' is not terminated")
        );
        assert_eq!(
            tokens(r#"x=="abc\"#)[2],
            err(3, "quoted string starting with '\"' is not terminated")
        );
    }

    #[test]
    fn illegal_escapes() {
        assert_eq!(
            tokens(r#"labels."\g""#)[2],
            err(8, r#"illegal escape sequence "\g""#)
        );
        assert_eq!(
            tokens(r#"labels."\xaz""#)[2],
            err(8, r#"illegal numeric escape sequence "\xaz""#)
        );
        assert_eq!(
            tokens(r#""\400""#)[0],
            err(1, r#"octal escape "\400" is above \377"#)
        );
        assert_eq!(
            tokens(r#""\uD800""#)[0],
            err(1, r#"escape "\uD800" is not a valid Unicode code point"#)
        );
        assert_eq!(
            tokens(r#""\xff""#)[0],
            err(0, "quoted string decodes to invalid UTF-8")
        );
        assert_eq!(
            tokens(r#""\'""#)[0],
            err(1, r#"illegal escape sequence "\'""#)
        );
    }

    #[test]
    fn other_characters() {
        assert_eq!(
            tokens("a-b")[1],
            Ok((1, Kind::Other('-'))),
            "a dash is not part of a bare field"
        );
    }
}
