//! A minimal plain TCP forwarder: the baseline `scripts/bench` measures the
//! proxy against. It pays the same extra hop as the proxy (two sockets and
//! a copy per byte) but reads nothing of the Kafka protocol.
//!
//!   cargo run --release --example tcp_forwarder -- LISTEN UPSTREAM [LISTEN UPSTREAM ...]
//!
//! Every LISTEN address (host:port) is forwarded to the UPSTREAM that
//! follows it. Each accepted connection opens one upstream connection;
//! both sockets get TCP_NODELAY (as the proxy's do) and bytes are copied
//! both ways with `tokio::io::copy_bidirectional_with_sizes` (64 KiB
//! buffers, the size of the proxy's write buffers) on tokio's multi-thread
//! runtime (one worker per core, as the proxy).

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::io::copy_bidirectional_with_sizes;
use tokio::net::{TcpListener, TcpStream};

const BUFFER: usize = 64 * 1024;

async fn serve(listener: TcpListener, upstream: String) {
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tcp_forwarder: accept failed: {e}");
                continue;
            }
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let mut server = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tcp_forwarder: {peer}: cannot connect to {upstream}: {e}");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER).await;
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        eprintln!("usage: tcp_forwarder LISTEN UPSTREAM [LISTEN UPSTREAM ...]");
        return ExitCode::from(2);
    }
    let mut tasks = Vec::new();
    for pair in args.chunks(2) {
        let listen: SocketAddr = match pair[0].parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("tcp_forwarder: LISTEN '{}': {e}", pair[0]);
                return ExitCode::from(2);
            }
        };
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tcp_forwarder: cannot listen on {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        eprintln!("tcp_forwarder: {listen} -> {}", pair[1]);
        tasks.push(tokio::spawn(serve(listener, pair[1].clone())));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = futures_all(tasks) => {}
    }
    ExitCode::SUCCESS
}

/// Waits for every listener task (they only end on a panic).
async fn futures_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
