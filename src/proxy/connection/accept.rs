//! The first stage of a connection: the TLS handshake with the client (its
//! verified certificate, if any, scopes the dedup cache), the connection to
//! the broker the listener stands for, and the split into stream halves.
//!
//! With SNI routing, a TLS connection on the bootstrap listener stands for
//! the broker its SNI names: the ClientHello is read first, its server name
//! routed ([`crate::proxy::sni`]), and only then is the handshake completed
//! — or refused with a TLS alert, before any broker connection opens.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::{Link, Target};
use crate::dedup::cache::Scope;
use crate::proxy::Shared;
use crate::proxy::error::{BrokerFault, ClientFault, Close};
use crate::proxy::io::{BrokerStream, dial_broker};
use crate::proxy::probe;
use crate::proxy::sni::{Route, SniRefusal, SniRoutes};
use crate::proxy::tls::{self, Hello, ServerTls};

/// The client side of a connection, after the TLS handshake if any.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

pub(super) async fn run(
    client: TcpStream,
    peer: SocketAddr,
    mut target: Target,
    shared: Arc<Shared>,
    id: u64,
) -> Result<(), Close> {
    let _ = client.set_nodelay(true);
    let mut scope = Scope::Anonymous;
    let client = match &shared.tls_server {
        None => ClientStream::Plain(client),
        Some(t) => {
            // A failed handshake closes before any broker connection opens.
            let s = match (&shared.sni, target) {
                (Some(sni), Target::Bootstrap) => {
                    let (s, routed) = sni_handshake(t, sni, client, &shared).await?;
                    target = routed;
                    s
                }
                _ => t.accept(client).await.map_err(ClientFault::TlsHandshake)?,
            };
            if let Some(cert) = s.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                // A certificate the client CA verified: until SASL names
                // a user, the connection is scoped to its subject.
                scope = Scope::Certificate(Arc::from(tls::client_identity(cert)));
            }
            ClientStream::Tls(Box::new(s))
        }
    };
    let upstream = connect_upstream(target, &shared)
        .await
        .ok_or(BrokerFault::Connect)?;
    let link = Link {
        peer,
        shared,
        id,
        scope,
    };
    // Plain TCP keeps the owned halves (no lock between reader and
    // writer); only TLS streams, whose halves share one session, are split
    // through tokio::io::split.
    match (client, upstream) {
        (ClientStream::Plain(c), BrokerStream::Plain(u)) => {
            let (cr, cw) = c.into_split();
            let (ur, uw) = u.into_split();
            link.relay(cr, cw, ur, uw).await
        }
        (ClientStream::Plain(c), BrokerStream::Tls(u)) => {
            let (cr, cw) = c.into_split();
            let (ur, uw) = tokio::io::split(*u);
            link.relay(cr, cw, ur, uw).await
        }
        (ClientStream::Tls(c), BrokerStream::Plain(u)) => {
            let (cr, cw) = tokio::io::split(*c);
            let (ur, uw) = u.into_split();
            link.relay(cr, cw, ur, uw).await
        }
        (ClientStream::Tls(c), BrokerStream::Tls(u)) => {
            let (cr, cw) = tokio::io::split(*c);
            let (ur, uw) = tokio::io::split(*u);
            link.relay(cr, cw, ur, uw).await
        }
    }
    Ok(())
}

/// Reads the ClientHello, routes its SNI, and completes the handshake for
/// a name it routes; any other name gets a TLS alert and the connection
/// closes. A broker name the registry does not know gets one Metadata
/// refresh first (a broker added since the last probe).
async fn sni_handshake(
    tls: &ServerTls,
    sni: &SniRoutes,
    client: TcpStream,
    shared: &Arc<Shared>,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Target), Close> {
    let hello = tls
        .read_hello(client)
        .await
        .map_err(ClientFault::TlsHandshake)?;
    let target = match route(sni, &hello, shared).await {
        Ok(t) => t,
        Err(refusal) => {
            tls.refuse(hello).await;
            return Err(ClientFault::Sni(refusal).into());
        }
    };
    let s = tls
        .complete(hello)
        .await
        .map_err(ClientFault::TlsHandshake)?;
    Ok((s, target))
}

async fn route(sni: &SniRoutes, hello: &Hello, shared: &Arc<Shared>) -> Result<Target, SniRefusal> {
    let node_id = match sni.route(hello.server_name())? {
        Route::Bootstrap => return Ok(Target::Bootstrap),
        Route::Broker(id) => id,
    };
    if shared.brokers.upstream_of(node_id).is_none() {
        probe::refresh_brokers(shared, tokio::time::Instant::now()).await;
    }
    if shared.brokers.upstream_of(node_id).is_none() {
        return Err(SniRefusal::UnknownNode {
            name: hello.server_name().unwrap_or_default().to_string(),
            node_id,
        });
    }
    Ok(Target::Broker(node_id))
}

/// Dials the broker the listener stands for, or the bootstrap servers in
/// turn.
async fn connect_upstream(target: Target, shared: &Shared) -> Option<BrokerStream> {
    let candidates = match target {
        Target::Bootstrap => shared.bootstrap_rotation(),
        Target::Broker(node) => match shared.brokers.upstream_of(node) {
            Some(a) => vec![a],
            None => {
                tracing::warn!(node, "no upstream address known for broker");
                return None;
            }
        },
    };
    for addr in candidates {
        match dial_broker(
            &addr,
            shared.tls_upstream.as_deref(),
            shared.config.upstream_connect_timeout(),
        )
        .await
        {
            Ok(s) => return Some(s),
            Err(e) => tracing::warn!(upstream = %addr, error = %e, "upstream connection failed"),
        }
    }
    None
}
