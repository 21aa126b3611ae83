//! Golden vectors: request and response frames recorded between real
//! clients (the Java client, librdkafka through kcat) and a real broker by
//! `scripts/capture-vectors`, under `tests/vectors/<source>/`.
//!
//! Every vector must be one whole frame whose header names the api and
//! version of its file name. The messages the codec implements decode and
//! re-encode byte for byte; every vector also decodes with `kafka-protocol`
//! (where it knows the version) into the same bytes and the same fields.
//! A few facts about the recorded conversations are checked by hand.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, StrBytes};

use kafka_dedup_proxy::codec::api;
use kafka_dedup_proxy::codec::api_versions as av;
use kafka_dedup_proxy::codec::describe_cluster as dc;
use kafka_dedup_proxy::codec::find_coordinator as fc;
use kafka_dedup_proxy::codec::frame::{DEFAULT_MAX_FRAME_BYTES, split_frames};
use kafka_dedup_proxy::codec::header;
use kafka_dedup_proxy::codec::metadata as md;
use kafka_dedup_proxy::codec::primitives::TaggedFields;
use kafka_dedup_proxy::codec::produce as pr;
use kafka_dedup_proxy::codec::producer_epoch::parse_producer_epoch;
use kafka_dedup_proxy::codec::record_batch::{self as rb, SimpleRecord, encode_record_batch};

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Request,
    Response,
}

#[derive(Debug, Clone)]
struct Vector {
    path: PathBuf,
    source: String,
    api_key: i16,
    version: i16,
    kind: Kind,
    n: u32,
    /// The whole frame, length prefix included.
    raw: Bytes,
}

impl Vector {
    fn name(&self) -> String {
        self.path
            .strip_prefix(vectors_dir())
            .unwrap_or(&self.path)
            .display()
            .to_string()
    }

    /// Header and message, without the length prefix.
    fn frame_body(&self) -> Bytes {
        let frames = split_frames(&self.raw, DEFAULT_MAX_FRAME_BYTES)
            .unwrap_or_else(|e| panic!("{}: not a frame: {e}", self.name()));
        assert_eq!(frames.len(), 1, "{}: one frame per file", self.name());
        frames[0].body()
    }

    fn header_version(&self) -> i16 {
        let key = kp_api(self.api_key);
        match self.kind {
            Kind::Request => key.request_header_version(self.version),
            Kind::Response => key.response_header_version(self.version),
        }
    }

    /// The message after its header.
    fn message(&self) -> Bytes {
        let body = self.frame_body();
        let hv = self.header_version();
        let rest = match self.kind {
            Kind::Request => header::parse_request_header(&body, hv).map(|(rest, _)| rest.len()),
            Kind::Response => header::parse_response_header(&body, hv).map(|(rest, _)| rest.len()),
        }
        .unwrap_or_else(|e| panic!("{}: header: {e:?}", self.name()));
        body.slice(body.len() - rest..)
    }

    fn implemented(&self) -> bool {
        let range = match self.api_key {
            api::PRODUCE => pr::MIN_VERSION..=pr::MAX_VERSION,
            api::API_VERSIONS => 0..=av::MAX_VERSION,
            api::METADATA => 0..=md::MAX_VERSION,
            api::FIND_COORDINATOR => 0..=fc::MAX_VERSION,
            api::DESCRIBE_CLUSTER => 0..=dc::MAX_VERSION,
            _ => return false,
        };
        range.contains(&self.version)
    }
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn api_key_of(name: &str) -> i16 {
    (0..200)
        .find(|k| api::api_name(*k) == name)
        .unwrap_or_else(|| panic!("unknown api name {name}"))
}

/// `<api>_v<version>_<request|response>_<n>.bin`
fn parse_file_name(file: &str) -> (String, i16, Kind, u32) {
    let stem = file.strip_suffix(".bin").expect(".bin");
    let (rest, n) = stem.rsplit_once('_').expect("_<n>");
    let (rest, kind) = rest.rsplit_once('_').expect("_<kind>");
    let (api, version) = rest.rsplit_once("_v").expect("_v<version>");
    let kind = match kind {
        "request" => Kind::Request,
        "response" => Kind::Response,
        other => panic!("{file}: kind {other}"),
    };
    (
        api.to_owned(),
        version.parse().expect("version"),
        kind,
        n.parse().expect("n"),
    )
}

fn load() -> Vec<Vector> {
    let mut out = Vec::new();
    let mut sources: Vec<_> = fs::read_dir(vectors_dir())
        .expect("tests/vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sources.sort();
    for dir in sources {
        let source = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect();
        files.sort();
        for path in files {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let (api_name, version, kind, n) = parse_file_name(&file);
            out.push(Vector {
                raw: Bytes::from(fs::read(&path).unwrap()),
                path,
                source: source.clone(),
                api_key: api_key_of(&api_name),
                version,
                kind,
                n,
            });
        }
    }
    assert!(out.len() >= 100, "only {} vectors", out.len());
    out
}

fn of_source<'a>(all: &'a [Vector], source: &str) -> Vec<&'a Vector> {
    let v: Vec<_> = all.iter().filter(|v| v.source == source).collect();
    assert!(!v.is_empty(), "no vectors from {source}");
    v
}

fn kp_api(key: i16) -> kp::ApiKey {
    kp::ApiKey::try_from(key).expect("kafka-protocol knows the api key")
}

fn st(s: &StrBytes) -> String {
    s.as_str().to_owned()
}

fn ost(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(st)
}

