//! Redis as fleets run it, as real processes on loopback: a Redis
//! Cluster of 3 masters and 3 replicas (`redis-cli --cluster create`),
//! and a primary with replicas watched by 3 sentinels
//! (`redis-server --sentinel`). Both wait until the deployment says it is
//! healthy, and let a test find, fail over and kill its nodes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::attacker::redis_cli;
use super::redis::{RedisServer, Setup};

/// Polls `check` every 50 ms until it holds; panics naming `what` after
/// `limit`.
fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A 3+3 Redis Cluster.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// For a replica: its master's id.
    pub master_id: Option<String>,
    pub failed: bool,
}

impl Cluster {
    /// `None` (test skipped) where redis-server is not installed.
    pub fn start(dir: &Path) -> Option<Cluster> {
        let mut nodes = Vec::new();
        for i in 0..6 {
            let node_dir = dir.join(format!("cluster-{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let setup = Setup {
                cluster: true,
                ..Setup::default()
            };
            nodes.push(RedisServer::start(&node_dir, setup)?);
        }
        let cli = super::system_tool("redis-cli", "redis-tools")?;
        let out = Command::new(cli)
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "cluster create: {out:?}");
        let cluster = Cluster { nodes };
        cluster.wait_healthy();
        Some(cluster)
    }

    /// Until every running node says `cluster_state:ok`, they agree on
    /// three masters, and `CLUSTER SLOTS` (what clients read) lists every
    /// running node (a replica shows there once it has synced).
    pub fn wait_healthy(&self) {
        until(Duration::from_secs(30), "a healthy cluster", || {
            let running: Vec<u16> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| n.port)
                .collect();
            let ok = |p: &u16| redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok");
            let listed = |p: &u16| {
                let slots = redis_cli(*p, &["CLUSTER", "SLOTS"]);
                running
                    .iter()
                    .all(|q| slots.lines().any(|l| l.trim() == q.to_string()))
            };
            running.iter().all(ok)
                && self
                    .lines()
                    .iter()
                    .filter(|l| l.master && !l.failed)
                    .count()
                    == 3
                && running.iter().all(listed)
        });
    }

    /// `CLUSTER NODES` as a running node sees it.
    pub fn lines(&self) -> Vec<NodeLine> {
        let node = self.nodes.iter().find(|n| n.is_running()).expect("a node");
        redis_cli(node.port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit_once(':')?
                    .1
                    .parse()
                    .ok()?;
                Some(NodeLine {
                    id: f[0].to_owned(),
                    port,
                    master: f[2].contains("master"),
                    master_id: (f[3] != "-").then(|| f[3].to_owned()),
                    failed: f[2].contains("fail"),
                })
            })
            .collect()
    }

    /// The port of the master owning the slot of hash tag `tag`.
    pub fn owner(&self, tag: &str) -> u16 {
        let node = self.nodes.iter().find(|n| n.is_running()).expect("a node");
        let slot: u16 = redis_cli(node.port, &["CLUSTER", "KEYSLOT", tag])
            .trim()
            .parse()
            .expect("a slot");
        let slots = redis_cli(node.port, &["CLUSTER", "NODES"]);
        for line in slots.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            for range in &f[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    if (a..=b).contains(&slot) {
                        return f[1]
                            .split('@')
                            .next()
                            .unwrap()
                            .rsplit_once(':')
                            .unwrap()
                            .1
                            .parse()
                            .unwrap();
                    }
                }
            }
        }
        panic!("no master owns slot {slot}:\n{slots}");
    }

    /// A replica of the master on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let lines = self.lines();
        let master = lines.iter().find(|l| l.port == port).expect("the master");
        lines
            .iter()
            .find(|l| l.master_id.as_deref() == Some(master.id.as_str()) && !l.failed)
            .map(|l| l.port)
            .expect("a replica")
    }

    /// A master other than the one on `port`.
    pub fn other_master(&self, port: u16) -> u16 {
        self.lines()
            .iter()
            .find(|l| l.master && !l.failed && l.port != port)
            .map(|l| l.port)
            .expect("another master")
    }

    /// `CLUSTER FAILOVER` on the replica on `port`; returns once it is the
    /// master.
    pub fn failover(&self, port: u16) {
        assert_eq!(redis_cli(port, &["CLUSTER", "FAILOVER"]).trim(), "OK");
        until(Duration::from_secs(20), "the failover", || {
            redis_cli(port, &["ROLE"]).starts_with("master")
        });
        self.wait_healthy();
    }

    /// SIGKILL of the node on `port`; returns once the cluster has marked
    /// it failed and is healthy again (its replica promoted).
    pub fn kill(&mut self, port: u16) {
        self.kill_now(port);
        self.wait_failed_over(port);
    }

    /// SIGKILL of the node on `port`, returning at once: the cluster has
    /// not noticed yet.
    pub fn kill_now(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("that node")
            .kill();
    }

    /// Until the cluster has marked the node on `port` failed and is
    /// healthy again.
    pub fn wait_failed_over(&self, port: u16) {
        until(Duration::from_secs(30), "the node marked failed", || {
            self.lines().iter().any(|l| l.port == port && l.failed)
        });
        self.wait_healthy();
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }
}

