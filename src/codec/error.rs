//! The codec's error type.
//!
//! Parsing always happens on a complete frame (the framing layer waits for
//! the whole length-prefixed frame before any message parser runs), so a
//! message that ends early is *invalid*, not "incomplete": the distinction
//! between "wait for more bytes" and "this is garbage" lives in
//! [`crate::codec::frame`], which answers `Ok(None)` while a frame is still
//! arriving.

use nom::error::{ErrorKind, FromExternalError, ParseError};

/// Everything that can be wrong with bytes a peer sent us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended before the field it was reading was complete.
    #[error("truncated input: needed more bytes for {0}")]
    Truncated(&'static str),
    /// A length or count field is negative where the protocol forbids it
    /// (only -1, meaning null, is ever legal, and only for nullable fields).
    #[error("invalid length {len} for {what}")]
    InvalidLength { what: &'static str, len: i64 },
    /// A length or count is larger than the bytes that remain, or than the
    /// named cap for that field.
    #[error("length {len} for {what} exceeds the limit of {limit}")]
    LengthOverLimit {
        what: &'static str,
        len: u64,
        limit: u64,
    },
    /// The message would decode into more memory than its size on the wire
    /// allows (see `primitives::DecodeBudget`): counts that claim many tiny
    /// elements.
    #[error(
        "decoding {what} needs {needed} bytes, over the {left} bytes left of this message's decode budget"
    )]
    DecodeBudget {
        what: &'static str,
        needed: u64,
        left: u64,
    },
    /// An unsigned or zig-zag varint ran past its maximum width.
    #[error("invalid varint")]
    InvalidVarint,
    /// A string field is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A null where the schema does not allow null.
    #[error("unexpected null for {0}")]
    UnexpectedNull(&'static str),
    /// The message version is outside the range this codec implements.
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// A RecordBatch whose magic byte is not 2.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// A RecordBatch whose CRC-32C does not match its contents.
    #[error(
        "record batch CRC mismatch: header says {expected:#010x}, contents give {actual:#010x}"
    )]
    CrcMismatch { expected: u32, actual: u32 },
    /// Bytes left over after a message that should have consumed its frame.
    /// Records that cannot be decoded or re-encoded (a compression codec
    /// that fails, a batch that would inflate beyond the cap).
    #[error("invalid records: {0}")]
    Invalid(&'static str),

    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A frame length outside `0..=max_frame_bytes`.
    #[error("frame length {len} outside 0..={max}")]
    FrameLength { len: i64, max: usize },
    /// Any other nom failure (kept for completeness; our parsers map their
    /// own failures to the variants above).
    #[error("parse error: {0:?}")]
    Nom(ErrorKind),
}

impl CodecError {
    /// True when more bytes could have made the input valid.
    pub fn is_truncation(&self) -> bool {
        matches!(self, CodecError::Truncated(_))
    }
}

impl<I> ParseError<I> for CodecError {
    fn from_error_kind(_input: I, kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Eof => CodecError::Truncated("field"),
            other => CodecError::Nom(other),
        }
    }

    fn append(_input: I, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl<I> FromExternalError<I, CodecError> for CodecError {
    fn from_external_error(_input: I, _kind: ErrorKind, e: CodecError) -> Self {
        e
    }
}

impl From<nom::Err<CodecError>> for CodecError {
    fn from(e: nom::Err<CodecError>) -> Self {
        match e {
            nom::Err::Incomplete(_) => CodecError::Truncated("input"),
            nom::Err::Error(e) | nom::Err::Failure(e) => e,
        }
    }
}
