//! Reliability through restarts of the proxy binary itself, on the same
//! ports, while Kafka's VerifiableProducer writes through it: SIGTERM
//! (stop accepting, drain, exit 0) and SIGKILL (gone at once), then
//! started again. Judged with VerifiableConsumer.
//!
//! Each new process starts with an empty cache, so the retries of the
//! requests a restart cut go to the broker: the claim here is no loss and
//! no duplicate across restarts, not answers from the cache.

mod common;

use std::time::{Duration, Instant};

use common::cluster_faults::create_replicated_topic;
use common::proxy_process::ProxyProcess;
use common::report::{Checks, report, secs};
use common::verifiable::{VerifiableProducer, verify_delivery};
use common::*;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Term,
    Kill,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_restarted_with_sigterm_and_sigkill_mid_stream_loses_and_duplicates_nothing() {
    let _g = cluster_lock().read().await;
    let (messages, throughput) = (6000, 300);
    let restarts = [Restart::Term, Restart::Kill, Restart::Term, Restart::Kill];
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-proxy-restart");
    create_replicated_topic(&topic, 3).await;
    let mut proxy =
        ProxyProcess::start(&cluster().bootstrap, &["--shutdown-grace-seconds", "10"]).await;
    let mut producer =
        VerifiableProducer::start(&proxy.bootstrap(), &topic, messages, throughput, &[]).await;
    let mut downtime = Vec::new();
    let mut drains = Vec::new();
    let mut answered = 0.0;
    let mut done = 0;
    for (k, kind) in restarts.iter().enumerate() {
        let progress = messages * (k + 1) / (restarts.len() + 2);
        let ok = producer.wait_acked(progress, Duration::from_secs(60)).await;
        c.check(ok, format!("{progress} acknowledged before restart {k}"));
        let old_pid = proxy.pid();
        answered += proxy.answered().await;
        let down = Instant::now();
        match kind {
            Restart::Term => {
                let status = proxy.sigterm(Duration::from_secs(20)).await;
                let drained = proxy
                    .wait_log(&["all connections drained"], Duration::from_secs(1))
                    .await
                    .is_some();
                c.check(
                    status.is_some_and(|s| s.success()),
                    format!("restart {k}: SIGTERM exits 0 ({status:?})"),
                );
                c.check(
                    drained,
                    format!("restart {k}: SIGTERM drains its connections"),
                );
                drains.push(json!({"exit": status.map(|s| s.to_string()), "drained": drained}));
            }
            Restart::Kill => proxy.sigkill().await,
        }
        proxy.spawn().await;
        downtime.push(secs(down.elapsed()));
        let restarted = proxy.pid().is_some() && proxy.pid() != old_pid;
        c.check(
            restarted,
            format!(
                "restart {k}: a new process ({old_pid:?} -> {:?})",
                proxy.pid()
            ),
        );
        done += usize::from(restarted);
    }
    c.eq(proxy.starts, restarts.len() + 1, "processes started");
    let out = producer.finish(Duration::from_secs(150)).await;
    answered += proxy.answered().await;
    let verdict = verify_delivery(&proxy.bootstrap(), &topic, &out.acked).await;
    verdict.check(&mut c, &out, messages);
    let terms = restarts.iter().filter(|r| **r == Restart::Term).count();
    let mut r = verdict.json();
    r["faults"] = json!(format!(
        "{done} restarts ({terms} SIGTERM, {} SIGKILL), down {:?} s",
        restarts.len() - terms,
        downtime
    ));
    r["fault_count"] = json!(done);
    r["proxy_down_s"] = json!(downtime);
    r["drains"] = json!(drains);
    r["send_errors"] = json!(out.errors.len());
    // summed over the processes; a SIGKILLed one's count is read just
    // before the signal
    r["answered_by_proxy"] = json!(answered);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("proxy-restart", r, c);
}