/// A number from `tests/vectors/capture.json`.
fn capture_info(key: &str) -> i64 {
    let text = fs::read_to_string(vectors_dir().join("capture.json")).unwrap();
    let at = text
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in capture.json"));
    let tail = text[at + key.len() + 3..].trim_start();
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

// ---------------------------------------------------------------------------
// Our codec, message by message
// ---------------------------------------------------------------------------

/// Decodes an implemented message with our codec and re-encodes it;
/// returns the re-encoding.
fn our_round_trip(v: &Vector, msg: &Bytes) -> Bytes {
    let ver = v.version;
    let mut b = BytesMut::new();
    let fail = |e| -> ! { panic!("{}: our codec refuses it: {e}", v.name()) };
    match (v.api_key, v.kind) {
        (api::PRODUCE, Kind::Request) => {
            let m = pr::parse_produce_request(msg, ver).unwrap_or_else(|e| fail(e));
            pr::encode_produce_request(&mut b, &m, ver);
        }
        (api::PRODUCE, Kind::Response) => {
            let m = pr::parse_produce_response(msg, ver).unwrap_or_else(|e| fail(e));
            pr::encode_produce_response(&mut b, &m, ver);
        }
        (api::API_VERSIONS, Kind::Request) => {
            let m = av::parse_api_versions_request(msg, ver).unwrap_or_else(|e| fail(e));
            av::encode_api_versions_request(&mut b, &m, ver);
        }
        (api::API_VERSIONS, Kind::Response) => {
            let m = av::parse_api_versions_response(msg, ver).unwrap_or_else(|e| fail(e));
            av::encode_api_versions_response(&mut b, &m, ver);
        }
        (api::METADATA, Kind::Request) => {
            let m = md::parse_metadata_request(msg, ver).unwrap_or_else(|e| fail(e));
            md::encode_metadata_request(&mut b, &m, ver);
        }
        (api::METADATA, Kind::Response) => {
            let m = md::parse_metadata_response(msg, ver).unwrap_or_else(|e| fail(e));
            md::encode_metadata_response(&mut b, &m, ver);
        }
        (api::FIND_COORDINATOR, Kind::Request) => {
            let m = fc::parse_find_coordinator_request(msg, ver).unwrap_or_else(|e| fail(e));
            fc::encode_find_coordinator_request(&mut b, &m, ver);
        }
        (api::FIND_COORDINATOR, Kind::Response) => {
            let m = fc::parse_find_coordinator_response(msg, ver).unwrap_or_else(|e| fail(e));
            fc::encode_find_coordinator_response(&mut b, &m, ver);
        }
        (api::DESCRIBE_CLUSTER, Kind::Request) => {
            let m = dc::parse_describe_cluster_request(msg, ver).unwrap_or_else(|e| fail(e));
            dc::encode_describe_cluster_request(&mut b, &m, ver);
        }
        (api::DESCRIBE_CLUSTER, Kind::Response) => {
            let m = dc::parse_describe_cluster_response(msg, ver).unwrap_or_else(|e| fail(e));
            dc::encode_describe_cluster_response(&mut b, &m, ver);
        }
        _ => unreachable!("{} is not implemented", v.name()),
    }
    b.freeze()
}

fn produce_requests<'a>(all: &'a [Vector], source: &str) -> Vec<(&'a Vector, pr::ProduceRequest)> {
    let out: Vec<_> = of_source(all, source)
        .into_iter()
        .filter(|v| v.api_key == api::PRODUCE && v.kind == Kind::Request)
        .map(|v| {
            (
                v,
                pr::parse_produce_request(&v.message(), v.version).unwrap(),
            )
        })
        .collect();
    assert!(!out.is_empty(), "no produce request from {source}");
    out
}

fn batches(r: &pr::ProduceRequest) -> Vec<rb::RecordBatchHeader> {
    r.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| rb::parse_single_batch(p.records.as_ref().expect("records")).expect("valid batch"))
        .collect()
}

fn responses(all: &[Vector], api_key: i16) -> Vec<&Vector> {
    let out: Vec<_> = all
        .iter()
        .filter(|v| v.api_key == api_key && v.kind == Kind::Response && v.implemented())
        .collect();
    assert!(!out.is_empty(), "no response of api {api_key}");
    out
}

// ---------------------------------------------------------------------------
// Framing and headers
// ---------------------------------------------------------------------------

#[test]
fn every_vector_is_one_frame_whose_header_names_the_api_and_version_of_its_file() {
    let all = load();
    let mut requests = BTreeMap::new();
    for v in &all {
        let body = v.frame_body();
        if v.kind == Kind::Request {
            let (_, (key, version, corr)) = header::parse_request_prefix(&body).unwrap();
            assert_eq!((key, version), (v.api_key, v.version), "{}", v.name());
            requests.insert((v.source.clone(), v.api_key, v.version, v.n), corr);
        }
    }
    // A response answers the request with the same number: same correlation id.
    let mut paired = 0;
    for v in all.iter().filter(|v| v.kind == Kind::Response) {
        let corr = requests
            .get(&(v.source.clone(), v.api_key, v.version, v.n))
            .unwrap_or_else(|| panic!("{}: no request", v.name()));
        let (_, h) = header::parse_response_header(&v.frame_body(), 0).unwrap();
        assert_eq!(h.correlation_id, *corr, "{}", v.name());
        paired += 1;
    }
    assert!(paired >= 50, "only {paired} responses");
}

#[test]
fn every_request_header_parses_and_re_encodes_byte_for_byte_and_as_kafka_protocol_reads_it() {
    for v in load().iter().filter(|v| v.kind == Kind::Request) {
        let body = v.frame_body();
        let hv = v.header_version();
        if let Some(ours) = header::request_header_version(v.api_key, v.version) {
            assert_eq!(ours, hv, "{}: header version", v.name());
            let (h, rest) = header::parse_request_header_auto(&body).unwrap();
            assert_eq!(rest.len(), v.message().len());
            assert_eq!(h.api_version, v.version);
        }
        let (rest, h) = header::parse_request_header(&body, hv).unwrap();
        let mut enc = BytesMut::new();
        header::put_request_header(&mut enc, &h, hv);
        assert_eq!(&enc[..], &body[..body.len() - rest.len()], "{}", v.name());

        let mut buf = body.clone();
        let theirs = kp::RequestHeader::decode(&mut buf, hv).unwrap();
        assert_eq!(buf.len(), rest.len());
        assert_eq!(theirs.request_api_key, h.api_key);
        assert_eq!(theirs.request_api_version, h.api_version);
        assert_eq!(theirs.correlation_id, h.correlation_id);
        assert_eq!(ost(&theirs.client_id), h.client_id, "{}", v.name());
        // Only the clients' own requests: the broker's internal clients
        // never talk through the proxy.
        let client_id = h.client_id.as_deref().unwrap_or("");
        assert!(
            !client_id.starts_with("broker-") && !client_id.starts_with("AddPartitionsManager"),
            "{}: from the broker's own client {client_id}",
            v.name()
        );
        assert_eq!(theirs.unknown_tagged_fields.len(), h.tagged_fields.0.len());
    }
}

