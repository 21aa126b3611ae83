//! TLS on both sides of the proxy, each configured on its own.
//!
//! * Termination ([`ServerTls`]): every client listener (bootstrap and per
//!   broker) accepts TLS with a certificate chain and key read from PEM
//!   files. A background task re-reads the files every few seconds and
//!   swaps the certificate behind a [`ResolvesServerCert`], so a renewed
//!   certificate (cert-manager, a rotated Secret) is served to new
//!   connections without a restart; a new file that does not load is
//!   logged and the old certificate stays. With a client CA, clients must
//!   present a certificate that chains to it.
//! * Origination ([`UpstreamTls`]): connections to brokers (and the
//!   proxy's own Metadata probe) speak TLS, verified against a CA bundle
//!   (or the system roots), with the broker host the proxy dials as the
//!   server name unless overridden; optionally with a client certificate.
//! * SNI routing ([`ServerTls::read_hello`]): the bootstrap listener reads
//!   the ClientHello first, routes by its server name, then completes the
//!   handshake ([`ServerTls::complete`]) or refuses it with a TLS alert
//!   ([`ServerTls::refuse`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake, TlsAcceptor, TlsConnector, client, server};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Longest a client gets to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The flag a file came from and the file, for one-line errors.
fn describe(flag: &str, path: &Path) -> String {
    format!("{flag} {}", path.display())
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", describe(flag, path)))?;
    parse_certs(&data).map_err(|e| format!("{}: {e}", describe(flag, path)))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable PEM private key: {e}"))
}

fn load_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", describe(flag, path)))?;
    parse_key(&data).map_err(|e| format!("{}: {e}", describe(flag, path)))
}

fn load_roots(flag: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(flag, path)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", describe(flag, path)))?;
    }
    Ok(roots)
}

/// Builds the certificate a server presents from the chain and key PEM.
fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = parse_certs(chain_pem)?;
    let key = parse_key(key_pem)?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))
}

/// The certificate currently served, replaced when the files change.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Serves no certificate: a handshake completed with it fails with a
/// fatal alert rustls sends itself (`access_denied`): how a refused SNI
/// ends.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// A client's ClientHello, read before the handshake goes on.
pub struct Hello {
    start: StartHandshake<TcpStream>,
    deadline: tokio::time::Instant,
    server_name: Option<String>,
}

impl Hello {
    /// The server name (SNI) the client asked for, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }
}

