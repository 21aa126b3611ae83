//! Kafka's primitive types, as nom parsers and `BytesMut` writers.
//!
//! Every length or count is checked against the bytes that remain before
//! anything is taken, so a hostile length cannot read past the frame.
//!
//! Memory is bounded by the input, not by the counts in it. An element
//! decodes into far more bytes than it takes on the wire (an empty topic of
//! a flexible Produce request is 3 bytes on the wire and a 72-byte struct;
//! a tagged field is 2 bytes and a 40-byte entry), so bounding a count by
//! the bytes left still lets a 60 MiB frame claim gigabytes. Every parse runs
//! under a [`DecodeBudget`]: a number of heap bytes proportional to the
//! size of the message, charged before any array, string or tagged field is
//! allocated. A message that would need more is refused with
//! [`CodecError::DecodeBudget`] before the allocation happens. Encodings
//! follow `clients/src/main/java/org/apache/kafka/common/protocol/types/Type.java`:
//! classic strings carry an int16 length, classic bytes and arrays an int32
//! one; in flexible versions all three use an unsigned varint of N+1 with 0
//! meaning null.

use std::cell::Cell;

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

// ---------------------------------------------------------------------------
// Decode budget
// ---------------------------------------------------------------------------

/// Heap bytes a message may decode into, as a multiple of its size on the
/// wire. Chosen per direction from the largest ratio a well-formed message
/// of that direction reaches (`tests/alloc_bounds.rs` parses the densest
/// real ones under it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeBudget {
    per_wire_byte: usize,
}

impl DecodeBudget {
    /// Client requests. The densest real Produce request is many topics
    /// with one partition and one one-record batch each: 77 bytes on the
    /// wire (the RecordBatch header alone is 61) decode into a 72-byte
    /// topic and a 64-byte partition, 1.8 bytes per wire byte. A client is
    /// not trusted (it can send this before authenticating), so the budget
    /// keeps a small margin over that and no more.
    pub const REQUEST: DecodeBudget = DecodeBudget { per_wire_byte: 3 };
    /// Broker responses. The densest real one is a Metadata response of a
    /// cluster with replication factor 1: a partition is 26 bytes on the
    /// wire and a 112-byte struct plus two 4-byte replica lists, 4.6 bytes
    /// per wire byte.
    pub const RESPONSE: DecodeBudget = DecodeBudget { per_wire_byte: 6 };

    /// Bytes this budget allows for a message of `wire_len` bytes.
    pub fn bytes_for(self, wire_len: usize) -> usize {
        wire_len
            .saturating_mul(self.per_wire_byte)
            .saturating_add(DECODE_BUDGET_SLACK)
    }
}

/// Added to every budget, so that small messages (an ApiVersions response
/// is about 6 wire bytes and 32 decoded per API) never come near it.
pub const DECODE_BUDGET_SLACK: usize = 64 * 1024;