#[test]
fn every_response_header_parses_and_re_encodes_byte_for_byte_and_as_kafka_protocol_reads_it() {
    for v in load().iter().filter(|v| v.kind == Kind::Response) {
        let body = v.frame_body();
        let hv = v.header_version();
        if header::request_header_version(v.api_key, v.version).is_some() {
            assert_eq!(
                header::response_header_version(v.api_key, v.version),
                hv,
                "{}",
                v.name()
            );
        }
        let (rest, h) = header::parse_response_header(&body, hv).unwrap();
        let mut enc = BytesMut::new();
        header::put_response_header(&mut enc, &h, hv);
        assert_eq!(&enc[..], &body[..body.len() - rest.len()], "{}", v.name());
        let mut buf = body.clone();
        let theirs = kp::ResponseHeader::decode(&mut buf, hv).unwrap();
        assert_eq!(buf.len(), rest.len());
        assert_eq!(theirs.correlation_id, h.correlation_id);
    }
}

// ---------------------------------------------------------------------------
// Messages: ours and kafka-protocol's
// ---------------------------------------------------------------------------

#[test]
fn implemented_messages_from_real_peers_decode_and_re_encode_byte_for_byte() {
    let all = load();
    let mut seen = BTreeMap::<(i16, Kind), usize>::new();
    for v in all.iter().filter(|v| v.implemented()) {
        let msg = v.message();
        assert_eq!(our_round_trip(v, &msg), msg, "{}", v.name());
        *seen.entry((v.api_key, v.kind)).or_default() += 1;
    }
    for key in [
        api::PRODUCE,
        api::API_VERSIONS,
        api::METADATA,
        api::FIND_COORDINATOR,
        api::DESCRIBE_CLUSTER,
    ] {
        for kind in [Kind::Request, Kind::Response] {
            assert!(
                seen.contains_key(&(key, kind)),
                "no {kind:?} of api {key} among the vectors"
            );
        }
    }
}

/// Versions of the vectors that `kafka-protocol` 0.18 does not implement.
fn kafka_protocol_knows(v: &Vector) -> bool {
    let range = kp_api(v.api_key).valid_versions();
    (range.min..=range.max).contains(&v.version)
}

#[test]
fn every_vector_kafka_protocol_knows_decodes_there_and_re_encodes_to_the_same_bytes() {
    let all = load();
    let mut checked = 0;
    for v in all.iter().filter(|v| kafka_protocol_knows(v)) {
        let msg = v.message();
        let mut buf = msg.clone();
        let mut enc = BytesMut::new();
        match v.kind {
            Kind::Request => {
                let m = kp::RequestKind::decode(kp_api(v.api_key), &mut buf, v.version)
                    .unwrap_or_else(|e| panic!("{}: kafka-protocol: {e}", v.name()));
                m.encode(&mut enc, v.version).unwrap();
            }
            Kind::Response => {
                let m = kp::ResponseKind::decode(kp_api(v.api_key), &mut buf, v.version)
                    .unwrap_or_else(|e| panic!("{}: kafka-protocol: {e}", v.name()));
                m.encode(&mut enc, v.version).unwrap();
            }
        }
        assert!(buf.is_empty(), "{}: kafka-protocol left bytes", v.name());
        assert_eq!(&enc[..], &msg[..], "{}", v.name());
        checked += 1;
    }
    assert!(
        checked * 10 >= all.len() * 8,
        "kafka-protocol read only {checked} of {}",
        all.len()
    );
}

fn kp_decode<T: Decodable>(v: &Vector) -> T {
    let mut buf = v.message();
    let m = T::decode(&mut buf, v.version).unwrap_or_else(|e| panic!("{}: {e}", v.name()));
    assert!(buf.is_empty());
    m
}

fn topic_ref(name: &kp::TopicName, id: &uuid::Uuid, version: i16) -> pr::TopicRef {
    if version >= 13 {
        pr::TopicRef::Id(*id.as_bytes())
    } else {
        pr::TopicRef::Name(st(&name.0))
    }
}

fn tags(t: &BTreeMap<i32, Bytes>) -> Vec<u32> {
    t.keys().map(|k| *k as u32).collect()
}

fn tag_numbers(t: &TaggedFields) -> Vec<u32> {
    t.0.iter().map(|(k, _)| *k).collect()
}

