//! Errors of the remoting layer.
//!
//! [`CodecError`] means the peer sent bytes we cannot interpret: the
//! connection carrying them is closed (Java does the same, without a
//! response). [`RemotingError`] is what a caller of the client or of a
//! connection's request API can get back.

use std::time::Duration;

/// A frame that cannot be decoded. Always fatal for the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// `frame_len` + 4 exceeds the configured maximum frame size.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// `frame_len` is negative or smaller than the 4-byte header word.
    #[error("invalid frame length {0}")]
    BadFrameLength(i32),
    /// The header length does not fit in the frame.
    #[error("header length {header_len} exceeds frame length {frame_len}")]
    BadHeaderLength { header_len: usize, frame_len: usize },
    /// The serialization type byte is neither 0 (JSON) nor 1 (ROCKETMQ).
    #[error("unknown serialization type {0}")]
    BadSerializeType(u8),
    /// The JSON header is not a valid command header.
    #[error("malformed JSON header: {0}")]
    Json(String),
    /// The binary header is truncated or inconsistent.
    #[error("malformed binary header: {0}")]
    Binary(&'static str),
}

/// Failure of a request sent over a connection.
#[derive(Debug, thiserror::Error)]
pub enum RemotingError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    /// No response arrived within the timeout (the request may still be processed).
    #[error("request (code {code}, opaque {opaque}) timed out after {timeout:?}")]
    Timeout {
        code: i32,
        opaque: i32,
        timeout: Duration,
    },
    /// The connection closed before the response arrived (or before sending).
    #[error("connection closed")]
    ConnectionClosed,
    /// Too many of our requests already wait to be written to a peer that
    /// does not read (Java's RemotingTooMuchRequestException).
    #[error("{queued} requests already wait for this connection's peer to read")]
    TooManyRequests { queued: usize },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}
