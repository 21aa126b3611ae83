//! The transparent proxy against a real 3-node KRaft cluster: real clients
//! (the Java client, librdkafka via kcat) and raw requests decoded by the
//! independent `kafka-protocol` crate.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use kafka_protocol::messages::{
    ApiVersionsRequest, DescribeClusterRequest, FindCoordinatorRequest, MetadataRequest,
    ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncWriteExt;

fn assert_proxy_address(p: &TestProxy, node_id: i32, host: &str, port: i32, what: &str) {
    assert_eq!(host, "127.0.0.1", "{what}: host of node {node_id}");
    assert_eq!(
        port,
        p.port_base as i32 + 1 + node_id,
        "{what}: node {node_id} must be served on the proxy's port for it"
    );
    let real = cluster()
        .broker_ports
        .iter()
        .map(|p| *p as i32)
        .collect::<Vec<_>>();
    assert!(
        !real.contains(&port),
        "{what}: real broker port {port} leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_address_a_client_sees_is_a_proxy_address() {
    let _g = cluster_lock().read().await;
    let p = start_proxy(&[]).await;
    let group = unique("addr-group");

    // Metadata at old, flexible and topic-id versions, on the bootstrap
    // listener and on every broker listener.
    let mut listeners = vec![p.bootstrap.clone()];
    listeners.extend((1..=3).map(|id| p.broker_addr(id)));
    let metadata_max = advertised_max(&p.bootstrap, 3).await;
    for addr in &listeners {
        for v in [1i16, 4, 8, 9, 12, 13]
            .into_iter()
            .filter(|v| *v <= metadata_max)
        {
            let mut conn = RawConn::connect(addr).await;
            let resp = conn
                .call(v, &MetadataRequest::default().with_topics(None))
                .await;
            assert_eq!(resp.brokers.len(), 3, "Metadata v{v} via {addr}");
            for b in &resp.brokers {
                assert_proxy_address(&p, b.node_id.0, &b.host, b.port, &format!("Metadata v{v}"));
            }
        }
    }

    // FindCoordinator: single (v1-v3) and batched (v4+) answers.
    let mut conn = RawConn::connect(&p.bootstrap).await;
    for v in [1i16, 2, 3] {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.clone()))
            .with_key_type(0);
        let mut resp = conn.call(v, &req).await;
        for _ in 0..30 {
            if resp.error_code == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            resp = conn.call(v, &req).await;
        }
        assert_eq!(resp.error_code, 0, "FindCoordinator v{v}");
        assert_proxy_address(
            &p,
            resp.node_id.0,
            &resp.host,
            resp.port,
            &format!("FindCoordinator v{v}"),
        );
    }
    let find_coordinator_max = advertised_max(&p.bootstrap, 10).await;
    for v in [4i16, 5, 6]
        .into_iter()
        .filter(|v| *v <= find_coordinator_max)
    {
        let req = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![
                StrBytes::from_string(group.clone()),
                StrBytes::from_string(unique("g2")),
            ]);
        let resp = conn.call(v, &req).await;
        assert_eq!(resp.coordinators.len(), 2);
        for c in &resp.coordinators {
            if c.error_code == 0 {
                assert_proxy_address(
                    &p,
                    c.node_id.0,
                    &c.host,
                    c.port,
                    &format!("FindCoordinator v{v}"),
                );
            }
        }
    }

    // DescribeCluster v0-v2.
    let describe_cluster_max = advertised_max(&p.bootstrap, 60).await;
    for v in [0i16, 1, 2]
        .into_iter()
        .filter(|v| *v <= describe_cluster_max)
    {
        let resp = conn.call(v, &DescribeClusterRequest::default()).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.brokers.len(), 3);
        for b in &resp.brokers {
            assert_proxy_address(
                &p,
                b.broker_id.0,
                &b.host,
                b.port,
                &format!("DescribeCluster v{v}"),
            );
        }
    }

    // ApiVersions: clamped where the proxy rewrites, everything else kept.
    let resp = conn
        .call(
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("kdp-test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .await;
    let max = |k: i16| {
        resp.api_keys
            .iter()
            .find(|a| a.api_key == k)
            .map(|a| a.max_version)
    };
    assert_eq!(resp.error_code, 0);
    assert!(max(1).unwrap() <= 15, "Fetch clamped below node endpoints");
    assert!(max(18).unwrap() <= 4, "ApiVersions clamped");
    assert!(max(3).unwrap() <= 13);
    assert_eq!(max(78), None, "ShareFetch not offered");
    assert!(max(22).is_some(), "InitProducerId kept");
    assert!(
        !resp.finalized_features.is_empty(),
        "finalized features (tagged) survive the rewrite"
    );

    // The Java admin client and consumer: nodes, controller, coordinator.
    let out = harness(&["cluster", "--bootstrap", &p.bootstrap, "--group", &group]).await;
    let mut seen = Vec::new();
    for key in ["nodes", "metadata_nodes"] {
        for n in out[key].as_array().unwrap() {
            seen.push(n.as_str().unwrap().to_string());
        }
    }
    seen.push(out["coordinator"].as_str().unwrap().to_string());
    let proxy_ports: HashSet<String> = (1..=3).map(|id| p.broker_addr(id)).collect();
    for s in &seen {
        assert!(
            proxy_ports.contains(s),
            "Java client saw {s}, not a proxy address ({out})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_idempotent_producer_and_consumer_group_see_every_record_exactly_once() {
    let _g = cluster_lock().read().await;
    let p = start_proxy(&[]).await;
    let topic = unique("java");
    create_topic(&topic, 3).await;
    let n = 3000;
    let out = harness(&[
        "produce",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--count",
        &n.to_string(),
        "--size",
        "200",
        "--acks",
        "all",
        "--idempotence",
        "true",
        "--key-prefix",
        "k",
    ])
    .await;
    assert_eq!(out["acked"], n, "{out}");
    assert!(out["errors"].as_array().unwrap().is_empty(), "{out}");

    let group = unique("java-group");
    let out = harness(&[
        "consume",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--group",
        &group,
        "--expect",
        &n.to_string(),
        "--timeout-ms",
        "60000",
        "--from-beginning",
        "--no-records",
    ])
    .await;
    assert_eq!(out["count"], n, "{out}");
    assert_eq!(out["duplicates"], 0, "{out}");
    let committed: i64 = out["committed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(
        committed, n as i64,
        "group offsets committed through the proxy: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_produces_and_consumes_every_record_exactly_once() {
    let _g = cluster_lock().read().await;
    let p = start_proxy(&[]).await;
    let topic = unique("rdkafka");
    create_topic(&topic, 3).await;
    let n = 2000;
    let input: String = (0..n).map(|i| format!("rd-{i}\n")).collect();
    let mut child = tokio::process::Command::new("kcat")
        .args([
            "-b",
            &p.bootstrap,
            "-P",
            "-t",
            &topic,
            "-X",
            "enable.idempotence=true",
            "-X",
            "acks=all",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "kcat producer failed");

    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("kcat")
            .args([
                "-b",
                &p.bootstrap,
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-c",
                &n.to_string(),
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let distinct: HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(lines.len(), n, "records consumed");
    assert_eq!(distinct.len(), n, "no duplicates");
    assert!((0..n).all(|i| distinct.contains(format!("rd-{i}").as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transaction_stays_invisible_to_read_committed_consumers() {
    let _g = cluster_lock().read().await;
    let p = start_proxy(&[]).await;
    let topic = unique("txn");
    create_topic(&topic, 3).await;
    let committed = harness(&[
        "produce",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--count",
        "200",
        "--transactional-id",
        &unique("tx-commit"),
        "--value-prefix",
        "committed",
    ])
    .await;
    assert_eq!(committed["acked"], 200, "{committed}");
    let aborted = harness(&[
        "produce",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--count",
        "100",
        "--transactional-id",
        &unique("tx-abort"),
        "--abort",
        "--value-prefix",
        "aborted",
    ])
    .await;
    assert!(
        aborted["errors"].as_array().unwrap().is_empty(),
        "{aborted}"
    );

    let rc = harness(&[
        "consume",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--isolation",
        "read_committed",
        "--from-beginning",
        "--timeout-ms",
        "20000",
    ])
    .await;
    assert_eq!(rc["count"], 200, "{rc}");
    for r in rc["records"].as_array().unwrap() {
        assert!(
            r["v"].as_str().unwrap().starts_with("committed-"),
            "aborted record visible: {r}"
        );
    }
    let ru = harness(&[
        "consume",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--isolation",
        "read_uncommitted",
        "--from-beginning",
        "--timeout-ms",
        "20000",
        "--no-records",
    ])
    .await;
    assert_eq!(
        ru["count"], 300,
        "read_uncommitted sees the aborted records too: {ru}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_come_back_in_order_with_their_correlation_ids() {
    let _g = cluster_lock().read().await;
    let p = start_proxy(&[]).await;
    let topic = unique("pipeline");
    create_topic(&topic, 1).await;
    let mut conn = RawConn::connect(&p.bootstrap).await;
    // Broker 1..3 answer at different speeds; a mix of APIs, all written
    // before any answer is read.
    let mut expected = Vec::new();
    for i in 0..60 {
        let corr = match i % 3 {
            0 => {
                conn.send(9, &MetadataRequest::default().with_topics(None))
                    .await
            }
            1 => conn.send(2, &ApiVersionsRequest::default()).await,
            _ => conn.send(0, &DescribeClusterRequest::default()).await,
        };
        expected.push((corr, i % 3));
    }
    for (corr, kind) in expected {
        let (got, _) = match kind {
            0 => {
                let (c, r) = conn.recv::<MetadataRequest>(9).await;
                assert_eq!(r.brokers.len(), 3);
                (c, ())
            }
            1 => (conn.recv::<ApiVersionsRequest>(2).await.0, ()),
            _ => (conn.recv::<DescribeClusterRequest>(0).await.0, ()),
        };
        assert_eq!(got, corr, "responses must come back in request order");
    }
    // An acks=0 produce in the middle gets no answer and shifts nothing.
    let a = conn
        .send(9, &MetadataRequest::default().with_topics(None))
        .await;
    let req = ProduceRequest::default().with_acks(0).with_timeout_ms(5000);
    conn.send(9, &req).await;
    let b = conn.send(2, &ApiVersionsRequest::default()).await;
    assert_eq!(conn.recv::<MetadataRequest>(9).await.0, a);
    assert_eq!(conn.recv::<ApiVersionsRequest>(2).await.0, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_its_own_connection() {
    let _g = cluster_lock().read().await;
    let p = start_proxy(&["--max-frame-bytes", "1048576"]).await;
    let mut healthy = RawConn::connect(&p.bootstrap).await;
    assert_eq!(
        healthy
            .call(1, &MetadataRequest::default().with_topics(None))
            .await
            .brokers
            .len(),
        3
    );

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length over the cap", 2_000_000i32.to_be_bytes().to_vec()),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("frame shorter than a header", vec![0, 0, 0, 3, 0, 0, 0]),
        ("Fetch above the advertised version", {
            let mut v = vec![0, 0, 0, 12, 0, 1, 0, 99, 0, 0, 0, 1, 0, 0, 0, 0];
            v.truncate(16);
            v
        }),
        (
            "ShareFetch, which the proxy does not offer",
            vec![0, 0, 0, 10, 0, 78, 0, 0, 0, 0, 0, 1, 0, 0],
        ),
        ("garbage produce body", {
            let mut v = vec![0, 0, 0, 16, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0];
            v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
            v
        }),
    ];
    for (what, bytes) in cases {
        let mut bad = RawConn::connect(&p.bootstrap).await;
        bad.send_raw(&bytes).await.unwrap();
        assert!(
            bad.closed_within(Duration::from_secs(10)).await,
            "{what}: connection must be closed"
        );
        let resp = healthy
            .call(1, &MetadataRequest::default().with_topics(None))
            .await;
        assert_eq!(
            resp.brokers.len(),
            3,
            "{what}: other connections keep working"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_a_follower_names_the_new_leader_by_its_proxy_address() {
    let _g = cluster_lock().read().await;
    let p = start_proxy(&[]).await;
    let topic = unique("not-leader");
    create_topic(&topic, 1).await;
    let out = harness(&[
        "topic-leader",
        "--bootstrap",
        &cluster().bootstrap,
        "--topic",
        &topic,
    ])
    .await;
    let leader = out["leader"].as_i64().unwrap() as i32;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let batch = kafka_dedup_proxy::codec::record_batch::encode_record_batch(
        -1,
        -1,
        -1,
        0,
        0,
        &[kafka_dedup_proxy::codec::record_batch::SimpleRecord {
            key: None,
            value: Some(bytes::Bytes::from_static(b"x")),
        }],
    );
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    let mut conn = RawConn::connect(&p.broker_addr(follower)).await;
    let produce_max = advertised_max(&p.bootstrap, 0).await;
    for v in [10i16, 11, 12, 13]
        .into_iter()
        .filter(|v| *v <= produce_max)
    {
        if v >= 13 {
            // v13 names topics by id; covered by the Java client's traffic.
            continue;
        }
        let resp = conn.call(v, &req).await;
        let part = &resp.responses[0].partition_responses[0];
        assert_eq!(part.error_code, 6, "NOT_LEADER_OR_FOLLOWER from a follower");
        assert!(
            !resp.node_endpoints.is_empty(),
            "Produce v{v} names the leader (KIP-951)"
        );
        for e in &resp.node_endpoints {
            assert_proxy_address(
                &p,
                e.node_id.0,
                &e.host,
                e.port,
                &format!("Produce v{v} NodeEndpoints"),
            );
        }
    }
}