/// Field-by-field comparison of our decoding with kafka-protocol's.
fn compare_fields(v: &Vector) {
    let msg = v.message();
    let ver = v.version;
    let name = v.name();
    match (v.api_key, v.kind) {
        (api::PRODUCE, Kind::Request) => {
            let ours = pr::parse_produce_request(&msg, ver).unwrap();
            let theirs: kp::ProduceRequest = kp_decode(v);
            assert_eq!(
                ours.transactional_id,
                theirs.transactional_id.map(|t| st(&t.0))
            );
            assert_eq!(ours.acks, theirs.acks);
            assert_eq!(ours.timeout_ms, theirs.timeout_ms);
            assert_eq!(ours.topics.len(), theirs.topic_data.len(), "{name}");
            for (o, t) in ours.topics.iter().zip(&theirs.topic_data) {
                assert_eq!(o.topic, topic_ref(&t.name, &t.topic_id, ver));
                assert_eq!(o.partitions.len(), t.partition_data.len());
                for (op, tp) in o.partitions.iter().zip(&t.partition_data) {
                    assert_eq!(op.index, tp.index);
                    assert_eq!(op.records, tp.records);
                }
            }
        }
        (api::PRODUCE, Kind::Response) => {
            let ours = pr::parse_produce_response(&msg, ver).unwrap();
            let theirs: kp::ProduceResponse = kp_decode(v);
            assert_eq!(ours.throttle_time_ms, theirs.throttle_time_ms);
            assert_eq!(ours.responses.len(), theirs.responses.len(), "{name}");
            for (o, t) in ours.responses.iter().zip(&theirs.responses) {
                assert_eq!(o.topic, topic_ref(&t.name, &t.topic_id, ver));
                for (op, tp) in o.partitions.iter().zip(&t.partition_responses) {
                    assert_eq!(op.index, tp.index);
                    assert_eq!(op.error_code, tp.error_code);
                    assert_eq!(op.base_offset, tp.base_offset);
                    assert_eq!(op.log_append_time_ms, tp.log_append_time_ms);
                    assert_eq!(op.log_start_offset, tp.log_start_offset);
                    assert_eq!(op.error_message, ost(&tp.error_message));
                    assert_eq!(op.record_errors.len(), tp.record_errors.len());
                    let leader_tag = ver >= 10 && tp.current_leader != Default::default();
                    assert_eq!(op.tagged_fields.get(0).is_some(), leader_tag, "{name}");
                }
            }
            let endpoints = ours
                .tagged_fields
                .get(pr::NODE_ENDPOINTS_TAG)
                .map(|raw| pr::parse_node_endpoints(raw).unwrap())
                .unwrap_or_default();
            assert_eq!(endpoints.len(), theirs.node_endpoints.len(), "{name}");
            for (o, t) in endpoints.iter().zip(&theirs.node_endpoints) {
                assert_eq!(
                    (o.node_id, &o.host, o.port),
                    (t.node_id.0, &st(&t.host), t.port)
                );
            }
        }
        (api::API_VERSIONS, Kind::Request) => {
            let ours = av::parse_api_versions_request(&msg, ver).unwrap();
            let theirs: kp::ApiVersionsRequest = kp_decode(v);
            assert_eq!(ours.client_software_name, st(&theirs.client_software_name));
            assert_eq!(
                ours.client_software_version,
                st(&theirs.client_software_version)
            );
        }
        (api::API_VERSIONS, Kind::Response) => {
            let ours = av::parse_api_versions_response(&msg, ver).unwrap();
            let theirs: kp::ApiVersionsResponse = kp_decode(v);
            assert_eq!(ours.error_code, theirs.error_code);
            assert_eq!(ours.throttle_time_ms, theirs.throttle_time_ms);
            let o: Vec<_> = ours
                .api_keys
                .iter()
                .map(|a| (a.api_key, a.min_version, a.max_version))
                .collect();
            let t: Vec<_> = theirs
                .api_keys
                .iter()
                .map(|a| (a.api_key, a.min_version, a.max_version))
                .collect();
            assert_eq!(o, t, "{name}");
            let mut known = Vec::new();
            if !theirs.supported_features.is_empty() {
                known.push(0);
            }
            if theirs.finalized_features_epoch != -1 {
                known.push(1);
            }
            if !theirs.finalized_features.is_empty() {
                known.push(2);
            }
            if theirs.zk_migration_ready {
                known.push(3);
            }
            known.extend(tags(&theirs.unknown_tagged_fields));
            assert_eq!(tag_numbers(&ours.tagged_fields), known, "{name}");
            if let Some(raw) = ours.tagged_fields.get(1) {
                let epoch = i64::from_be_bytes(raw[..].try_into().unwrap());
                assert_eq!(epoch, theirs.finalized_features_epoch);
            }
        }
        (api::METADATA, Kind::Request) => {
            let ours = md::parse_metadata_request(&msg, ver).unwrap();
            let theirs: kp::MetadataRequest = kp_decode(v);
            let o = ours
                .topics
                .map(|ts| ts.into_iter().map(|t| t.name).collect::<Vec<_>>());
            let t = theirs.topics.map(|ts| {
                ts.iter()
                    .map(|t| t.name.as_ref().map(|n| st(&n.0)))
                    .collect()
            });
            assert_eq!(o, t, "{name}");
            assert_eq!(
                ours.allow_auto_topic_creation,
                theirs.allow_auto_topic_creation
            );
        }
        (api::METADATA, Kind::Response) => {
            let ours = md::parse_metadata_response(&msg, ver).unwrap();
            let theirs: kp::MetadataResponse = kp_decode(v);
            let o: Vec<_> = ours
                .brokers
                .iter()
                .map(|b| (b.node_id, b.host.clone(), b.port, b.rack.clone()))
                .collect();
            let t: Vec<_> = theirs
                .brokers
                .iter()
                .map(|b| (b.node_id.0, st(&b.host), b.port, ost(&b.rack)))
                .collect();
            assert_eq!(o, t, "{name}");
            assert_eq!(ours.cluster_id, ost(&theirs.cluster_id));
            assert_eq!(ours.controller_id, theirs.controller_id.0);
            assert_eq!(ours.topics.len(), theirs.topics.len());
            for (o, t) in ours.topics.iter().zip(&theirs.topics) {
                assert_eq!(o.name, t.name.as_ref().map(|n| st(&n.0)));
                assert_eq!(o.topic_id, *t.topic_id.as_bytes());
                assert_eq!(o.error_code, t.error_code);
                let op: Vec<_> = o
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id, p.leader_epoch))
                    .collect();
                let tp: Vec<_> = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id.0, p.leader_epoch))
                    .collect();
                assert_eq!(op, tp, "{name}");
            }
        }
        (api::FIND_COORDINATOR, Kind::Request) => {
            let ours = fc::parse_find_coordinator_request(&msg, ver).unwrap();
            let theirs: kp::FindCoordinatorRequest = kp_decode(v);
            assert_eq!(ours.key, st(&theirs.key));
            assert_eq!(ours.key_type, theirs.key_type);
            let keys: Vec<_> = theirs.coordinator_keys.iter().map(st).collect();
            assert_eq!(ours.coordinator_keys, keys);
        }
        (api::FIND_COORDINATOR, Kind::Response) => {
            let ours = fc::parse_find_coordinator_response(&msg, ver).unwrap();
            let theirs: kp::FindCoordinatorResponse = kp_decode(v);
            if ver < 4 {
                assert_eq!(
                    (ours.node_id, ours.host.clone(), ours.port, ours.error_code),
                    (
                        theirs.node_id.0,
                        st(&theirs.host),
                        theirs.port,
                        theirs.error_code
                    )
                );
            }
            let o: Vec<_> = ours
                .coordinators
                .iter()
                .map(|c| {
                    (
                        c.key.clone(),
                        c.node_id,
                        c.host.clone(),
                        c.port,
                        c.error_code,
                    )
                })
                .collect();
            let t: Vec<_> = theirs
                .coordinators
                .iter()
                .map(|c| (st(&c.key), c.node_id.0, st(&c.host), c.port, c.error_code))
                .collect();
            assert_eq!(o, t, "{name}");
        }
        (api::DESCRIBE_CLUSTER, Kind::Request) => {
            let ours = dc::parse_describe_cluster_request(&msg, ver).unwrap();
            let theirs: kp::DescribeClusterRequest = kp_decode(v);
            assert_eq!(
                ours.include_cluster_authorized_operations,
                theirs.include_cluster_authorized_operations
            );
            assert_eq!(ours.endpoint_type, theirs.endpoint_type);
            assert_eq!(ours.include_fenced_brokers, theirs.include_fenced_brokers);
        }
        (api::DESCRIBE_CLUSTER, Kind::Response) => {
            let ours = dc::parse_describe_cluster_response(&msg, ver).unwrap();
            let theirs: kp::DescribeClusterResponse = kp_decode(v);
            assert_eq!(ours.cluster_id, st(&theirs.cluster_id));
            assert_eq!(ours.controller_id, theirs.controller_id.0);
            assert_eq!(ours.endpoint_type, theirs.endpoint_type);
            let o: Vec<_> = ours
                .brokers
                .iter()
                .map(|b| {
                    (
                        b.broker_id,
                        b.host.clone(),
                        b.port,
                        b.rack.clone(),
                        b.is_fenced,
                    )
                })
                .collect();
            let t: Vec<_> = theirs
                .brokers
                .iter()
                .map(|b| {
                    (
                        b.broker_id.0,
                        st(&b.host),
                        b.port,
                        ost(&b.rack),
                        b.is_fenced,
                    )
                })
                .collect();
            assert_eq!(o, t, "{name}");
        }
        _ => unreachable!(),
    }
}

