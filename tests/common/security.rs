//! Support for the TLS and SASL tests: the shared cluster's SASL_SSL
//! listeners (scripts/kafka with KDP_KAFKA_SECURITY=1), certificates made
//! with openssl for the proxy's own listeners, and the SASL exchange of a
//! raw connection.

use std::path::{Path, PathBuf};
use std::process::Command;

use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use super::{RawConn, TestProxy, cluster, kafka, start_proxy_to};

/// Bootstrap string of the cluster's SASL_SSL listeners.
pub async fn sasl_bootstrap() -> String {
    cluster();
    let out = tokio::process::Command::new(super::repo().join("scripts/kafka"))
        .arg("sasl-bootstrap")
        .output()
        .await
        .expect("scripts/kafka sasl-bootstrap");
    assert!(
        out.status.success(),
        "the shared cluster has no SASL_SSL listener: stop it (scripts/kafka stop) and let the \
         tests start it with KDP_KAFKA_SECURITY=1 ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The CA that signed the brokers' SASL_SSL certificates.
pub async fn broker_ca() -> PathBuf {
    PathBuf::from(kafka(&["ca-file"]).await.trim())
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA in its own temporary directory.
pub struct TestCa {
    pub dir: PathBuf,
    pub name: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(super::unique(&format!("kdp-tls-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa {
            dir,
            name: name.to_string(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            ca.key().to_str().unwrap(),
            "-out",
            ca.cert().to_str().unwrap(),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Issues a certificate with subject CN=`cn` and the given SAN
    /// (e.g. "IP:127.0.0.1"): (chain PEM, key PEM).
    pub fn issue(&self, cn: &str, san: &str) -> (PathBuf, PathBuf) {
        let base = self.dir.join(cn);
        let key = base.with_extension("key");
        let csr = base.with_extension("csr");
        let ext = base.with_extension("ext");
        let cert = base.with_extension("pem");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "30",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.cert().to_str().unwrap(),
            "-CAkey",
            self.key().to_str().unwrap(),
            "-CAcreateserial",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        (cert, key)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A proxy in front of the SASL_SSL listeners: TLS to the brokers
/// (verified against the cluster's CA), and TLS for clients when
/// `client_tls` gives the proxy's certificate and key.
pub async fn start_sasl_proxy(client_tls: Option<(&Path, &Path)>, extra: &[&str]) -> TestProxy {
    let upstream = sasl_bootstrap().await;
    let ca = broker_ca().await;
    let mut args = vec![
        "--upstream-tls".to_string(),
        "--upstream-tls-ca".to_string(),
        s(&ca),
    ];
    if let Some((cert, key)) = client_tls {
        args.extend(["--tls-cert".into(), s(cert), "--tls-key".into(), s(key)]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    start_proxy_to(&upstream, &refs).await
}

/// SaslHandshake v1 and one SaslAuthenticate v2 round of PLAIN:
/// (error code, error message) of the SaslAuthenticate response.
pub async fn sasl_plain(conn: &mut RawConn, user: &str, password: &str) -> (i16, Option<String>) {
    let hs = conn
        .call(
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .await;
    assert_eq!(
        hs.error_code, 0,
        "PLAIN is enabled on the SASL_SSL listener"
    );
    let token = format!("\0{user}\0{password}");
    let resp = conn
        .call(
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(token.into_bytes().into()),
        )
        .await;
    (resp.error_code, resp.error_message.map(|m| m.to_string()))
}

/// Runs the Java client harness with extra client properties (`--extra
/// k=v` each) and returns (exit success, its JSON line, stderr), failing or
/// not.
pub async fn harness_outcome(args: &[&str], props: &[String]) -> (bool, serde_json::Value, String) {
    let out = tokio::process::Command::new(super::repo().join("scripts/kafka"))
        .args(["run", "ClientHarness"])
        .args(args)
        .args(props.iter().flat_map(|p| ["--extra", p.as_str()]))
        .output()
        .await
        .expect("scripts/kafka run ClientHarness");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Java client properties for SASL_SSL with SCRAM through a proxy whose
/// certificate `ca` signed.
pub fn java_scram(mechanism: &str, user: &str, password: &str, ca: &Path) -> Vec<String> {
    vec![
        "security.protocol=SASL_SSL".into(),
        format!("sasl.mechanism={mechanism}"),
        format!(
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";"
        ),
        "ssl.truststore.type=PEM".into(),
        format!("ssl.truststore.location={}", s(ca)),
    ]
}
