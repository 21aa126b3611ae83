//! Kafka's primitive types, as nom parsers and `BytesMut` writers.
//!
//! Every length or count is checked against the bytes that remain before
//! anything is taken or allocated, so a hostile length can neither read
//! past the frame nor make us reserve memory we will never fill. Encodings
//! follow `clients/src/main/java/org/apache/kafka/common/protocol/types/Type.java`:
//! classic strings carry an int16 length, classic bytes and arrays an int32
//! one; in flexible versions all three use an unsigned varint of N+1 with 0
//! meaning null.

use bytes::{BufMut, Bytes, BytesMut};
use nom::IResult;
use nom::number::complete::{be_i8, be_i16, be_i32, be_i64, be_u8, be_u32};

use super::error::CodecError;

/// Result of every parser in the codec.
pub type PResult<'a, T> = IResult<&'a [u8], T, CodecError>;

/// An unsigned varint never needs more than 5 bytes for 32 bits.
const MAX_UVARINT_LEN: usize = 5;
/// A zig-zag varlong never needs more than 10 bytes for 64 bits.
const MAX_VARLONG_LEN: usize = 10;

/// Fails the parse with `e` (a `Failure`, so no combinator backtracks).
pub fn fail<'a, T>(e: CodecError) -> PResult<'a, T> {
    Err(nom::Err::Failure(e))
}

fn truncated<'a, T>(what: &'static str) -> PResult<'a, T> {
    fail(CodecError::Truncated(what))
}

pub fn parse_i8(i: &[u8]) -> PResult<'_, i8> {
    be_i8(i)
}
pub fn parse_i16(i: &[u8]) -> PResult<'_, i16> {
    be_i16(i)
}
pub fn parse_i32(i: &[u8]) -> PResult<'_, i32> {
    be_i32(i)
}
pub fn parse_i64(i: &[u8]) -> PResult<'_, i64> {
    be_i64(i)
}
pub fn parse_u32(i: &[u8]) -> PResult<'_, u32> {
    be_u32(i)
}
pub fn parse_bool(i: &[u8]) -> PResult<'_, bool> {
    let (i, b) = be_u8(i)?;
    Ok((i, b != 0))
}

/// A 16-byte UUID (topic ids).
pub fn parse_uuid(i: &[u8]) -> PResult<'_, [u8; 16]> {
    let (i, b) = take_bytes(i, 16, "uuid")?;
    let mut out = [0u8; 16];
    out.copy_from_slice(b);
    Ok((i, out))
}

/// Unsigned LEB128 varint of at most 32 bits.
pub fn parse_uvarint(i: &[u8]) -> PResult<'_, u32> {
    let mut value: u32 = 0;
    for (n, &byte) in i.iter().enumerate().take(MAX_UVARINT_LEN) {
        let bits = u32::from(byte & 0x7f);
        if n == MAX_UVARINT_LEN - 1 && bits > 0x0f {
            return fail(CodecError::InvalidVarint);
        }
        value |= bits << (7 * n);
        if byte & 0x80 == 0 {
            return Ok((&i[n + 1..], value));
        }
    }
    if i.len() >= MAX_UVARINT_LEN {
        fail(CodecError::InvalidVarint)
    } else {
        truncated("varint")
    }
}

fn parse_uvarlong(i: &[u8]) -> PResult<'_, u64> {
    let mut value: u64 = 0;
    for (n, &byte) in i.iter().enumerate().take(MAX_VARLONG_LEN) {
        let bits = u64::from(byte & 0x7f);
        if n == MAX_VARLONG_LEN - 1 && bits > 0x01 {
            return fail(CodecError::InvalidVarint);
        }
        value |= bits << (7 * n);
        if byte & 0x80 == 0 {
            return Ok((&i[n + 1..], value));
        }
    }
    if i.len() >= MAX_VARLONG_LEN {
        fail(CodecError::InvalidVarint)
    } else {
        truncated("varlong")
    }
}

/// Zig-zag signed varint (record fields).
pub fn parse_varint(i: &[u8]) -> PResult<'_, i32> {
    let (i, v) = parse_uvarint(i)?;
    Ok((i, ((v >> 1) as i32) ^ -((v & 1) as i32)))
}

/// Zig-zag signed varlong (record timestamps).
pub fn parse_varlong(i: &[u8]) -> PResult<'_, i64> {
    let (i, v) = parse_uvarlong(i)?;
    Ok((i, ((v >> 1) as i64) ^ -((v & 1) as i64)))
}