#[test]
fn implemented_messages_decode_to_the_same_fields_as_kafka_protocol_reads() {
    let all = load();
    let mut compared = 0;
    for v in all
        .iter()
        .filter(|v| v.implemented() && kafka_protocol_knows(v))
    {
        compare_fields(v);
        compared += 1;
    }
    assert!(compared >= 40, "only {compared} compared");
}

// ---------------------------------------------------------------------------
// Known facts about the recorded conversations
// ---------------------------------------------------------------------------

#[test]
fn java_idempotent_producer_sends_acks_all_batches_with_a_producer_id_and_a_valid_crc() {
    let all = load();
    for (v, r) in produce_requests(&all, "java-idempotent-producer") {
        assert_eq!(r.acks, -1, "{}", v.name());
        assert_eq!(r.transactional_id, None);
        for h in batches(&r) {
            assert!(
                h.producer_id >= 0,
                "{}: producer id {}",
                v.name(),
                h.producer_id
            );
            assert!(h.producer_epoch >= 0);
            assert!(h.base_sequence >= 0);
            assert!(h.records_count > 0);
            assert!(!h.is_transactional() && !h.is_control());
            assert_eq!(h.magic, rb::MAGIC_V2);
        }
    }
}

#[test]
fn java_transactional_producer_sends_transactional_batches_under_its_transactional_id() {
    let all = load();
    for (v, r) in produce_requests(&all, "java-transactional-producer") {
        assert_eq!(r.acks, -1, "{}", v.name());
        assert_eq!(r.transactional_id.as_deref(), Some("vectors-tx"));
        for h in batches(&r) {
            assert!(h.producer_id >= 0);
            assert!(h.is_transactional(), "{}", v.name());
        }
    }
}

#[test]
fn librdkafka_idempotent_producer_sends_acks_all_batches_with_a_producer_id_and_a_valid_crc() {
    let all = load();
    for (v, r) in produce_requests(&all, "kcat-idempotent-producer") {
        assert_eq!(r.acks, -1, "{}", v.name());
        for h in batches(&r) {
            assert!(h.producer_id >= 0, "{}", v.name());
            assert!(h.base_sequence >= 0);
            assert!(!h.is_transactional());
        }
    }
}

