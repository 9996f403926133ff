//! The recursive-descent parser.
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath (operator value)?
//! fieldpath := field ("." field)*
//! field     := [A-Za-z0-9_]+ | "quoted"
//! operator  := "==" | "!=" | "~="
//! value     := [^\s,]+ | "quoted" | /quoted/ | |quoted|     (/ and | only after ~=)
//! ```
//!
//! Whitespace between tokens is ignored.

use regex::RegexBuilder;

use crate::filter::{Filter, Operator, Selector};
use crate::scanner::{Kind, LexError, Mode, Scanner, Token};
use crate::{Error, Result};

/// Upper bound on the compiled size of one `~=` regular expression, so a
/// hostile filter cannot make the daemon build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parses one filter string (see [`crate::parse`]).
pub(crate) fn parse(input: &str) -> Result<Filter> {
    if input.is_empty() {
        return Ok(Filter::always());
    }
    let selectors = Parser {
        input,
        scanner: Scanner::new(input),
    }
    .selectors()?;
    Ok(Filter {
        alternatives: vec![selectors],
    })
}

struct Parser<'a> {
    input: &'a str,
    scanner: Scanner<'a>,
}

impl<'a> Parser<'a> {
    fn selectors(&mut self) -> Result<Vec<Selector>> {
        let mut selectors = vec![self.selector()?];
        loop {
            let token = self.scan(Mode::Field)?;
            match token.kind {
                Kind::Comma => selectors.push(self.selector()?),
                Kind::Eof => return Ok(selectors),
                _ => {
                    return Err(self.unexpected(&token, "\",\" or end of input"));
                }
            }
        }
    }

    fn selector(&mut self) -> Result<Selector> {
        let fieldpath = self.fieldpath()?;
        let next = self.peek(Mode::Field)?;
        let operator = match next.kind {
            Kind::Comma | Kind::Eof => {
                return Ok(Selector {
                    fieldpath,
                    operator: Operator::Present,
                    value: String::new(),
                    regex: None,
                });
            }
            Kind::Operator("==") => Operator::Equal,
            Kind::Operator("!=") => Operator::NotEqual,
            Kind::Operator("~=") => Operator::Matches,
            Kind::Operator(op) => {
                return Err(self.error(
                    next.pos,
                    format!("unsupported operator {op:?}, expected \"==\", \"!=\" or \"~=\""),
                ));
            }
            Kind::Other(c) if !c.is_whitespace() && !c.is_control() => {
                let found = next.to_string();
                return Err(self.error(
                    next.pos,
                    format!(
                        "expected \".\", an operator (\"==\", \"!=\" or \"~=\"), \",\" or end of \
                         input, found {found} (quote field names with other characters: \
                         labels.\"a-b\")"
                    ),
                ));
            }
            _ => {
                return Err(self.unexpected(
                    &next,
                    "\".\", an operator (\"==\", \"!=\" or \"~=\"), \",\" or end of input",
                ));
            }
        };
        self.scan(Mode::Field)?;

        if operator != Operator::Matches
            && let Some((pos, quote @ ('/' | '|'))) = self.scanner.peek_char()
        {
            return Err(self.error(
                pos,
                format!(
                    "{quote}...{quote} quoting is only allowed after \"~=\"; \
                         double-quote values that start with {quote:?}, e.g. topic==\"/tasks/exit\""
                ),
            ));
        }
        let token = self.scan(Mode::Value)?;
        let value = match token.kind {
            Kind::Value(s) | Kind::Field(s) => s.to_owned(),
            // `/` and `|` quotes were turned away above unless the operator is `~=`.
            Kind::Quoted { value, .. } => value,
            _ => return Err(self.unexpected(&token, "a value or a quoted string")),
        };

        let regex = if operator == Operator::Matches {
            let re = RegexBuilder::new(&value)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|source| Error::Regex {
                    input: self.input.to_owned(),
                    position: token.pos,
                    source,
                })?;
            Some(re)
        } else {
            None
        };
        Ok(Selector {
            fieldpath,
            operator,
            value,
            regex,
        })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>> {
        let mut path = vec![self.field()?];
        while self.peek(Mode::Field)?.kind == Kind::Dot {
            self.scan(Mode::Field)?;
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String> {
        let token = self.scan(Mode::Field)?;
        match token.kind {
            Kind::Field(s) => Ok(s.to_owned()),
            Kind::Quoted {
                quote: '"', value, ..
            } => Ok(value),
            Kind::Quoted { quote, .. } => Err(self.error(
                token.pos,
                format!(
                    "{quote}...{quote} quoting is not allowed in field paths, use double quotes"
                ),
            )),
            _ => Err(self.unexpected(&token, "a field name or a quoted string")),
        }
    }

    fn scan(&mut self, mode: Mode) -> Result<Token<'a>> {
        self.scanner.scan(mode).map_err(|e| self.lex_error(e))
    }

    fn peek(&self, mode: Mode) -> Result<Token<'a>> {
        self.scanner.peek(mode).map_err(|e| self.lex_error(e))
    }

    fn unexpected(&self, found: &Token<'_>, expected: &str) -> Error {
        self.error(found.pos, format!("expected {expected}, found {found}"))
    }

    fn lex_error(&self, e: LexError) -> Error {
        self.error(e.pos, e.message)
    }

    fn error(&self, position: usize, message: String) -> Error {
        tracing::debug!(filter = self.input, position, %message, "invalid filter");
        Error::Parse {
            input: self.input.to_owned(),
            position,
            message,
        }
    }
}
