//! Framing: `Size => int32` followed by `Size` bytes (docs/protocol.html).
//!
//! The decoder keeps every frame's raw bytes (length prefix included) so an
//! untouched request or response is forwarded as the very same `Bytes`,
//! without a copy. The length is checked against a configurable cap before
//! a single byte of the body is buffered.

use bytes::{Buf, Bytes, BytesMut};

use super::error::CodecError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Default cap on a frame's length: 100 MiB, as in the design.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// A whole frame, length prefix included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// Wraps bytes that already begin with a correct length prefix.
    pub fn from_raw(raw: Bytes) -> Self {
        Frame { raw }
    }

    /// Builds a frame around a body (header + message).
    pub fn from_body(body: &[u8]) -> Self {
        let mut raw = BytesMut::with_capacity(LENGTH_PREFIX + body.len());
        raw.extend_from_slice(&(body.len() as i32).to_be_bytes());
        raw.extend_from_slice(body);
        Frame { raw: raw.freeze() }
    }

    /// The frame as sent on the wire.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The bytes after the length prefix.
    pub fn body(&self) -> Bytes {
        self.raw.slice(LENGTH_PREFIX..)
    }
}

/// Splits one frame off `src`: `Ok(None)` while it is still arriving, an
/// error for a length outside `0..=max_frame_bytes`.
pub fn decode_frame(
    src: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<Frame>, CodecError> {
    if src.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
    if len < 0 || len as usize > max_frame_bytes {
        return Err(CodecError::FrameLength {
            len: i64::from(len),
            max: max_frame_bytes,
        });
    }
    let total = LENGTH_PREFIX + len as usize;
    if src.len() < total {
        // Room grows as bytes arrive (the reader reserves in chunks), so a
        // peer that announces a large frame and sends nothing costs nothing.
        return Ok(None);
    }
    Ok(Some(Frame {
        raw: src.split_to(total).freeze(),
    }))
}

/// Advances past one frame in a contiguous slice (test and fuzz helper).
pub fn split_frames(mut input: &[u8], max_frame_bytes: usize) -> Result<Vec<Frame>, CodecError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let mut buf = BytesMut::from(input);
        match decode_frame(&mut buf, max_frame_bytes)? {
            Some(f) => {
                let n = f.raw.len();
                out.push(f);
                input.advance(n);
            }
            None => return Err(CodecError::Truncated("frame")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let mut b = BytesMut::from(&[0, 0, 0, 5, 1, 2][..]);
        assert_eq!(decode_frame(&mut b, 100).unwrap(), None);
        b.extend_from_slice(&[3, 4, 5, 9]);
        let f = decode_frame(&mut b, 100).unwrap().unwrap();
        assert_eq!(&f.body()[..], &[1, 2, 3, 4, 5]);
        assert_eq!(&b[..], &[9]);
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused() {
        let mut b = BytesMut::from(&[0, 0, 1, 0][..]);
        assert!(matches!(
            decode_frame(&mut b, 255),
            Err(CodecError::FrameLength { len: 256, .. })
        ));
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert!(decode_frame(&mut b, 255).is_err());
    }

    #[test]
    fn split_frames_reports_a_cut_frame() {
        assert!(split_frames(&[0, 0, 0, 1, 7, 0, 0], 10).is_err());
        assert_eq!(split_frames(&[0, 0, 0, 1, 7], 10).unwrap().len(), 1);
    }
}
