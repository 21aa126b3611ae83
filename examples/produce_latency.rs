//! Produce latency with microsecond resolution, at a fixed rate.
//!
//!   cargo run --release --example produce_latency -- BOOTSTRAP TOPIC [RATE] [SECONDS] [BATCH] [SIZE]
//!
//! An idempotent producer on one connection to BOOTSTRAP (InitProducerId,
//! then Produce v12 with acks=all): RATE records/s (default 2000) in
//! batches of BATCH records (default 10) of SIZE bytes (default 1024),
//! round-robin over partitions 0..2 of TOPIC, for SECONDS s (default 25;
//! the first second is warm-up and not counted). Requests go out on a fixed
//! schedule whatever the answers do (pipelined, as a real producer does),
//! and each latency runs from the request's scheduled time to its complete
//! response, so a stall is counted in full (no coordinated omission).
//!
//! Kafka's ProducerPerformance reports percentiles in whole milliseconds;
//! this measures what a proxy adds to a request's round trip with
//! microseconds. With a 1-node cluster the bootstrap broker leads every
//! partition, so the bootstrap connection is the produce connection.
//! Prints one JSON object on stdout.

#[path = "support/producer.rs"]
mod producer;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use producer::{init_producer_id, percentile, produce_frame, produce_outcome, read_frame};

const PARTITIONS: i32 = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: produce_latency BOOTSTRAP TOPIC [RATE] [SECONDS] [BATCH] [SIZE]");
        return ExitCode::from(2);
    }
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (bootstrap, topic) = (args[0].clone(), args[1].clone());
    let (rate, seconds, batch, size) = (num(2, 2000), num(3, 25), num(4, 10), num(5, 1024));
    match run(&bootstrap, &topic, rate, seconds, batch.max(1), size).await {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("produce_latency: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    seconds: u64,
    batch: u64,
    size: u64,
) -> Result<String, String> {
    let mut stream = TcpStream::connect(bootstrap)
        .await
        .map_err(|e| format!("connect {bootstrap}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (pid, epoch) = init_producer_id(&mut stream).await?;
    let (mut r, mut w) = stream.into_split();

    let requests = rate * seconds / batch;
    let period = Duration::from_nanos(1_000_000_000 * batch / rate.max(1));
    let warmup = rate / batch; // the first second
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i32, Instant)>();

    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(requests as usize);
        let mut errors = 0u64;
        let mut n = 0u64;
        while let Some((corr, scheduled)) = rx.recv().await {
            let body = read_frame(&mut r).await.map_err(|e| e.to_string())?;
            let elapsed = scheduled.elapsed();
            let (got, failed) = produce_outcome(&body)?;
            if got != corr {
                return Err(format!("correlation {got} for request {corr}"));
            }
            errors += failed;
            if n >= warmup {
                lat.push(elapsed.as_micros() as u64);
            }
            n += 1;
        }
        Ok::<_, String>((lat, errors))
    });

    let value = Bytes::from(vec![b'x'; size as usize]);
    let mut sequences = [0i32; PARTITIONS as usize];
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for k in 0..requests {
        let scheduled = tick.tick().await;
        let partition = (k % PARTITIONS as u64) as i32;
        let seq = &mut sequences[partition as usize];
        let corr = 2 + k as i32;
        let frame = produce_frame(topic, partition, pid, epoch, *seq, &value, batch, corr);
        *seq += batch as i32;
        tx.send((corr, scheduled))
            .map_err(|_| "the response reader stopped".to_string())?;
        w.write_all(&frame).await.map_err(|e| e.to_string())?;
    }
    drop(tx);
    let (mut lat, errors) = reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading responses: {e}"))?;
    lat.sort_unstable();
    let avg = lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64;
    Ok(format!(
        "{{\"requests\":{},\"records_per_request\":{batch},\"rate\":{rate},\"errors\":{errors},\
         \"avg_us\":{avg:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        lat.last().copied().unwrap_or(0),
    ))
}