/// Takes exactly `n` bytes, failing cleanly when fewer remain.
pub fn take_bytes<'a>(i: &'a [u8], n: usize, what: &'static str) -> PResult<'a, &'a [u8]> {
    if n > i.len() {
        return fail(CodecError::LengthOverLimit {
            what,
            len: n as u64,
            limit: i.len() as u64,
        });
    }
    Ok((&i[n..], &i[..n]))
}

/// Reads a length that may be null (-1 classic, 0 compact). Returns the
/// byte/element count, or `None` for null.
fn parse_len<'a>(
    i: &'a [u8],
    flex: bool,
    wide: bool,
    what: &'static str,
) -> PResult<'a, Option<usize>> {
    if flex {
        let (i, n) = parse_uvarint(i)?;
        Ok((i, n.checked_sub(1).map(|n| n as usize)))
    } else {
        let (i, n) = if wide {
            parse_i32(i)?
        } else {
            let (i, n) = parse_i16(i)?;
            (i, i32::from(n))
        };
        match n {
            -1 => Ok((i, None)),
            n if n < 0 => fail(CodecError::InvalidLength {
                what,
                len: i64::from(n),
            }),
            n => Ok((i, Some(n as usize))),
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, nom::Err<CodecError>> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| nom::Err::Failure(CodecError::InvalidUtf8))
}

/// Nullable string: int16 length (classic) or compact.
pub fn parse_nullable_string(i: &[u8], flex: bool) -> PResult<'_, Option<String>> {
    let (i, len) = parse_len(i, flex, false, "string")?;
    match len {
        None => Ok((i, None)),
        Some(n) => {
            let (i, b) = take_bytes(i, n, "string")?;
            Ok((i, Some(utf8(b)?)))
        }
    }
}

/// Non-nullable string.
pub fn parse_string(i: &[u8], flex: bool) -> PResult<'_, String> {
    let (i, s) = parse_nullable_string(i, flex)?;
    match s {
        Some(s) => Ok((i, s)),
        None => fail(CodecError::UnexpectedNull("string")),
    }
}

/// Nullable bytes: int32 length (classic) or compact.
pub fn parse_nullable_bytes(i: &[u8], flex: bool) -> PResult<'_, Option<&[u8]>> {
    let (i, len) = parse_len(i, flex, true, "bytes")?;
    match len {
        None => Ok((i, None)),
        Some(n) => {
            let (i, b) = take_bytes(i, n, "bytes")?;
            Ok((i, Some(b)))
        }
    }
}

