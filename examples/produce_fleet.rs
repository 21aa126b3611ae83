//! Many producers at once: throughput and latency of a fleet of
//! connections.
//!
//!   cargo run --release --example produce_fleet -- BOOTSTRAP TOPIC CONNECTIONS SECONDS [IN_FLIGHT] [BATCH] [SIZE] [PARTITIONS]
//!
//! Opens CONNECTIONS connections to BOOTSTRAP, each an idempotent producer
//! of its own (InitProducerId, then Produce v12 with acks=all) writing to
//! partition `i % PARTITIONS` (default 3) of TOPIC. Once every one is set
//! up they all start together, and each keeps IN_FLIGHT requests
//! outstanding (default one) of BATCH records (default 10) of SIZE bytes
//! (default 1024), as fast as answers come, for SECONDS s. The first
//! second is warm-up: throughput counts the records acknowledged after
//! it, latency the requests sent after it (from the write to the complete
//! answer). With a 1-node cluster the bootstrap broker leads every
//! partition, so the bootstrap connection is the produce connection. One
//! thread: the load takes at most one core. Prints one JSON object on
//! stdout.

#[path = "support/producer.rs"]
mod producer;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use producer::{init_producer_id, percentile, produce_frame, produce_outcome, read_frame};

struct Settings {
    bootstrap: String,
    topic: String,
    in_flight: usize,
    batch: u64,
    partitions: u64,
    value: Bytes,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    acked_records: u64,
    /// Acknowledged over the whole run, warm-up and drain included.
    all_records: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!(
            "usage: produce_fleet BOOTSTRAP TOPIC CONNECTIONS SECONDS [IN_FLIGHT] [BATCH] [SIZE] [PARTITIONS]"
        );
        return ExitCode::from(2);
    }
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (connections, seconds) = (num(2, 100).max(1), num(3, 20).max(2));
    let size = num(6, 1024);
    let settings = Arc::new(Settings {
        bootstrap: args[0].clone(),
        topic: args[1].clone(),
        in_flight: num(4, 1).clamp(1, 5) as usize,
        batch: num(5, 10).max(1),
        partitions: num(7, 3).max(1),
        value: Bytes::from(vec![b'x'; size as usize]),
    });
    match run(settings, connections, seconds, size).await {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("produce_fleet: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    settings: Arc<Settings>,
    connections: u64,
    seconds: u64,
    size: u64,
) -> Result<String, String> {
    // Set every producer up first (a few at a time), then start them all.
    let mut ready = Vec::with_capacity(connections as usize);
    for i in 0..connections {
        let mut stream = TcpStream::connect(&settings.bootstrap)
            .await
            .map_err(|e| format!("connection {i}: connect {}: {e}", settings.bootstrap))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (pid, epoch) = init_producer_id(&mut stream)
            .await
            .map_err(|e| format!("connection {i}: {e}"))?;
        ready.push((i, stream, pid, epoch));
    }
    let start = Instant::now() + Duration::from_millis(200);
    let measured_from = start + Duration::from_secs(1);
    let end = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, stream, pid, epoch) in ready {
        let settings = settings.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(start).await;
            producer_loop(&settings, i, stream, pid, epoch, measured_from, end).await
        });
    }
    let mut total = Tally::default();
    // A connection that fails (closed by the other end, a refused write)
    // ends that producer only; how many did is part of the result.
    let mut failed = 0u64;
    while let Some(done) = tasks.join_next().await {
        let t = match done.map_err(|e| e.to_string())? {
            Ok(t) => t,
            Err(e) => {
                if failed < 5 {
                    eprintln!("produce_fleet: {e}");
                }
                failed += 1;
                continue;
            }
        };
        total.acked_records += t.acked_records;
        total.all_records += t.all_records;
        total.errors += t.errors;
        total.latencies_us.extend(t.latencies_us);
    }
    let lat = &mut total.latencies_us;
    lat.sort_unstable();
    let window = (end - measured_from).as_secs_f64();
    let records_per_s = total.acked_records as f64 / window;
    Ok(format!(
        "{{\"connections\":{connections},\"in_flight\":{},\"records_per_request\":{},\
         \"record_size\":{size},\"seconds\":{window:.1},\"acked_records\":{},\
         \"all_acked_records\":{},\"records_per_s\":{records_per_s:.0},\"mb_per_s\":{:.2},\"requests\":{},\"errors\":{},\
         \"failed_connections\":{failed},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        settings.in_flight,
        settings.batch,
        total.acked_records,
        total.all_records,
        records_per_s * size as f64 / 1e6,
        lat.len(),
        total.errors,
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        percentile(lat, 99.9),
        lat.last().copied().unwrap_or(0),
    ))
}

/// One producer: IN_FLIGHT requests outstanding until `end`, then the
/// answers still owed.
async fn producer_loop(
    settings: &Settings,
    i: u64,
    stream: TcpStream,
    pid: i64,
    epoch: i16,
    measured_from: Instant,
    end: Instant,
) -> Result<Tally, String> {
    let (mut r, mut w) = stream.into_split();
    let permits = Arc::new(Semaphore::new(settings.in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<(i32, Instant)>();
    let batch = settings.batch;
    let reader_permits = permits.clone();
    let reader = tokio::spawn(async move {
        let mut tally = Tally::default();
        while let Some((corr, sent)) = rx.recv().await {
            let body = read_frame(&mut r).await.map_err(|e| e.to_string())?;
            let now = Instant::now();
            reader_permits.add_permits(1);
            let (got, failed) = produce_outcome(&body)?;
            if got != corr {
                return Err(format!("correlation {got} for request {corr}"));
            }
            tally.errors += failed;
            if failed == 0 {
                tally.all_records += batch;
            }
            if failed == 0 && now >= measured_from && now <= end {
                tally.acked_records += batch;
            }
            if sent >= measured_from {
                tally.latencies_us.push((now - sent).as_micros() as u64);
            }
        }
        Ok::<_, String>(tally)
    });
    let partition = (i % settings.partitions) as i32;
    let mut sequence = 0i32;
    let mut corr = 2i32;
    loop {
        let permit = tokio::select! {
            p = permits.acquire() => p.map_err(|e| e.to_string())?,
            _ = tokio::time::sleep_until(end) => break,
        };
        permit.forget();
        if Instant::now() >= end {
            break;
        }
        let frame = produce_frame(
            &settings.topic,
            partition,
            pid,
            epoch,
            sequence,
            &settings.value,
            batch,
            corr,
        );
        sequence += batch as i32;
        if tx.send((corr, Instant::now())).is_err() {
            break; // the reader failed: its error is returned below
        }
        corr += 1;
        if let Err(e) = w.write_all(&frame).await {
            return Err(format!("connection {i}: write: {e}"));
        }
    }
    drop(tx);
    reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connection {i}: {e}"))
}
