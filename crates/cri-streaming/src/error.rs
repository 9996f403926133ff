//! Errors of the streaming server.

/// What went wrong in the streaming server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be served as asked (gRPC `InvalidArgument`); the
    /// message is kubelet's, word for word.
    #[error("{0}")]
    InvalidRequest(String),
    /// Too many URLs were handed out and not yet used or expired (gRPC
    /// `ResourceExhausted`).
    #[error("too many streaming requests in flight ({0}); retry after some expire")]
    TooManyRequests(usize),
    /// The listening socket could not be opened.
    #[error("binding the streaming server to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
}
