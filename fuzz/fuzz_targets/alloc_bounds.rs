//! Memory a parse takes is bounded by its input: the peak heap growth while
//! any message the proxy parses is decoded stays within the decode budget
//! of its direction (`DecodeBudget::bytes_for(input length)`), whatever the
//! counts in it claim.
//!
//! Input: one byte picking the message kind, one picking the version, then
//! the body. Kinds 0-4 are the responses of the `responses` target, with
//! the same selectors (its corpus is a valid corpus here); 5 a Produce
//! request (version 3 + v % 11), 6 a Metadata request, 7 a FindCoordinator
//! request, 8 a request header, 9 a `NodeEndpoints` tagged value.

#![no_main]


use bytes::Bytes;
use kafka_dedup_proxy::codec::api_versions::parse_api_versions_response;
use kafka_dedup_proxy::codec::describe_cluster::parse_describe_cluster_response;
use kafka_dedup_proxy::codec::find_coordinator::{
    parse_find_coordinator_request, parse_find_coordinator_response,
};
use kafka_dedup_proxy::codec::header::parse_request_header_auto;
use kafka_dedup_proxy::codec::metadata::{parse_metadata_request, parse_metadata_response};
use kafka_dedup_proxy::codec::primitives::DecodeBudget;
use kafka_dedup_proxy::codec::produce::{
    parse_node_endpoints, parse_produce_request, parse_produce_response,
};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/peak_alloc.rs"]
mod peak_alloc;

/// Peak heap growth while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    peak_alloc::peak_during(f).0
}

fuzz_target!(|data: &[u8]| {
    let [kind, version, body @ ..] = data else {
        return;
    };
    let v = i16::from(*version);
    // Copied before measuring: the proxy holds a frame as `Bytes` already,
    // split off its read buffer, so slicing records out of it allocates
    // nothing. A fresh `Bytes` allocates its shared header on the first
    // slice; the clone takes that here.
    let bytes = Bytes::copy_from_slice(body);
    let _shared = bytes.clone();
    let (budget, peak) = match kind % 10 {
        0 => (
            DecodeBudget::RESPONSE,
            peak_during(|| drop(parse_produce_response(body, 3 + v % 11))),
        ),
        1 => (
            DecodeBudget::RESPONSE,
            peak_during(|| drop(parse_metadata_response(body, v % 14))),
        ),
        2 => (
            DecodeBudget::RESPONSE,
            peak_during(|| drop(parse_find_coordinator_response(body, v % 7))),
        ),
        3 => (
            DecodeBudget::RESPONSE,
            peak_during(|| drop(parse_api_versions_response(body, v % 5))),
        ),
        4 => (
            DecodeBudget::RESPONSE,
            peak_during(|| drop(parse_describe_cluster_response(body, v % 3))),
        ),
        5 => (
            DecodeBudget::REQUEST,
            peak_during(|| drop(parse_produce_request(&bytes, 3 + v % 11))),
        ),
        6 => (
            DecodeBudget::REQUEST,
            peak_during(|| drop(parse_metadata_request(body, v % 14))),
        ),
        7 => (
            DecodeBudget::REQUEST,
            peak_during(|| drop(parse_find_coordinator_request(body, v % 7))),
        ),
        8 => (
            DecodeBudget::REQUEST,
            peak_during(|| drop(parse_request_header_auto(body))),
        ),
        _ => (
            DecodeBudget::RESPONSE,
            peak_during(|| drop(parse_node_endpoints(body))),
        ),
    };
    assert!(
        peak <= budget.bytes_for(body.len()),
        "kind {kind} version {version}: {peak} bytes allocated for {} input bytes",
        body.len()
    );
});