/// Nullable array of elements parsed by `f`. The count is bounded by the
/// remaining input (every element of every message we parse takes at
/// least one byte), so a huge count cannot make us allocate.
pub fn parse_nullable_array<'a, T>(
    i: &'a [u8],
    flex: bool,
    mut f: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Option<Vec<T>>> {
    let (mut i, len) = parse_len(i, flex, true, "array")?;
    let Some(n) = len else {
        return Ok((i, None));
    };
    if n > i.len() {
        return fail(CodecError::LengthOverLimit {
            what: "array count",
            len: n as u64,
            limit: i.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (rest, v) = f(i)?;
        i = rest;
        out.push(v);
    }
    Ok((i, Some(out)))
}

/// Non-nullable array.
pub fn parse_array<'a, T>(
    i: &'a [u8],
    flex: bool,
    f: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Vec<T>> {
    let (i, v) = parse_nullable_array(i, flex, f)?;
    match v {
        Some(v) => Ok((i, v)),
        None => fail(CodecError::UnexpectedNull("array")),
    }
}

/// Tagged fields, kept verbatim (tag, raw value) so that a round trip
/// loses nothing we do not understand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaggedFields(pub Vec<(u32, Bytes)>);

impl TaggedFields {
    pub fn get(&self, tag: u32) -> Option<&Bytes> {
        self.0.iter().find(|(t, _)| *t == tag).map(|(_, v)| v)
    }

    /// Replaces (or inserts, keeping tags ascending) the raw value of `tag`.
    pub fn set(&mut self, tag: u32, value: Bytes) {
        match self.0.binary_search_by_key(&tag, |(t, _)| *t) {
            Ok(pos) => self.0[pos].1 = value,
            Err(pos) => self.0.insert(pos, (tag, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub fn parse_tagged_fields(i: &[u8]) -> PResult<'_, TaggedFields> {
    let (mut i, n) = parse_uvarint(i)?;
    if n as usize > i.len() {
        return fail(CodecError::LengthOverLimit {
            what: "tagged field count",
            len: u64::from(n),
            limit: i.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (rest, tag) = parse_uvarint(i)?;
        let (rest, size) = parse_uvarint(rest)?;
        let (rest, value) = take_bytes(rest, size as usize, "tagged field")?;
        out.push((tag, Bytes::copy_from_slice(value)));
        i = rest;
    }
    Ok((i, TaggedFields(out)))
}

/// Parses tagged fields only in flexible versions.
pub fn parse_tagged_if(i: &[u8], flex: bool) -> PResult<'_, TaggedFields> {
    if flex {
        parse_tagged_fields(i)
    } else {
        Ok((i, TaggedFields::default()))
    }
}

// ---------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------

pub fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_uvarlong(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub fn put_varint(buf: &mut BytesMut, v: i32) {
    put_uvarint(buf, ((v << 1) ^ (v >> 31)) as u32);
}

pub fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_uvarlong(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_len(buf: &mut BytesMut, len: Option<usize>, flex: bool, wide: bool) {
    match (flex, len) {
        (true, None) => buf.put_u8(0),
        (true, Some(n)) => put_uvarint(buf, n as u32 + 1),
        (false, None) if wide => buf.put_i32(-1),
        (false, None) => buf.put_i16(-1),
        (false, Some(n)) if wide => buf.put_i32(n as i32),
        (false, Some(n)) => buf.put_i16(n as i16),
    }
}

pub fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>, flex: bool) {
    put_len(buf, s.map(str::len), flex, false);
    if let Some(s) = s {
        buf.put_slice(s.as_bytes());
    }
}

pub fn put_string(buf: &mut BytesMut, s: &str, flex: bool) {
    put_nullable_string(buf, Some(s), flex);
}

pub fn put_nullable_bytes(buf: &mut BytesMut, b: Option<&[u8]>, flex: bool) {
    put_len(buf, b.map(<[u8]>::len), flex, true);
    if let Some(b) = b {
        buf.put_slice(b);
    }
}

/// Writes an array length (`None` for a null array).
pub fn put_array_len(buf: &mut BytesMut, n: Option<usize>, flex: bool) {
    put_len(buf, n, flex, true);
}

pub fn put_bool(buf: &mut BytesMut, b: bool) {
    buf.put_u8(u8::from(b));
}

pub fn put_tagged_fields(buf: &mut BytesMut, t: &TaggedFields) {
    put_uvarint(buf, t.0.len() as u32);
    for (tag, value) in &t.0 {
        put_uvarint(buf, *tag);
        put_uvarint(buf, value.len() as u32);
        buf.put_slice(value);
    }
}

pub fn put_tagged_if(buf: &mut BytesMut, t: &TaggedFields, flex: bool) {
    if flex {
        put_tagged_fields(buf, t);
    }
}

/// Runs a whole-message parser and insists it consumed everything.
pub fn parse_all<'a, T>(
    input: &'a [u8],
    f: impl FnOnce(&'a [u8]) -> PResult<'a, T>,
) -> Result<T, CodecError> {
    let (rest, v) = f(input)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trips_edges() {
        for v in [0u32, 1, 127, 128, 16383, 16384, u32::MAX] {
            let mut b = BytesMut::new();
            put_uvarint(&mut b, v);
            assert_eq!(parse_uvarint(&b).unwrap(), (&[][..], v));
        }
    }

    #[test]
    fn zigzag_round_trips_edges() {
        for v in [0i32, -1, 1, i32::MIN, i32::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(parse_varint(&b).unwrap().1, v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(parse_varlong(&b).unwrap().1, v);
        }
    }

    #[test]
    fn overlong_varint_is_invalid_not_truncated() {
        let e = parse_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err();
        assert_eq!(CodecError::from(e), CodecError::InvalidVarint);
        let e = parse_uvarint(&[0xff, 0xff]).unwrap_err();
        assert!(CodecError::from(e).is_truncation());
    }

    #[test]
    fn huge_array_count_is_refused_before_allocating() {
        let input = [0x7f, 0xff, 0xff, 0xff, 0, 0];
        let e = parse_array(&input, false, parse_i8).unwrap_err();
        assert!(matches!(
            CodecError::from(e),
            CodecError::LengthOverLimit { .. }
        ));
    }

    #[test]
    fn negative_string_length_other_than_null_is_invalid() {
        let e = parse_nullable_string(&[0xff, 0xfe], false).unwrap_err();
        assert!(matches!(
            CodecError::from(e),
            CodecError::InvalidLength { .. }
        ));
        assert_eq!(parse_nullable_string(&[0xff, 0xff], false).unwrap().1, None);
        assert_eq!(parse_nullable_string(&[0], true).unwrap().1, None);
    }
}
