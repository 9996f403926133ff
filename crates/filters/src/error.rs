//! Errors returned while parsing filters.

/// An error from parsing a filter.
///
/// Every variant belongs to containerd's `InvalidArgument` category: the
/// caller sent a filter that cannot be used. Positions are byte offsets into
/// the filter text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The filter text does not follow the grammar.
    #[error("parse error at {position}: {message} (in filter {input:?})")]
    Parse {
        /// The whole filter text.
        input: String,
        /// Byte offset of the offending token (the input length at its end).
        position: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// The value of a `~=` selector is not a valid regular expression.
    #[error("invalid regular expression at {position} (in filter {input:?}): {source}")]
    Regex {
        /// The whole filter text.
        input: String,
        /// Byte offset of the value in the filter text.
        position: usize,
        /// What the regular expression compiler reported.
        #[source]
        source: regex::Error,
    },
}

impl berth_types::ErrorCategory for Error {
    fn category(&self) -> berth_types::Category {
        berth_types::Category::InvalidArgument
    }
}

impl Error {
    /// Byte offset in the filter text at which the error was found.
    pub fn position(&self) -> usize {
        match self {
            Self::Parse { position, .. } | Self::Regex { position, .. } => *position,
        }
    }

    /// The filter text that failed to parse.
    pub fn input(&self) -> &str {
        match self {
            Self::Parse { input, .. } | Self::Regex { input, .. } => input,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
