//! SNI routing: one TLS port for the whole cluster.
//!
//! With `--sni-routing broker-$(nodeId).kafka.example.com`, every broker is
//! advertised as `broker-<id>.kafka.example.com:<bootstrap port>`, and a TLS
//! client names the broker it wants in the `server_name` of its ClientHello
//! (RFC 6066 §3). This module is the pure half of that: it parses the
//! pattern, builds a broker's name, and maps a requested name to a
//! [`Route`]. No I/O; the bootstrap listener's accept stage asks it before
//! completing the handshake.
//!
//! DNS names compare case-insensitively (RFC 4343), so the pattern and the
//! bootstrap name are kept lowercased and every requested name is
//! lowercased before matching. A name that matches neither is refused: the
//! proxy never guesses a broker.

use std::fmt;

/// The placeholder the pattern must contain exactly once.
pub const NODE_ID_PLACEHOLDER: &str = "$(nodeId)";

/// Longest DNS name (RFC 1035 §2.3.4); a longer SNI is refused unread.
const MAX_DNS_NAME_LEN: usize = 253;

/// A host-name pattern with one `$(nodeId)` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniPattern {
    prefix: String,
    suffix: String,
}

impl SniPattern {
    /// Parses `pattern`; the error is one line for the start-up message.
    pub fn parse(pattern: &str) -> Result<SniPattern, String> {
        let p = pattern.trim().to_ascii_lowercase();
        let placeholder = NODE_ID_PLACEHOLDER.to_ascii_lowercase();
        let mut parts = p.split(&placeholder);
        let (Some(prefix), Some(suffix), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "'{pattern}' must contain {NODE_ID_PLACEHOLDER} exactly once"
            ));
        };
        let pat = SniPattern {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        };
        // Node id 0 stands in for every id: the name must be a DNS name
        // a certificate can cover and a client can send as SNI.
        let example = pat.host_of(0);
        if !is_dns_name(&example) {
            return Err(format!(
                "'{pattern}' does not give a DNS host name (e.g. '{example}')"
            ));
        }
        Ok(pat)
    }

    /// The host name advertised for `node_id`.
    pub fn host_of(&self, node_id: i32) -> String {
        format!("{}{}{}", self.prefix, node_id, self.suffix)
    }

    /// The node id `host` (already lowercased) names, if it has this
    /// pattern's shape with a decimal id in 0..=i32::MAX (Kafka node ids
    /// are non-negative int32) and no leading zeros, so that every id has
    /// exactly one name.
    fn node_of(&self, host: &str) -> Option<i32> {
        let digits = host
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return None;
        }
        digits.parse::<i32>().ok()
    }
}

impl fmt::Display for SniPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{NODE_ID_PLACEHOLDER}{}", self.prefix, self.suffix)
    }
}

/// Letters, digits, hyphens and dots, labels of 1 to 63 bytes.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DNS_NAME_LEN
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Where a TLS connection on the bootstrap listener goes, by its SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The bootstrap name: any bootstrap server.
    Bootstrap,
    /// A broker name: this node id (whether the cluster has it is the
    /// caller's question).
    Broker(i32),
}

/// Why an SNI is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniRefusal {
    #[error("the client sent no SNI (server_name)")]
    Missing,
    #[error(
        "SNI '{name}' matches neither the bootstrap name '{bootstrap}' nor the pattern '{pattern}'"
    )]
    NoMatch {
        name: String,
        bootstrap: String,
        pattern: String,
    },
    #[error("SNI '{name}' names broker {node_id}, which the cluster does not have")]
    UnknownNode { name: String, node_id: i32 },
}

/// The SNI routing table: the broker pattern and the bootstrap name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoutes {
    pattern: SniPattern,
    bootstrap: String,
}

impl SniRoutes {
    /// From the two flags' values; errors name the flag.
    pub fn new(pattern: &str, bootstrap: &str) -> Result<SniRoutes, String> {
        let pattern = SniPattern::parse(pattern).map_err(|e| format!("--sni-routing {e}"))?;
        let bootstrap = bootstrap.trim().trim_end_matches('.').to_ascii_lowercase();
        if !is_dns_name(&bootstrap) {
            return Err(format!(
                "--sni-bootstrap '{bootstrap}' is not a DNS host name"
            ));
        }
        if pattern.node_of(&bootstrap).is_some() {
            return Err(format!(
                "--sni-bootstrap '{bootstrap}' matches --sni-routing '{pattern}'"
            ));
        }
        Ok(SniRoutes { pattern, bootstrap })
    }

