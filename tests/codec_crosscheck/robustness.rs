//! Every strict prefix of a valid message is refused, and garbage or
//! corrupted messages never panic any parser.

use super::api_versions::{
    api_versions_request, api_versions_response, parse_api_versions_request,
    parse_api_versions_response,
};
use super::describe_cluster::{
    describe_cluster_request, describe_cluster_response, parse_describe_cluster_request,
    parse_describe_cluster_response,
};
use super::find_coordinator::{
    find_coordinator_request, find_coordinator_response, parse_find_coordinator_request,
    parse_find_coordinator_response,
};
use super::headers::request_header_case;
use super::metadata::{
    metadata_request, metadata_response, parse_metadata_request, parse_metadata_response,
};
use super::produce::{
    parse_produce_request, parse_produce_response, produce_request, produce_response,
};
use super::*;

/// Every strict prefix of `wire` must be refused by `parse`, without a panic.
fn every_prefix_is_refused<T: Debug>(
    what: &str,
    v: i16,
    wire: &Bytes,
    parse: impl Fn(&Bytes, i16) -> Result<T, CodecError>,
) -> Result<(), TestCaseError> {
    prop_assert!(parse(wire, v).is_ok(), "{} v{} whole message", what, v);
    for n in 0..wire.len() {
        let r = parse(&wire.slice(..n), v);
        prop_assert!(
            r.is_err(),
            "{} v{} cut at {} of {}: {:?}",
            what,
            v,
            n,
            wire.len(),
            r
        );
    }
    Ok(())
}

fn truncations<S: Strategy, T: Debug>(
    what: &str,
    versions: RangeInclusive<i16>,
    strategy: impl Fn(i16) -> S,
    parse: impl Fn(&Bytes, i16) -> Result<T, CodecError>,
) where
    S::Value: Encodable,
{
    for_each_version(versions, TRUNCATION_CASES, strategy, |v, m| {
        every_prefix_is_refused(what, v, &kp_encode(&m, v), &parse)
    });
}

#[test]
fn every_truncation_of_a_valid_message_is_an_error_not_a_panic() {
    truncations(
        "produce request",
        3..=13,
        produce_request,
        parse_produce_request,
    );
    truncations(
        "produce response",
        3..=13,
        produce_response,
        parse_produce_response,
    );
    truncations(
        "api versions request",
        0..=4,
        api_versions_request,
        |b, v| {
            // v0-2 bodies are empty: nothing to cut.
            parse_api_versions_request(b, v)
        },
    );
    truncations(
        "api versions response",
        0..=4,
        api_versions_response,
        parse_api_versions_response,
    );
    truncations(
        "metadata request",
        0..=13,
        metadata_request,
        parse_metadata_request,
    );
    truncations(
        "metadata response",
        0..=13,
        metadata_response,
        parse_metadata_response,
    );
    truncations(
        "find coordinator request",
        0..=6,
        find_coordinator_request,
        parse_find_coordinator_request,
    );
    truncations(
        "find coordinator response",
        0..=6,
        find_coordinator_response,
        parse_find_coordinator_response,
    );
    truncations(
        "describe cluster request",
        0..=2,
        describe_cluster_request,
        parse_describe_cluster_request,
    );
    truncations(
        "describe cluster response",
        0..=2,
        describe_cluster_response,
        parse_describe_cluster_response,
    );
}

#[test]
fn every_truncation_of_a_header_or_record_batch_is_an_error_not_a_panic() {
    runner(CASES)
        .run(&request_header_case(), |(hv, h)| {
            let wire = kp_encode(&h, hv);
            for n in 0..wire.len() {
                prop_assert!(header::parse_request_header_auto(&wire[..n]).is_err());
            }
            Ok(())
        })
        .unwrap();
    runner(CASES)
        .run(&batch_spec(), |spec| {
            let batch = spec.encode();
            for n in 0..batch.len() {
                prop_assert!(rb::parse_single_batch(&batch[..n]).is_err());
            }
            Ok(())
        })
        .unwrap();
}

/// Runs every parser of the codec over `input` at version `v`; only a
/// panic can fail this.
fn parse_everything(input: &[u8], v: i16) {
    let b = Bytes::copy_from_slice(input);
    let _ = pr::parse_produce_request(&b, v);
    let _ = pr::parse_produce_response(input, v);
    let _ = pr::parse_node_endpoints(input);
    let _ = av::parse_api_versions_request(input, v);
    let _ = av::parse_api_versions_response(input, v);
    let _ = md::parse_metadata_request(input, v);
    let _ = md::parse_metadata_response(input, v);
    let _ = fc::parse_find_coordinator_request(input, v);
    let _ = fc::parse_find_coordinator_response(input, v);
    let _ = dc::parse_describe_cluster_request(input, v);
    let _ = dc::parse_describe_cluster_response(input, v);
    let _ = header::parse_request_header_auto(input);
    for hv in 0..=2 {
        let _ = header::parse_request_header(input, hv);
        let _ = header::parse_response_header(input, hv);
    }
    let _ = rb::parse_record_batch_header(input);
    let _ = rb::parse_single_batch(input);
    let _ = split_frames(input, 1 << 16);
    let mut buf = BytesMut::from(input);
    while let Ok(Some(_)) = frame::decode_frame(&mut buf, 1 << 16) {}
}

#[test]
fn random_garbage_never_panics_any_parser_at_any_version() {
    let case = (-2i16..=16, prop::collection::vec(any::<u8>(), 0..256));
    runner(CASES * 32)
        .run(&case, |(v, input)| {
            parse_everything(&input, v);
            Ok(())
        })
        .unwrap();
}

#[test]
fn corrupted_valid_messages_never_panic_any_parser() {
    // Valid encodings with a few bytes overwritten reach deeper than pure
    // noise: lengths and counts that are almost right.
    let messages = (3i16..=13).prop_flat_map(|v| {
        (
            Just(v),
            prop_oneof![
                produce_request(v).prop_map(move |m| kp_encode(&m, v)),
                produce_response(v).prop_map(move |m| kp_encode(&m, v)),
                metadata_response(v).prop_map(move |m| kp_encode(&m, v)),
                metadata_request(v).prop_map(move |m| kp_encode(&m, v)),
            ],
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        )
    });
    runner(CASES * 8)
        .run(&messages, |(v, wire, edits)| {
            if wire.is_empty() {
                return Ok(());
            }
            let mut bad = wire.to_vec();
            for (at, byte) in edits {
                let i = at.index(bad.len());
                bad[i] = byte;
            }
            parse_everything(&bad, v);
            Ok(())
        })
        .unwrap();
}
