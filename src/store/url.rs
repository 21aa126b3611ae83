//! `--dedup-store` URLs: `redis://[user:pass@]host:port[/db]`, `rediss://`
//! (TLS), `redis+cluster://[user:pass@]h1:p1,h2:p2,...` and
//! `rediss+cluster://` (seed nodes of a Redis Cluster).

/// Where the store is.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// One node (or a proxy in front of several): the URL as given.
    Single { url: String },
    /// Seed nodes of a Redis Cluster, each as a `redis://` or `rediss://`
    /// URL; the credentials of the cluster URL, if any.
    Cluster {
        nodes: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

impl std::fmt::Debug for StoreTarget {
    /// Never prints a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreTarget {
    /// The target for logs and `/readyz`: hosts, never credentials.
    pub fn redacted(&self) -> String {
        match self {
            StoreTarget::Single { url } => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
                let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                format!("{scheme}://{rest}")
            }
            StoreTarget::Cluster { nodes, .. } => {
                let tls = nodes.first().is_some_and(|n| n.starts_with("rediss://"));
                let hosts: Vec<&str> = nodes
                    .iter()
                    .map(|n| n.split_once("://").map_or(n.as_str(), |(_, h)| h))
                    .collect();
                let scheme = if tls {
                    "rediss+cluster"
                } else {
                    "redis+cluster"
                };
                format!("{scheme}://{}", hosts.join(","))
            }
        }
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((h, p)) => !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// Parses a `--dedup-store` URL; the error says what is wrong with it
/// (without repeating a password).
pub fn parse_store_url(url: &str) -> Result<StoreTarget, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected redis://, rediss://, redis+cluster:// or rediss+cluster://".into());
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let hosts = hosts.trim_end_matches('/');
    match scheme {
        "redis" | "rediss" => {
            let host_port = hosts.split('/').next().unwrap_or("");
            if !is_host_port(host_port) {
                return Err(format!("'{host_port}' is not host:port"));
            }
            if let Some(db) = hosts.split_once('/').map(|(_, d)| d)
                && !db.is_empty()
                && db.parse::<u32>().is_err()
            {
                return Err(format!("database '{db}' is not a number"));
            }
            Ok(StoreTarget::Single { url: url.into() })
        }
        "redis+cluster" | "rediss+cluster" => {
            let node_scheme = if scheme == "rediss+cluster" {
                "rediss"
            } else {
                "redis"
            };
            let mut nodes = Vec::new();
            for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                if !is_host_port(h) {
                    return Err(format!("cluster node '{h}' is not host:port"));
                }
                nodes.push(format!("{node_scheme}://{h}"));
            }
            if nodes.is_empty() {
                return Err("a cluster URL needs at least one host:port".into());
            }
            let (username, password) = match userinfo {
                Some(u) => match u.split_once(':') {
                    Some((user, pass)) => (
                        (!user.is_empty()).then(|| user.to_string()),
                        Some(pass.to_string()),
                    ),
                    None => ((!u.is_empty()).then(|| u.to_string()), None),
                },
                None => (None, None),
            };
            Ok(StoreTarget::Cluster {
                nodes,
                username,
                password,
            })
        }
        other => Err(format!(
            "scheme '{other}': expected redis, rediss, redis+cluster or rediss+cluster"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_urls_are_taken_as_given() {
        for u in [
            "redis://127.0.0.1:6379",
            "redis://u:p@h:1/2",
            "rediss://h:6380",
        ] {
            assert_eq!(
                parse_store_url(u),
                Ok(StoreTarget::Single { url: u.into() })
            );
        }
    }

    #[test]
    fn cluster_urls_name_every_seed_node() {
        let t = parse_store_url("rediss+cluster://bob:s3cret@a:1,b:2").unwrap();
        assert_eq!(
            t,
            StoreTarget::Cluster {
                nodes: vec!["rediss://a:1".into(), "rediss://b:2".into()],
                username: Some("bob".into()),
                password: Some("s3cret".into()),
            }
        );
        assert_eq!(t.redacted(), "rediss+cluster://a:1,b:2");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn a_password_never_shows_in_the_redacted_target() {
        let t = parse_store_url("redis://user:hunter2@h:1/0").unwrap();
        assert_eq!(t.redacted(), "redis://h:1/0");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(parse_store_url("h:1").unwrap_err().contains("expected"));
        assert!(
            parse_store_url("http://h:1")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            parse_store_url("redis://h")
                .unwrap_err()
                .contains("host:port")
        );
        assert!(
            parse_store_url("redis://h:1/x")
                .unwrap_err()
                .contains("database")
        );
        assert!(
            parse_store_url("redis+cluster://a:1,b")
                .unwrap_err()
                .contains("'b'")
        );
        assert!(parse_store_url("redis+cluster://").is_err());
    }
}