/// A primary, replicas and 3 sentinels watching it as `MASTER_NAME`.
pub struct Sentinels {
    pub servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

/// The master name the sentinels watch.
pub const MASTER_NAME: &str = "fleet";

struct Sentinel {
    child: Child,
    port: u16,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sentinels {
    /// A primary and `replicas` replicas, watched by 3 sentinels (quorum
    /// 2, down after 1 s). `None` (test skipped) where redis-server is not
    /// installed.
    pub fn start(dir: &Path, replicas: usize) -> Option<Sentinels> {
        let primary = RedisServer::start(dir, Setup::default())?;
        let mut servers = vec![];
        let primary_port = primary.port;
        servers.push(primary);
        for _ in 0..replicas {
            let setup = Setup {
                replica_of: Some(primary_port),
                ..Setup::default()
            };
            servers.push(RedisServer::start(dir, setup)?);
        }
        let binary = super::system_tool("redis-server", "redis-server")?;
        let sentinels = (0..3)
            .map(|i| {
                let port = super::shared::free_addr().port();
                let conf: PathBuf = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 5000\n\
                         sentinel parallel-syncs {MASTER_NAME} 2\n",
                        dir = dir.display()
                    ),
                )
                .unwrap();
                let child = Command::new(&binary)
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server --sentinel starts");
                Sentinel { child, port }
            })
            .collect();
        let set = Sentinels { servers, sentinels };
        // Every sentinel knows the primary, its replicas and the others.
        until(Duration::from_secs(30), "the sentinels", || {
            set.sentinels.iter().all(|s| {
                std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() && {
                    let info = redis_cli(s.port, &["INFO", "sentinel"]);
                    info.contains(&format!("slaves={replicas},sentinels=3"))
                }
            })
        });
        Some(set)
    }

    /// `redis-sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/0#MASTER`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis-sentinel://{}/0#{MASTER_NAME}", hosts.join(","))
    }

    /// The port of the primary the sentinels name now.
    pub fn primary(&self) -> u16 {
        let reply = redis_cli(
            self.sentinels[0].port,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        );
        reply
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .expect("a primary port")
    }

    /// Starts the server on `port` again, empty (the sentinels make it a
    /// replica of the current primary once they notice it).
    pub fn restart(&mut self, port: u16) {
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("that server")
            .restart();
    }

    /// Until every sentinel names the same primary and sees a replica of
    /// it with its link up (a failover needs one to promote; a server
    /// that just came back, or a failover a stall set off, takes the
    /// sentinels a few seconds to settle); that primary's port.
    pub fn wait_promotable(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let primaries: Vec<String> = self
                .sentinels
                .iter()
                .map(|s| {
                    redis_cli(
                        s.port,
                        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
                    )
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
                })
                .collect();
            let replicas: Vec<String> = self
                .sentinels
                .iter()
                .map(|s| redis_cli(s.port, &["SENTINEL", "replicas", MASTER_NAME]))
                .collect();
            let primary = primaries[0].clone();
            let agreed = primaries.iter().all(|p| *p == primary);
            let promotable = |reply: &String| {
                replica_fields(reply).iter().any(|fields| {
                    let field = |k: &str| {
                        fields
                            .iter()
                            .find(|(key, _)| key == k)
                            .map(|(_, v)| v.as_str())
                    };
                    field("flags") == Some("slave")
                        && field("master-link-status") == Some("ok")
                        && field("master-port") == Some(primary.as_str())
                })
            };
            if agreed && replicas.iter().all(promotable) {
                if let Ok(port) = primary.parse() {
                    return port;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a primary with a replica to promote; the sentinels \
                 name {primaries:?} and list:\n{}",
                replicas.join("\n--\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL of the primary; returns once every sentinel names a new
    /// one, and that one says it is the master.
    pub fn kill_primary(&mut self) -> u16 {
        let old = self.kill_primary_now();
        self.wait_new_primary(old)
    }

    /// SIGKILL of the primary (once it has a replica to promote, see
    /// [`Sentinels::wait_promotable`]), returning its port at once: the
    /// sentinels have not noticed yet.
    pub fn kill_primary_now(&mut self) -> u16 {
        let old = self.wait_promotable();
        self.servers
            .iter_mut()
            .find(|s| s.port == old)
            .expect("the primary")
            .kill();
        old
    }

    /// Until every sentinel names a primary other than `old`, and that
    /// one says it is the master; its port.
    pub fn wait_new_primary(&self, old: u16) -> u16 {
        until(Duration::from_secs(30), "a new primary", || {
            self.sentinels.iter().all(|s| {
                let reply = redis_cli(
                    s.port,
                    &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
                );
                reply
                    .lines()
                    .nth(1)
                    .is_some_and(|p| p.trim() != old.to_string())
            })
        });
        let new = self.primary();
        until(Duration::from_secs(30), "the new primary's role", || {
            redis_cli(new, &["ROLE"]).starts_with("master")
        });
        new
    }
}

/// The replicas of a `SENTINEL replicas` reply as redis-cli prints it
/// (one line per element): each replica's field/value pairs.
fn replica_fields(reply: &str) -> Vec<Vec<(String, String)>> {
    let lines: Vec<&str> = reply.lines().map(str::trim).collect();
    let mut replicas: Vec<Vec<(String, String)>> = Vec::new();
    for pair in lines.chunks(2) {
        let [key, value] = pair else { break };
        if *key == "name" {
            replicas.push(Vec::new());
        }
        if let Some(fields) = replicas.last_mut() {
            fields.push((key.to_string(), value.to_string()));
        }
    }
    replicas
}