#[test]
fn batches_carry_the_producer_id_and_epoch_the_coordinator_handed_out() {
    let all = load();
    let mut checked = 0;
    for source in [
        "java-idempotent-producer",
        "java-transactional-producer",
        "java-3.9.2-idempotent-producer",
        "java-3.9.2-transactional-producer",
        "kcat-idempotent-producer",
    ] {
        let mut handed_out = Vec::new();
        for v in of_source(&all, source).into_iter().filter(|v| {
            v.kind == Kind::Response
                && (v.api_key == api::INIT_PRODUCER_ID || v.api_key == api::END_TXN)
        }) {
            let Ok(e) = parse_producer_epoch(&v.message(), v.api_key, v.version) else {
                assert_eq!(v.api_key, api::END_TXN, "{}", v.name());
                continue;
            };
            // The same fields as kafka-protocol reads them.
            let theirs = if v.api_key == api::INIT_PRODUCER_ID {
                let r: kp::InitProducerIdResponse = kp_decode(v);
                (r.error_code, r.producer_id.0, r.producer_epoch)
            } else {
                let r: kp::EndTxnResponse = kp_decode(v);
                (r.error_code, r.producer_id.0, r.producer_epoch)
            };
            assert_eq!((e.error_code, e.producer_id, e.producer_epoch), theirs);
            if e.error_code == 0 {
                handed_out.push((e.producer_id, e.producer_epoch));
            }
        }
        for (v, r) in produce_requests(&all, source) {
            for h in batches(&r) {
                assert!(
                    handed_out.contains(&(h.producer_id, h.producer_epoch)),
                    "{}: batch of {}/{} not among {handed_out:?}",
                    v.name(),
                    h.producer_id,
                    h.producer_epoch
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5);
}

#[test]
fn broker_acknowledges_every_recorded_produce_without_error() {
    let all = load();
    for v in responses(&all, api::PRODUCE) {
        let r = pr::parse_produce_response(&v.message(), v.version).unwrap();
        for p in r.responses.iter().flat_map(|t| &t.partitions) {
            assert_eq!(p.error_code, 0, "{}", v.name());
            assert!(p.base_offset >= 0);
        }
    }
}

#[test]
fn api_versions_responses_keep_their_feature_tagged_fields_byte_for_byte() {
    let all = load();
    let mut flexible = 0;
    for v in responses(&all, api::API_VERSIONS) {
        let msg = v.message();
        let r = av::parse_api_versions_response(&msg, v.version).unwrap();
        assert_eq!(r.error_code, 0);
        let produce = r
            .api_keys
            .iter()
            .find(|a| a.api_key == api::PRODUCE)
            .unwrap();
        assert!(produce.max_version >= pr::MAX_VERSION, "{}", v.name());
        if v.version >= 3 {
            flexible += 1;
            // SupportedFeatures, FinalizedFeaturesEpoch and FinalizedFeatures.
            for tag in [0, 1, 2] {
                assert!(
                    r.tagged_fields.get(tag).is_some(),
                    "{}: tag {tag}",
                    v.name()
                );
            }
            let theirs: kp::ApiVersionsResponse = kp_decode(v);
            let features: Vec<_> = theirs
                .finalized_features
                .iter()
                .map(|f| st(&f.name))
                .collect();
            assert!(
                features.iter().any(|f| f == "metadata.version"),
                "{}: {features:?}",
                v.name()
            );
            let mut enc = BytesMut::new();
            av::encode_api_versions_response(&mut enc, &r, v.version);
            assert_eq!(enc.freeze(), msg);
        }
    }
    assert!(flexible > 0);
}

#[test]
fn metadata_responses_list_the_one_broker_at_its_advertised_address() {
    let all = load();
    let port = capture_info("advertised_port") as i32;
    for v in responses(&all, api::METADATA) {
        let r = md::parse_metadata_response(&v.message(), v.version).unwrap();
        let brokers: Vec<_> = r
            .brokers
            .iter()
            .map(|b| (b.node_id, b.host.as_str(), b.port))
            .collect();
        assert_eq!(brokers, [(1, "127.0.0.1", port)], "{}", v.name());
        if v.version >= 1 {
            assert_eq!(r.controller_id, 1);
        }
    }
}

#[test]
fn find_coordinator_responses_name_the_broker_at_its_advertised_address() {
    let all = load();
    let port = capture_info("advertised_port") as i32;
    let mut found = 0;
    for v in responses(&all, api::FIND_COORDINATOR) {
        let r = fc::parse_find_coordinator_response(&v.message(), v.version).unwrap();
        let answers = if v.version < 4 {
            vec![(r.error_code, r.node_id, r.host, r.port)]
        } else {
            r.coordinators
                .into_iter()
                .map(|c| (c.error_code, c.node_id, c.host, c.port))
                .collect()
        };
        assert!(!answers.is_empty(), "{}", v.name());
        for (error_code, node_id, host, p) in answers {
            // COORDINATOR_NOT_AVAILABLE while the transaction log is being
            // created: the client asks again.
            assert!(matches!(error_code, 0 | 15), "{}: {error_code}", v.name());
            if error_code == 0 {
                assert_eq!((node_id, host.as_str(), p), (1, "127.0.0.1", port));
                found += 1;
            }
        }
    }
    assert!(found > 0);
}

#[test]
fn describe_cluster_response_names_the_cluster_and_its_one_broker() {
    let all = load();
    let port = capture_info("advertised_port") as i32;
    for v in responses(&all, api::DESCRIBE_CLUSTER) {
        let r = dc::parse_describe_cluster_response(&v.message(), v.version).unwrap();
        assert_eq!(r.error_code, 0);
        assert!(!r.cluster_id.is_empty());
        let brokers: Vec<_> = r
            .brokers
            .iter()
            .map(|b| (b.broker_id, b.host.as_str(), b.port))
            .collect();
        assert_eq!(brokers, [(1, "127.0.0.1", port)], "{}", v.name());
    }
}

// ---------------------------------------------------------------------------
// Fuzz seed corpus
// ---------------------------------------------------------------------------

/// Seeds for the fuzz targets in `fuzz/`: every vector in the input format
/// of each target, plus examples encoded by our codec for every version the
/// clients did not speak.
fn fuzz_seeds(all: &[Vector]) -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut seeds: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut add = |target: &'static str, seed: Vec<u8>| seeds.entry(target).or_default().push(seed);

    // frame_header: selector (cap 1 MiB, assorted read sizes) + stream.
    let mut streams = BTreeMap::<&str, Vec<u8>>::new();
    for (i, v) in all.iter().filter(|v| v.kind == Kind::Request).enumerate() {
        let selector = 7 | (((i % 32) as u8) << 3);
        add("frame_header", [&[selector][..], &v.raw[..]].concat());
        streams
            .entry(&v.source)
            .or_default()
            .extend_from_slice(&v.raw);
    }
    for stream in streams.values() {
        add("frame_header", [&[7u8][..], stream].concat());
    }

    for v in all.iter().filter(|v| v.implemented()) {
        let msg = v.message();
        let ver = v.version as u8;
        match (v.api_key, v.kind) {
            (api::PRODUCE, Kind::Request) => {
                add("produce_request", [&[ver - 3][..], &msg[..]].concat());
                let r = pr::parse_produce_request(&msg, v.version).unwrap();
                for p in r.topics.iter().flat_map(|t| &t.partitions) {
                    let batch = p.records.as_ref().unwrap();
                    add("record_batch", batch.to_vec());
                    add("records", batch.to_vec());
                    // The same records under every codec, for the
                    // decompressors behind key dedup.
                    let d = kafka_dedup_proxy::codec::records::decode_batch(batch).unwrap();
                    use kafka_dedup_proxy::codec::records::{Compression as C, encode_batch};
                    for c in [
                        C::Gzip,
                        C::Snappy { xerial: true },
                        C::Snappy { xerial: false },
                        C::Lz4,
                        C::Zstd,
                    ] {
                        let re =
                            encode_batch(&d.header, c, d.header.base_sequence, &d.records).unwrap();
                        add("records", re.to_vec());
                    }
                }
            }
            (api::PRODUCE, Kind::Response) => {
                add("responses", [&[0, ver - 3][..], &msg[..]].concat());
            }
            (api::METADATA, Kind::Response) => {
                add("responses", [&[1, ver][..], &msg[..]].concat());
            }
            (api::FIND_COORDINATOR, Kind::Response) => {
                add("responses", [&[2, ver][..], &msg[..]].concat());
            }
            (api::API_VERSIONS, Kind::Response) => {
                add("responses", [&[3, ver][..], &msg[..]].concat());
            }
            (api::DESCRIBE_CLUSTER, Kind::Response) => {
                add("responses", [&[4, ver][..], &msg[..]].concat());
            }
            _ => {}
        }
    }

    // Encoded examples for every version.
    let tf = |flex: bool| {
        let mut t = TaggedFields::default();
        if flex {
            t.set(7, Bytes::from_static(b"x"));
        }
        t
    };
    let batch = |txn: bool| {
        encode_record_batch(
            4000,
            2,
            17,
            1_700_000_000_000,
            if txn { 0x10 } else { 0 },
            &[
                SimpleRecord {
                    key: Some(Bytes::from_static(b"key")),
                    value: Some(Bytes::from_static(b"value")),
                },
                SimpleRecord {
                    key: None,
                    value: Some(Bytes::from_static(b"second")),
                },
            ],
        )
    };
    add("record_batch", batch(false).to_vec());
    add("record_batch", batch(true).to_vec());
    for v in pr::MIN_VERSION..=pr::MAX_VERSION {
        let flex = v >= 9;
        let topic = if v >= 13 {
            pr::TopicRef::Id([7; 16])
        } else {
            pr::TopicRef::Name("orders".into())
        };
        let req = pr::ProduceRequest {
            transactional_id: (v % 2 == 0).then(|| "tx".to_owned()),
            acks: -1,
            timeout_ms: 30_000,
            topics: vec![pr::TopicProduceData {
                topic: topic.clone(),
                partitions: vec![pr::PartitionProduceData {
                    index: 0,
                    records: Some(batch(v % 2 == 0)),
                    tagged_fields: tf(flex),
                }],
                tagged_fields: TaggedFields::default(),
            }],
            tagged_fields: tf(flex),
        };
        let mut b = BytesMut::new();
        pr::encode_produce_request(&mut b, &req, v);
        add("produce_request", [&[(v - 3) as u8][..], &b[..]].concat());

        let mut partition = pr::PartitionProduceResponse::success(0, 42, -1, 0);
        if v >= 8 {
            partition.record_errors = vec![pr::BatchIndexAndErrorMessage {
                batch_index: 0,
                batch_index_error_message: Some("bad".into()),
                tagged_fields: TaggedFields::default(),
            }];
            partition.error_message = Some("oops".into());
        }
        let mut resp = pr::ProduceResponse {
            responses: vec![pr::TopicProduceResponse {
                topic,
                partitions: vec![partition],
                tagged_fields: TaggedFields::default(),
            }],
            throttle_time_ms: 0,
            tagged_fields: TaggedFields::default(),
        };
        if v >= 10 {
            resp.tagged_fields.set(
                pr::NODE_ENDPOINTS_TAG,
                pr::encode_node_endpoints(&[pr::NodeEndpoint {
                    node_id: 1,
                    host: "broker-1".into(),
                    port: 9092,
                    rack: None,
                    tagged_fields: TaggedFields::default(),
                }]),
            );
        }
        let mut b = BytesMut::new();
        pr::encode_produce_response(&mut b, &resp, v);
        add("responses", [&[0, (v - 3) as u8][..], &b[..]].concat());
    }
    for v in 0..=md::MAX_VERSION {
        let r = md::MetadataResponse {
            throttle_time_ms: 0,
            brokers: vec![md::MetadataBroker {
                node_id: 1,
                host: "broker-1".into(),
                port: 9092,
                rack: (v >= 1).then(|| "r1".to_owned()),
                tagged_fields: tf(v >= 9),
            }],
            cluster_id: (v >= 2).then(|| "cluster".to_owned()),
            controller_id: if v >= 1 { 1 } else { -1 },
            topics: vec![md::MetadataTopic {
                error_code: 0,
                name: Some("orders".into()),
                topic_id: if v >= 10 { [7; 16] } else { [0; 16] },
                is_internal: false,
                partitions: vec![md::MetadataPartition {
                    error_code: 0,
                    partition_index: 0,
                    leader_id: 1,
                    leader_epoch: if v >= 7 { 3 } else { -1 },
                    replica_nodes: vec![1, 2],
                    isr_nodes: vec![1],
                    offline_replicas: if v >= 5 { vec![2] } else { vec![] },
                    tagged_fields: TaggedFields::default(),
                }],
                topic_authorized_operations: if v >= 8 { 0 } else { i32::MIN },
                tagged_fields: TaggedFields::default(),
            }],
            cluster_authorized_operations: i32::MIN,
            error_code: 0,
            tagged_fields: tf(v >= 9),
        };
        let mut b = BytesMut::new();
        md::encode_metadata_response(&mut b, &r, v);
        add("responses", [&[1, v as u8][..], &b[..]].concat());
    }
    for v in 0..=fc::MAX_VERSION {
        let single = v < 4;
        let r = fc::FindCoordinatorResponse {
            throttle_time_ms: 0,
            error_code: 0,
            error_message: None,
            node_id: if single { 1 } else { -1 },
            host: if single {
                "broker-1".into()
            } else {
                String::new()
            },
            port: if single { 9092 } else { -1 },
            coordinators: if single {
                vec![]
            } else {
                vec![fc::Coordinator {
                    key: "group".into(),
                    node_id: 1,
                    host: "broker-1".into(),
                    port: 9092,
                    error_code: 0,
                    error_message: None,
                    tagged_fields: TaggedFields::default(),
                }]
            },
            tagged_fields: tf(v >= 3),
        };
        let mut b = BytesMut::new();
        fc::encode_find_coordinator_response(&mut b, &r, v);
        add("responses", [&[2, v as u8][..], &b[..]].concat());
    }
    for v in 0..=av::MAX_VERSION {
        let mut tagged = TaggedFields::default();
        if v >= 3 {
            tagged.set(1, Bytes::copy_from_slice(&5i64.to_be_bytes()));
        }
        let r = av::ApiVersionsResponse {
            error_code: 0,
            api_keys: [(0, 3, 13), (3, 0, 13), (18, 0, 4)]
                .into_iter()
                .map(|(api_key, min_version, max_version)| av::ApiVersion {
                    api_key,
                    min_version,
                    max_version,
                    tagged_fields: TaggedFields::default(),
                })
                .collect(),
            throttle_time_ms: 0,
            tagged_fields: tagged,
        };
        let mut b = BytesMut::new();
        av::encode_api_versions_response(&mut b, &r, v);
        add("responses", [&[3, v as u8][..], &b[..]].concat());
    }
    for v in 0..=dc::MAX_VERSION {
        let r = dc::DescribeClusterResponse {
            throttle_time_ms: 0,
            error_code: 0,
            error_message: None,
            endpoint_type: 1,
            cluster_id: "cluster".into(),
            controller_id: 1,
            brokers: vec![dc::DescribeClusterBroker {
                broker_id: 1,
                host: "broker-1".into(),
                port: 9092,
                rack: None,
                is_fenced: false,
                tagged_fields: TaggedFields::default(),
            }],
            cluster_authorized_operations: i32::MIN,
            tagged_fields: TaggedFields::default(),
        };
        let mut b = BytesMut::new();
        dc::encode_describe_cluster_response(&mut b, &r, v);
        add("responses", [&[4, v as u8][..], &b[..]].concat());
    }

    // alloc_bounds: the responses as they are (same selectors), Produce
    // requests behind kind 5.
    let alloc_bounds = seeds["responses"]
        .iter()
        .cloned()
        .chain(
            seeds["produce_request"]
                .iter()
                .map(|s| [&[5][..], &s[..]].concat()),
        )
        .collect();
    seeds.insert("alloc_bounds", alloc_bounds);
    seeds
}

/// Whether a seed is a valid input of its target (the fuzzers start from
/// inputs that reach the end of the parsers).
fn seed_is_valid(target: &str, seed: &[u8]) -> bool {
    match target {
        "frame_header" => split_frames(&seed[1..], DEFAULT_MAX_FRAME_BYTES).is_ok_and(|fs| {
            fs.iter()
                .all(|f| header::parse_request_prefix(&f.body()).is_ok())
        }),
        "produce_request" => {
            pr::parse_produce_request(&Bytes::copy_from_slice(&seed[1..]), 3 + i16::from(seed[0]))
                .is_ok()
        }
        "record_batch" => rb::parse_single_batch(seed).is_ok(),
        "records" => {
            kafka_dedup_proxy::codec::records::decode_batch(&Bytes::copy_from_slice(seed)).is_ok()
        }
        "alloc_bounds" if seed[0] == 5 => seed_is_valid("produce_request", &seed[1..]),
        "alloc_bounds" => seed_is_valid("responses", seed),
        "responses" => {
            let (kind, v, body) = (seed[0], i16::from(seed[1]), &seed[2..]);
            match kind {
                0 => pr::parse_produce_response(body, 3 + v).is_ok(),
                1 => md::parse_metadata_response(body, v).is_ok(),
                2 => fc::parse_find_coordinator_response(body, v).is_ok(),
                3 => av::parse_api_versions_response(body, v).is_ok(),
                _ => dc::parse_describe_cluster_response(body, v).is_ok(),
            }
        }
        _ => false,
    }
}

/// With `KDP_FUZZ_SEEDS=<dir>` (as `scripts/fuzz` runs it), writes the
/// seed corpus to `<dir>/<target>/`; always checks that every seed is a
/// valid input of its target.
#[test]
fn fuzz_seed_corpus_holds_valid_inputs_for_every_target() {
    let all = load();
    let seeds = fuzz_seeds(&all);
    assert_eq!(
        seeds.keys().copied().collect::<Vec<_>>(),
        [
            "alloc_bounds",
            "frame_header",
            "produce_request",
            "record_batch",
            "records",
            "responses"
        ]
    );
    for (target, list) in &seeds {
        for (i, seed) in list.iter().enumerate() {
            assert!(seed_is_valid(target, seed), "{target} seed {i}");
        }
    }
    if let Some(dir) = std::env::var_os("KDP_FUZZ_SEEDS") {
        for (target, list) in &seeds {
            let d = Path::new(&dir).join(target);
            fs::create_dir_all(&d).unwrap();
            for (i, seed) in list.iter().enumerate() {
                fs::write(d.join(format!("seed-{i:04}")), seed).unwrap();
            }
        }
    }
}

#[test]
fn recorded_messages_cut_short_are_refused_without_a_panic() {
    for v in load().iter().filter(|v| v.implemented()) {
        let msg = v.message();
        for n in (0..msg.len()).step_by(1 + msg.len() / 64) {
            let cut = msg.slice(..n);
            let r = match (v.api_key, v.kind) {
                (api::PRODUCE, Kind::Request) => {
                    pr::parse_produce_request(&cut, v.version).map(drop)
                }
                (api::PRODUCE, Kind::Response) => {
                    pr::parse_produce_response(&cut, v.version).map(drop)
                }
                (api::METADATA, Kind::Response) => {
                    md::parse_metadata_response(&cut, v.version).map(drop)
                }
                (api::METADATA, Kind::Request) => {
                    md::parse_metadata_request(&cut, v.version).map(drop)
                }
                (api::API_VERSIONS, Kind::Response) => {
                    av::parse_api_versions_response(&cut, v.version).map(drop)
                }
                (api::API_VERSIONS, Kind::Request) => {
                    av::parse_api_versions_request(&cut, v.version).map(drop)
                }
                (api::FIND_COORDINATOR, Kind::Response) => {
                    fc::parse_find_coordinator_response(&cut, v.version).map(drop)
                }
                (api::FIND_COORDINATOR, Kind::Request) => {
                    fc::parse_find_coordinator_request(&cut, v.version).map(drop)
                }
                (api::DESCRIBE_CLUSTER, Kind::Response) => {
                    dc::parse_describe_cluster_response(&cut, v.version).map(drop)
                }
                _ => dc::parse_describe_cluster_request(&cut, v.version).map(drop),
            };
            assert!(r.is_err(), "{} cut at {n}", v.name());
        }
    }
}
