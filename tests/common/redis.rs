//! Redis for the replica tests: the shared single node and Redis Cluster
//! `scripts/test` starts (through `scripts/redis`) and names in
//! `KDP_REDIS_URL` and `KDP_REDIS_CLUSTER_URL`, and a test's own
//! redis-server for the scenarios that kill it (so no other test loses its
//! store).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

fn env_url(var: &str, how: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start Redis with `{how}` and export the URL it prints as {var} (scripts/test does both)")
    })
}

/// The shared single-node Redis (`redis://127.0.0.1:PORT`).
pub fn redis_url() -> String {
    env_url("KDP_REDIS_URL", "scripts/redis start")
}

/// The shared Redis Cluster (`redis+cluster://h1:p1,...`).
pub fn redis_cluster_url() -> String {
    env_url("KDP_REDIS_CLUSTER_URL", "scripts/redis start --cluster")
}

/// Serialises the test that fails the shared Redis Cluster over (write)
/// against the tests of this binary that use it (read): a claim that meets
/// a failover may time out and fall back, by design.
pub fn redis_cluster_lock() -> &'static tokio::sync::RwLock<()> {
    static LOCK: std::sync::OnceLock<tokio::sync::RwLock<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::RwLock::new(()))
}

/// Runs `redis-cli -p PORT ARGS...` and returns its stdout.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli (install redis-tools, scripts/install-deps does)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host ports of a `redis+cluster://` URL.
pub fn cluster_ports(url: &str) -> Vec<u16> {
    url.split_once("://")
        .map(|(_, h)| h.rsplit_once('@').map_or(h, |(_, h)| h))
        .unwrap_or("")
        .split(',')
        .filter_map(|h| h.rsplit_once(':')?.1.trim_end_matches('/').parse().ok())
        .collect()
}

/// The port of the primary that serves `key` in the cluster reached at
/// `seed`.
pub async fn primary_of(seed: u16, key: &str) -> u16 {
    let slot = redis_cli(seed, &["CLUSTER", "KEYSLOT", key]).await;
    let slot: i64 = slot.trim().parse().expect("CLUSTER KEYSLOT");
    let nodes = redis_cli(seed, &["CLUSTER", "NODES"]).await;
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") {
            continue;
        }
        let covers = f[8..].iter().any(|r| match r.split_once('-') {
            Some((a, b)) => {
                a.parse::<i64>().is_ok_and(|a| a <= slot)
                    && b.parse::<i64>().is_ok_and(|b| slot <= b)
            }
            None => r.parse::<i64>().is_ok_and(|s| s == slot),
        });
        if covers {
            let addr = f[1].split('@').next().unwrap_or("");
            return addr.rsplit_once(':').unwrap().1.parse().unwrap();
        }
    }
    panic!("no primary serves slot {slot}: {nodes}")
}

/// The ports of the cluster's primaries now (from CLUSTER NODES on `seed`).
pub async fn primaries(seed: u16) -> Vec<u16> {
    let nodes = redis_cli(seed, &["CLUSTER", "NODES"]).await;
    nodes
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            f[1].split('@').next()?.rsplit_once(':')?.1.parse().ok()
        })
        .collect()
}

/// Promotes the replica of the primary at `primary` (CLUSTER FAILOVER on
/// the replica, as `scripts/redis failover PORT` does) and waits until the
/// old primary reports itself a replica. Returns the new primary's port.
pub async fn failover(primary: u16) -> u16 {
    let info = redis_cli(primary, &["INFO", "replication"]).await;
    let replica: u16 = info
        .lines()
        .find(|l| l.starts_with("slave0:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("primary {primary} has no replica: {info}"));
    let ok = redis_cli(replica, &["CLUSTER", "FAILOVER"]).await;
    assert!(ok.contains("OK"), "CLUSTER FAILOVER on {replica}: {ok}");
    for _ in 0..100 {
        let role = redis_cli(primary, &["ROLE"]).await;
        if role.starts_with("slave") {
            return replica;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{primary} still a primary after CLUSTER FAILOVER on {replica}")
}

/// A redis-server of the test's own, on a free port in a directory of its
/// own; SIGKILLed and started again on the same port by the test.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        // Below the ephemeral range (32768 on): restarted on the same port,
        // it must not find the port taken by some outgoing connection.
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let nth = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = 23_000 + ((std::process::id() % 400) as u16 * 20 + nth * 3) % 9_000;
        let port = (0..4000u16)
            .map(|i| 23_000 + (start - 23_000 + i * 7) % 9_000)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port below the ephemeral range");
        let dir = std::env::temp_dir().join(format!("kdp-own-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
        };
        r.spawn().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.to_str().unwrap(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (scripts/install-deps installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if redis_cli(self.port, &["PING"]).await.contains("PONG") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {} did not answer", self.port);
    }

    /// SIGKILL: nothing is saved (no persistence configured either).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP relay that holds every chunk for `delay` before passing it on
/// (both ways): a slow Redis, as far as the proxy can tell.
pub struct SlowRelay {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SlowRelay {
    pub async fn start(to: u16, delay: Duration) -> SlowRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(slow_copy(cr, sw, delay), slow_copy(sr, cw, delay));
                });
            }
        });
        SlowRelay { port, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn slow_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
