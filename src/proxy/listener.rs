//! Accept loops: the bootstrap listener and one per broker. A semaphore
//! caps the connections served at once; accept errors (EMFILE ...) back
//! off instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::Shared;
use super::connection::{self, Target};
use crate::metrics as kdp_metrics;

pub async fn run_listener(listener: TcpListener, target: Target, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((socket, peer)) => {
                backoff = Duration::from_millis(10);
                let Ok(permit) = Arc::clone(&shared.conn_limit).try_acquire_owned() else {
                    metrics::counter!(kdp_metrics::CONNECTIONS_REJECTED_TOTAL).increment(1);
                    tracing::warn!(%peer, limit = shared.config.max_connections, "connection limit reached; closing new connection");
                    drop(socket);
                    continue;
                };
                let shared2 = Arc::clone(&shared);
                shared.tracker.spawn(async move {
                    connection::serve(socket, peer, target, shared2).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = target.label(), "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::debug!(listener = target.label(), "listener closed");
}