/// TLS termination for client connections.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// The same protocol versions, no certificate: for refusals.
    refusing: Arc<ServerConfig>,
    resolver: Arc<ReloadingCert>,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The file contents the served certificate was built from.
    loaded: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ServerTls {
    /// Reads the certificate, key and optional client CA; an error names
    /// the flag and the file.
    pub fn from_config(c: &Config) -> Result<Option<Arc<ServerTls>>, String> {
        let (Some(cert_path), Some(key_path)) = (&c.tls_cert, &c.tls_key) else {
            return Ok(None);
        };
        let cert_pem = std::fs::read(cert_path)
            .map_err(|e| format!("{}: {e}", describe("--tls-cert", cert_path)))?;
        let key_pem = std::fs::read(key_path)
            .map_err(|e| format!("{}: {e}", describe("--tls-key", key_path)))?;
        parse_certs(&cert_pem)
            .map_err(|e| format!("{}: {e}", describe("--tls-cert", cert_path)))?;
        parse_key(&key_pem).map_err(|e| format!("{}: {e}", describe("--tls-key", key_path)))?;
        let key =
            certified_key(&cert_pem, &key_pem).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
        let resolver = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(key)),
        });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &c.tls_client_ca {
            Some(ca) => {
                let roots = load_roots("--tls-client-ca", ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| format!("{}: {e}", describe("--tls-client-ca", ca)))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config =
            builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        let refusing = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCertificate));
        Ok(Some(Arc::new(ServerTls {
            config: Arc::new(config),
            refusing: Arc::new(refusing),
            resolver,
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
            loaded: std::sync::Mutex::new((cert_pem, key_pem)),
        })))
    }

    /// Completes the handshake with a client (bounded by
    /// [`HANDSHAKE_TIMEOUT`]).
    pub async fn accept(&self, tcp: TcpStream) -> Result<server::TlsStream<TcpStream>, String> {
        match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TlsAcceptor::from(Arc::clone(&self.config)).accept(tcp),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Reads the client's ClientHello without answering it yet. The
    /// whole handshake, [`ServerTls::complete`] included, is bounded by
    /// one [`HANDSHAKE_TIMEOUT`].
    pub async fn read_hello(&self, tcp: TcpStream) -> Result<Hello, String> {
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let lazy = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        match tokio::time::timeout_at(deadline, lazy).await {
            Ok(Ok(start)) => {
                let server_name = start.client_hello().server_name().map(str::to_string);
                Ok(Hello {
                    start,
                    deadline,
                    server_name,
                })
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Completes the handshake of a ClientHello read by
    /// [`ServerTls::read_hello`].
    pub async fn complete(&self, hello: Hello) -> Result<server::TlsStream<TcpStream>, String> {
        let accept = hello.start.into_stream(Arc::clone(&self.config));
        match tokio::time::timeout_at(hello.deadline, accept).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Ends the handshake of a ClientHello with a fatal TLS alert
    /// (`access_denied`) and closes the connection.
    pub async fn refuse(&self, hello: Hello) {
        let accept = hello.start.into_stream(Arc::clone(&self.refusing));
        let _ = tokio::time::timeout_at(hello.deadline, accept).await;
    }

    /// Re-reads the files; a change that loads replaces the served
    /// certificate. Returns whether it did.
    pub fn reload(&self) -> Result<bool, String> {
        let cert_pem = std::fs::read(&self.cert_path)
            .map_err(|e| format!("{}: {e}", describe("--tls-cert", &self.cert_path)))?;
        let key_pem = std::fs::read(&self.key_path)
            .map_err(|e| format!("{}: {e}", describe("--tls-key", &self.key_path)))?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        // A failed load is remembered too: it is reported once, not on
        // every poll, and retried when the files change again.
        *loaded = (cert_pem, key_pem);
        let key = certified_key(&loaded.0, &loaded.1)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(true)
    }

    /// Polls the files every `every` until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.reload()).await {
                Ok(Ok(true)) => tracing::info!(
                    cert = %self.cert_path.display(),
                    "TLS certificate reloaded; new connections get the new certificate"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "TLS certificate files changed but do not load; still serving the previous certificate"
                ),
                Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
            }
        }
    }
}

/// TLS origination to brokers.
#[derive(Debug)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    pub fn from_config(c: &Config) -> Result<Option<Arc<UpstreamTls>>, String> {
        if !c.upstream_tls {
            return Ok(None);
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if c.upstream_tls_insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        } else {
            let roots = match &c.upstream_tls_ca {
                Some(ca) => load_roots("--upstream-tls-ca", ca)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&c.upstream_tls_cert, &c.upstream_tls_key) {
            (Some(cert), Some(key)) => {
                let chain = load_certs("--upstream-tls-cert", cert)?;
                let key = load_key("--upstream-tls-key", key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--upstream-tls-cert/--upstream-tls-key: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &c.upstream_tls_server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| format!("--upstream-tls-server-name '{n}': {e}"))?,
            ),
            None => None,
        };
        Ok(Some(Arc::new(UpstreamTls {
            config: Arc::new(config),
            server_name,
        })))
    }

    /// TLS over a connection to `addr` (host:port): the server name is the
    /// host dialled unless overridden.
    pub async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> Result<client::TlsStream<TcpStream>, String> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => server_name_of(addr)?,
        };
        match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TlsConnector::from(Arc::clone(&self.config)).connect(name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err("TLS handshake timed out".into()),
        }
    }
}

/// The host of `host:port` (brackets of an IPv6 literal removed) as a TLS
/// server name: a DNS name, or an IP address matched against IP SANs.
pub fn server_name_of(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("'{host}' is not usable as a TLS server name: {e}"))
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "--upstream-tls: no system CA certificates found; give --upstream-tls-ca".into(),
        );
    }
    Ok(roots)
}

/// Accepts any broker certificate (signatures are still checked, so the
/// handshake itself is sound). Only behind the explicitly insecure flag.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The identity of a verified client certificate for the dedup scope: the
/// certificate's subject (the DER bytes of its Name, hex), which stays the
/// same when the certificate is renewed. The whole certificate's SHA-256
/// when the subject cannot be read.
pub fn client_identity(cert: &CertificateDer<'_>) -> String {
    match subject_der(cert) {
        Some(s) => format!("subject:{}", hex(s)),
        None => format!(
            "sha256:{}",
            hex(ring::digest::digest(&ring::digest::SHA256, cert).as_ref())
        ),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One DER element: (tag, content, rest).
fn der_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject Name of an X.509 certificate (RFC 5280 §4.1): Certificate
/// → tbsCertificate → [0] version?, serialNumber, signature, issuer,
/// validity, subject.
fn subject_der(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der_element(cert)?;
    let (_, tbs, _) = der_element(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = der_element(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let start = rest;
    let (tag, _, after) = der_element(rest)?;
    (tag == 0x30).then(|| &start[..start.len() - after.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_is_the_dialled_host() {
        assert!(matches!(
            server_name_of("127.0.0.1:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name_of("kafka-0.kafka:9093").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name_of("[::1]:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert!(parse_certs(b"hello").is_err());
        assert!(parse_key(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").is_err());
        assert!(subject_der(b"\x30\x82\xff").is_none());
        assert!(client_identity(&CertificateDer::from(vec![1, 2, 3])).starts_with("sha256:"));
    }

    #[test]
    fn der_lengths_past_the_input_are_refused() {
        assert!(der_element(&[0x30, 0x05, 1, 2]).is_none());
        assert!(der_element(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert_eq!(
            der_element(&[0x30, 0x01, 7, 9]),
            Some((0x30, &[7u8][..], &[9u8][..]))
        );
    }
}