thread_local! {
    /// Bytes left in the budget of the parse running on this thread.
    /// Parsing is synchronous (it never crosses an `.await`), so the budget
    /// of one message cannot leak into another; a thread-local spares every
    /// nom parser an extra argument.
    static BUDGET_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Ends a budget scope, also when the parse unwinds.
struct BudgetScope {
    owner: bool,
}

impl BudgetScope {
    /// Opens a budget for `wire_len` bytes unless a parse higher up the
    /// stack already holds one (nested parsers share their caller's).
    fn enter(budget: DecodeBudget, wire_len: usize) -> Self {
        BUDGET_LEFT.with(|left| {
            if left.get().is_some() {
                BudgetScope { owner: false }
            } else {
                left.set(Some(budget.bytes_for(wire_len)));
                BudgetScope { owner: true }
            }
        })
    }
}

impl Drop for BudgetScope {
    fn drop(&mut self) {
        if self.owner {
            BUDGET_LEFT.with(|left| left.set(None));
        }
    }
}

/// Runs `f` under `budget` for an input of `wire_len` bytes (or under the
/// budget already open on this thread).
pub fn with_decode_budget<T>(budget: DecodeBudget, wire_len: usize, f: impl FnOnce() -> T) -> T {
    let _scope = BudgetScope::enter(budget, wire_len);
    f()
}

/// Takes `bytes` from the open budget, or fails naming `what`.
fn charge(bytes: usize, what: &'static str) -> Result<(), nom::Err<CodecError>> {
    BUDGET_LEFT.with(|left| match left.get() {
        // Arrays and tagged fields always open a budget; what is parsed
        // outside one is a string or a field read on its own (a request
        // header's client id), which costs no more than its own bytes.
        None => Ok(()),
        Some(n) if bytes <= n => {
            left.set(Some(n - bytes));
            Ok(())
        }
        Some(n) => Err(nom::Err::Failure(CodecError::DecodeBudget {
            what,
            needed: bytes as u64,
            left: n as u64,
        })),
    })
}

/// Charges `n` elements of `T` (saturating, so a hostile count fails
/// instead of wrapping).
fn charge_elements<T>(n: usize, what: &'static str) -> Result<(), nom::Err<CodecError>> {
    charge(n.saturating_mul(std::mem::size_of::<T>()), what)
}

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
            charge(n, "string")?;
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

/// Nullable array of elements parsed by `f`.
///
/// The count is checked twice before anything is allocated: against the
/// bytes left (every element of every message we parse takes at least one
/// byte), and, as `count × size_of::<T>()`, against the decode budget. The
/// vector is then allocated once at its final size: a count that passes
/// both is never larger than what the input can pay for.
pub fn parse_nullable_array<'a, T>(
    i: &'a [u8],
    flex: bool,
    f: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Option<Vec<T>>> {
    parse_counted(i, flex, 1, "array", f)
}

/// Non-nullable array of elements that take at least `min_bytes` each on
/// the wire (a named constant beside the parser, derived from the schema):
/// a count the bytes left cannot hold is refused before anything else.
pub fn parse_array_min<'a, T>(
    i: &'a [u8],
    flex: bool,
    min_bytes: usize,
    what: &'static str,
    f: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Vec<T>> {
    match parse_counted(i, flex, min_bytes, what, f)? {
        (i, Some(v)) => Ok((i, v)),
        (_, None) => fail(CodecError::UnexpectedNull(what)),
    }
}

fn parse_counted<'a, T>(
    i: &'a [u8],
    flex: bool,
    min_bytes: usize,
    what: &'static str,
    mut f: impl FnMut(&'a [u8]) -> PResult<'a, T>,
) -> PResult<'a, Option<Vec<T>>> {
    let _scope = BudgetScope::enter(DecodeBudget::REQUEST, i.len());
    let (mut i, len) = parse_len(i, flex, true, what)?;
    let Some(n) = len else {
        return Ok((i, None));
    };
    let fits = i.len() / min_bytes.max(1);
    if n > fits {
        return fail(CodecError::LengthOverLimit {
            what,
            len: n as u64,
            limit: fits as u64,
        });
    }
    charge_elements::<T>(n, what)?;
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

/// Least bytes one tagged field takes on the wire: a one-byte tag, a
/// one-byte size and an empty value (`TaggedFields` in
/// `clients/src/main/java/org/apache/kafka/common/protocol/types/TaggedFields.java`).
const MIN_TAGGED_FIELD_BYTES: usize = 2;

pub fn parse_tagged_fields(i: &[u8]) -> PResult<'_, TaggedFields> {
    let _scope = BudgetScope::enter(DecodeBudget::REQUEST, i.len());
    let (mut i, n) = parse_uvarint(i)?;
    let n = n as usize;
    if n > i.len() / MIN_TAGGED_FIELD_BYTES {
        return fail(CodecError::LengthOverLimit {
            what: "tagged field count",
            len: n as u64,
            limit: (i.len() / MIN_TAGGED_FIELD_BYTES) as u64,
        });
    }
    charge_elements::<(u32, Bytes)>(n, "tagged fields")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (rest, tag) = parse_uvarint(i)?;
        let (rest, size) = parse_uvarint(rest)?;
        let (rest, value) = take_bytes(rest, size as usize, "tagged field")?;
        charge(value.len(), "tagged field")?;
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

/// Runs a whole-message parser under `budget` and insists it consumed
/// everything.
pub fn parse_all<'a, T>(
    input: &'a [u8],
    budget: DecodeBudget,
    f: impl FnOnce(&'a [u8]) -> PResult<'a, T>,
) -> Result<T, CodecError> {
    let (rest, v) = with_decode_budget(budget, input.len(), || f(input))?;
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

    #[test]
    fn count_that_would_decode_past_the_budget_is_refused_before_allocating() {
        // An empty string is 1 byte on the wire and a 24-byte `String`:
        // 1000 of them fit in the slack, 64 Ki of them (1.5 MiB decoded
        // from 64 KiB) do not.
        let mut b = BytesMut::new();
        put_array_len(&mut b, Some(1000), true);
        b.put_slice(&[1; 1000]);
        let parse = |i| parse_array(i, true, |i| parse_string(i, true));
        assert_eq!(
            parse_all(&b, DecodeBudget::REQUEST, parse).unwrap().len(),
            1000
        );
        let big = 64 * 1024;
        let mut b = BytesMut::new();
        put_array_len(&mut b, Some(big), true);
        b.put_slice(&vec![1; big]);
        let e = parse_all(&b, DecodeBudget::REQUEST, parse).unwrap_err();
        assert!(
            matches!(e, CodecError::DecodeBudget { what: "array", .. }),
            "{e}"
        );
    }

    #[test]
    fn a_budget_ends_with_its_parse() {
        let mut b = BytesMut::new();
        put_uvarint(&mut b, 40_000);
        b.put_slice(&[0; 80_000]);
        assert!(parse_all(&b, DecodeBudget::REQUEST, parse_tagged_fields).is_err());
        BUDGET_LEFT.with(|left| assert_eq!(left.get(), None));
        // A parser called on its own opens (and closes) a budget of its own.
        assert!(parse_tagged_fields(&b).is_err());
        BUDGET_LEFT.with(|left| assert_eq!(left.get(), None));
        assert_eq!(
            parse_tagged_fields(&[0]).unwrap().1,
            TaggedFields::default()
        );
    }

    #[test]
    fn tagged_field_count_is_bounded_by_two_bytes_a_field() {
        let e = parse_tagged_fields(&[3, 0, 0, 0, 0]).unwrap_err();
        assert!(matches!(
            CodecError::from(e),
            CodecError::LengthOverLimit { limit: 2, .. }
        ));
    }
}