    pub fn pattern(&self) -> &SniPattern {
        &self.pattern
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Maps the SNI a client sent to where it goes.
    pub fn route(&self, sni: Option<&str>) -> Result<Route, SniRefusal> {
        let Some(raw) = sni else {
            return Err(SniRefusal::Missing);
        };
        // A fully qualified name may end in a dot; it names the same host.
        let name = raw.trim_end_matches('.').to_ascii_lowercase();
        if name.len() <= MAX_DNS_NAME_LEN {
            if name == self.bootstrap {
                return Ok(Route::Bootstrap);
            }
            if let Some(id) = self.pattern.node_of(&name) {
                return Ok(Route::Broker(id));
            }
        }
        Err(SniRefusal::NoMatch {
            name: raw.chars().take(MAX_DNS_NAME_LEN).collect(),
            bootstrap: self.bootstrap.clone(),
            pattern: self.pattern.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> SniRoutes {
        SniRoutes::new(
            "broker-$(nodeId).kafka.example.com",
            "bootstrap.kafka.example.com",
        )
        .unwrap()
    }

    #[test]
    fn pattern_builds_one_name_per_node_id() {
        let p = SniPattern::parse("broker-$(nodeId).kafka.example.com").unwrap();
        assert_eq!(p.host_of(0), "broker-0.kafka.example.com");
        assert_eq!(p.host_of(17), "broker-17.kafka.example.com");
        assert_eq!(p.to_string(), "broker-$(nodeId).kafka.example.com");
        let p = SniPattern::parse("$(nodeId).brokers.test").unwrap();
        assert_eq!(p.host_of(3), "3.brokers.test");
    }

    #[test]
    fn pattern_without_exactly_one_placeholder_is_refused() {
        for bad in [
            "broker.kafka.example.com",
            "b-$(nodeId)-$(nodeId).example.com",
            "",
        ] {
            let e = SniPattern::parse(bad).unwrap_err();
            assert!(e.contains("exactly once"), "{bad}: {e}");
        }
    }

    #[test]
    fn pattern_that_gives_no_dns_name_is_refused() {
        for bad in [
            "broker_$(nodeId).example.com",
            "broker-$(nodeId)..example.com",
            "broker-$(nodeId).example.com:9093",
            "*.$(nodeId).example.com",
        ] {
            let e = SniPattern::parse(bad).unwrap_err();
            assert!(e.contains("DNS host name"), "{bad}: {e}");
        }
    }

    #[test]
    fn bootstrap_name_routes_to_bootstrap() {
        assert_eq!(
            routes().route(Some("bootstrap.kafka.example.com")),
            Ok(Route::Bootstrap)
        );
    }

    #[test]
    fn broker_name_routes_to_its_node_id() {
        let r = routes();
        assert_eq!(
            r.route(Some("broker-0.kafka.example.com")),
            Ok(Route::Broker(0))
        );
        assert_eq!(
            r.route(Some("broker-2147483647.kafka.example.com")),
            Ok(Route::Broker(i32::MAX))
        );
    }

    #[test]
    fn names_compare_case_insensitively_and_ignore_a_trailing_dot() {
        let r = routes();
        assert_eq!(
            r.route(Some("BROKER-2.Kafka.Example.COM")),
            Ok(Route::Broker(2))
        );
        assert_eq!(
            r.route(Some("Bootstrap.Kafka.Example.Com.")),
            Ok(Route::Bootstrap)
        );
        let upper = SniRoutes::new("Broker-$(NODEID).Kafka.Test", "BOOTSTRAP.kafka.test").unwrap();
        assert_eq!(
            upper.route(Some("broker-1.kafka.test")),
            Ok(Route::Broker(1))
        );
        assert_eq!(
            upper.route(Some("bootstrap.KAFKA.test")),
            Ok(Route::Bootstrap)
        );
    }

    #[test]
    fn other_names_are_refused_never_guessed() {
        let r = routes();
        for bad in [
            "broker-.kafka.example.com",
            "broker-x.kafka.example.com",
            "broker-1.kafka.example.org",
            "broker-1-1.kafka.example.com",
            "broker--1.kafka.example.com",
            "broker-+1.kafka.example.com",
            "broker-01.kafka.example.com",
            "xbroker-1.kafka.example.com",
            "kafka.example.com",
            "127.0.0.1",
        ] {
            assert!(
                matches!(r.route(Some(bad)), Err(SniRefusal::NoMatch { .. })),
                "{bad}"
            );
        }
        assert_eq!(r.route(None), Err(SniRefusal::Missing));
    }

    #[test]
    fn node_id_out_of_range_is_refused() {
        let r = routes();
        assert!(matches!(
            r.route(Some("broker-2147483648.kafka.example.com")),
            Err(SniRefusal::NoMatch { .. })
        ));
        assert!(matches!(
            r.route(Some("broker-99999999999999999999.kafka.example.com")),
            Err(SniRefusal::NoMatch { .. })
        ));
    }

    #[test]
    fn refusal_names_what_was_asked_and_what_is_served() {
        let e = routes().route(Some("evil.example.com")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SNI 'evil.example.com' matches neither the bootstrap name \
             'bootstrap.kafka.example.com' nor the pattern 'broker-$(nodeId).kafka.example.com'"
        );
    }

    #[test]
    fn bootstrap_name_must_be_a_name_the_pattern_does_not_cover() {
        let e = SniRoutes::new("b-$(nodeId).k.test", "b-1.k.test").unwrap_err();
        assert!(e.starts_with("--sni-bootstrap"), "{e}");
        let e = SniRoutes::new("b-$(nodeId).k.test", "not a name").unwrap_err();
        assert!(e.starts_with("--sni-bootstrap"), "{e}");
        let e = SniRoutes::new("b.k.test", "boot.k.test").unwrap_err();
        assert!(e.starts_with("--sni-routing"), "{e}");
    }
}
