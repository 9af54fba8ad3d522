//! The one way the crate connects to Redis, whatever the deployment: the
//! source, the node reports, `publish` and `fleet` all go through
//! [`Connector`].
//!
//! | URL | what is connected |
//! |---|---|
//! | `redis://host:port/db`, `rediss://…` | that server; a Redis Cluster node (detected: `INFO cluster`) makes a cluster connection seeded with every node the cluster names, which follows `MOVED`, `ASK` and failovers itself |
//! | `redis+unix:///path`, `unix:///path` | the server on that socket |
//! | `redis-sentinel://h:p[,h:p…][/db]#MASTER`, `rediss-sentinel://…` | the sentinels are asked, at each connect, for the current primary of `MASTER` or one of its replicas |
//!
//! A [`Role`] says what the connection is for: a [`Role::Follow`]
//! (following the data) reads a replica where the deployment and
//! `read_from` allow it (`READONLY` in a cluster); a [`Role::Write`]
//! (`publish`, node reports) always talks to the primary. Clustering,
//! redirections, replica reads and sentinel lookups are the redis crate's
//! own (`cluster-async`, `sentinel`); this module only chooses.
//!
//! TLS: a CA bundle (instead of the system's roots) and a client
//! certificate with its key, read once from PEM files; a URL option the
//! build cannot honour (`#insecure`) is refused by name.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_read_routing::RandomReplicaStrategy;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo,
    IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value,
};
use tokio::sync::Mutex;

use crate::config::secret::Secret;
use crate::config::{read_pem, Pem, ReadFrom, TlsFiles};

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Following the data: a replica where the deployment allows.
    Follow,
    /// Writing (`publish`, node reports): the primary.
    Write,
}

/// Why a Redis deployment could not be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{url:?} is not a Redis URL: {reason}")]
    Url { url: String, reason: String },
    #[error("{option} in {url:?}: this build cannot honour it")]
    Unsupported { url: String, option: String },
    #[error("{key}: {reason}")]
    Tls { key: &'static str, reason: String },
    #[error("tls_cert_file and tls_key_file go together")]
    HalfAClientCertificate,
}

/// How a deployment is named.
#[derive(Debug, Clone)]
enum Endpoint {
    /// One server, or a node of a cluster.
    Server(ConnectionInfo),
    Sentinel {
        sentinels: Vec<ConnectionAddr>,
        master: String,
        db: i64,
        tls: bool,
    },
}

/// Everything needed to connect to one deployment, checked up front.
#[derive(Clone)]
pub struct Connector {
    endpoint: Endpoint,
    /// The URL without credentials, for status and messages.
    shown: String,
    password: Option<Secret>,
    username: Option<String>,
    tls: Option<TlsCertificates>,
    read_from: Option<ReadFrom>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// One sentinel client per role, kept (they cache their sentinel
    /// connections).
    sentinels: Arc<[Mutex<Option<SentinelClient>>; 2]>,
    /// Once the URL named a cluster node: every node the cluster named, so
    /// a reconnect works when the node given is the one that died.
    cluster: Arc<std::sync::Mutex<Option<ClusterSeen>>>,
}

/// What the last look at a cluster found.
#[derive(Debug, Clone)]
struct ClusterSeen {
    nodes: Vec<ConnectionInfo>,
    /// The node given was a replica.
    replica_given: bool,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.shown)
            .field("read_from", &self.read_from)
            .finish()
    }
}

/// The settings of one deployment.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    pub url: &'a str,
    pub password: Option<Secret>,
    pub tls: &'a TlsFiles,
    /// `None`: as the URL names it (a sentinel's replica, the node given).
    pub read_from: Option<ReadFrom>,
    pub connect_timeout: Duration,
    /// Longer than any `XREAD BLOCK` made on the connection.
    pub response_timeout: Duration,
}

impl Connector {
    /// Checks the URL and reads the TLS files.
    pub fn new(settings: Settings<'_>) -> Result<Connector, ConnectorError> {
        let url = settings.url;
        let bad = |reason: String| ConnectorError::Url {
            url: url.to_owned(),
            reason,
        };
        if let Some((_, fragment)) = url.split_once('#') {
            if fragment == "insecure" {
                return Err(ConnectorError::Unsupported {
                    url: url.to_owned(),
                    option: "#insecure".into(),
                });
            }
        }
        let (endpoint, username) = if let Some(rest) = url
            .strip_prefix("redis-sentinel://")
            .map(|r| (r, false))
            .or_else(|| url.strip_prefix("rediss-sentinel://").map(|r| (r, true)))
        {
            let (rest, tls) = rest;
            let (hosts_db, master) = rest
                .split_once('#')
                .ok_or_else(|| bad("a sentinel URL names its master after '#'".into()))?;
            if master.is_empty() {
                return Err(bad("a sentinel URL names its master after '#'".into()));
            }
            let (hosts, db) = match hosts_db.split_once('/') {
                Some((hosts, "")) => (hosts, 0),
                Some((hosts, db)) => (
                    hosts,
                    db.parse::<i64>()
                        .map_err(|_| bad(format!("database {db:?} is not a number")))?,
                ),
                None => (hosts_db, 0),
            };
            let (username, hosts) = match hosts.rsplit_once('@') {
                Some((user, _)) if user.contains(':') => {
                    return Err(bad("no password in the URL: name its variable".into()))
                }
                Some((user, hosts)) => (Some(user.to_owned()), hosts),
                None => (None, hosts),
            };
            let mut sentinels = Vec::new();
            for host in hosts.split(',') {
                let (h, p) = host
                    .rsplit_once(':')
                    .ok_or_else(|| bad(format!("{host:?} is not host:port")))?;
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad(format!("{host:?} is not host:port")))?;
                sentinels.push(if tls {
                    ConnectionAddr::TcpTls {
                        host: h.to_owned(),
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(h.to_owned(), port)
                });
            }
            (
                Endpoint::Sentinel {
                    sentinels,
                    master: master.to_owned(),
                    db,
                    tls,
                },
                username,
            )
        } else {
            let info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
            let username = info.redis_settings().username().map(str::to_owned);
            (Endpoint::Server(info), username)
        };
        let tls = read_tls(settings.tls)?;
        Ok(Connector {
            endpoint,
            shown: without_credentials(url),
            password: settings.password,
            username,
            tls,
            read_from: settings.read_from,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
            sentinels: Arc::new([Mutex::new(None), Mutex::new(None)]),
            cluster: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// The URL without credentials.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Connects for `role`.
    pub async fn connect(&self, role: Role) -> RedisResult<Conn> {
        match &self.endpoint {
            Endpoint::Server(info) => self.connect_server(info.clone(), role).await,
            Endpoint::Sentinel { .. } => self.connect_sentinel(role).await,
        }
    }

    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
    }

    fn with_login(&self, mut info: ConnectionInfo) -> ConnectionInfo {
        if let Some(password) = &self.password {
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        info
    }

    fn client(&self, info: ConnectionInfo) -> RedisResult<Client> {
        let info = self.with_login(info);
        match &self.tls {
            Some(certs) => Client::build_with_tls(info, certs.clone()),
            None => Client::open(info),
        }
    }

    async fn connect_server(&self, info: ConnectionInfo, role: Role) -> RedisResult<Conn> {
        let seen = crate::lock::lock(&self.cluster).clone();
        let mut single = match self
            .client(info.clone())?
            .get_multiplexed_async_connection_with_config(&self.config())
            .await
        {
            Ok(single) => single,
            // The node given is down, but it was part of a cluster: any
            // node the cluster named will do.
            Err(e) => match seen {
                Some(seen) => return self.connect_cluster(seen, role).await,
                None => return Err(e),
            },
        };
        let cluster: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut single)
            .await
            .unwrap_or_default();
        if !cluster.contains("cluster_enabled:1") {
            return Ok(Conn::Single(single));
        }
        // A cluster node: seed the cluster client with every node the
        // cluster names, so a reconnect works while the first is down.
        let shards: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut single)
            .await
            .unwrap_or_default();
        let seen = ClusterSeen {
            nodes: cluster_nodes(&info, &shards),
            replica_given: shards
                .lines()
                .any(|l| l.contains("myself") && l.contains("slave")),
        };
        *crate::lock::lock(&self.cluster) = Some(seen.clone());
        self.connect_cluster(seen, role).await
    }

    async fn connect_cluster(&self, seen: ClusterSeen, role: Role) -> RedisResult<Conn> {
        let mut builder = ClusterClientBuilder::new(seen.nodes)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout);
        if let Some(password) = &self.password {
            builder = builder.password(password.expose());
        }
        if let Some(user) = &self.username {
            builder = builder.username(user.clone());
        }
        if let Some(certs) = &self.tls {
            builder = builder.certs(certs.clone());
        }
        let replica = role == Role::Follow
            && match self.read_from {
                Some(ReadFrom::Replica) => true,
                Some(ReadFrom::Primary) => false,
                None => seen.replica_given,
            };
        if replica {
            builder = builder.read_routing_strategy(RandomReplicaStrategy);
        }
        let cluster = builder.build()?.get_async_connection().await?;
        Ok(Conn::Cluster(Box::new(cluster)))
    }

    async fn connect_sentinel(&self, role: Role) -> RedisResult<Conn> {
        let replica = role == Role::Follow && self.read_from != Some(ReadFrom::Primary);
        if replica {
            // A replica, the primary when none is up.
            match self.sentinel_connection(SentinelServerType::Replica).await {
                Ok(con) => return Ok(Conn::Single(con)),
                Err(e) => {
                    tracing::debug!(error = %e, "no replica to read from; reading the primary")
                }
            }
        }
        Ok(Conn::Single(
            self.sentinel_connection(SentinelServerType::Master).await?,
        ))
    }

    async fn sentinel_connection(
        &self,
        kind: SentinelServerType,
    ) -> RedisResult<MultiplexedConnection> {
        let Endpoint::Sentinel {
            sentinels,
            master,
            db,
            tls,
        } = &self.endpoint
        else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a sentinel URL",
            )));
        };
        let slot = match kind {
            SentinelServerType::Replica => 1,
            _ => 0,
        };
        let mut held = self.sentinels[slot].lock().await;
        if held.is_none() {
            let mut builder = SentinelClientBuilder::new(sentinels.clone(), master, kind)?
                .set_client_to_redis_db(*db);
            if let Some(password) = &self.password {
                builder = builder
                    .set_client_to_redis_password(password.expose())
                    .set_client_to_sentinel_password(password.expose());
            }
            if let Some(user) = &self.username {
                builder = builder
                    .set_client_to_redis_username(user)
                    .set_client_to_sentinel_username(user);
            }
            if *tls {
                builder = builder
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            }
            if let Some(certs) = &self.tls {
                builder = builder
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs.clone());
            }
            *held = Some(builder.build()?);
        }
        let client = held.as_mut().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no sentinel client"))
        })?;
        let result = client
            .get_async_connection_with_config(&self.config())
            .await;
        if result.is_err() {
            // Ask afresh next time (its cached sentinel connections may be
            // to sentinels that are gone).
            *held = None;
        }
        result
    }
}

/// `given` and every node `CLUSTER NODES` (`shards`) names, with the
/// settings (TLS, login) of `given`.
fn cluster_nodes(given: &ConnectionInfo, shards: &str) -> Vec<ConnectionInfo> {
    let mut nodes = vec![given.clone()];
    for line in shards.lines() {
        let Some(addr) = line.split_whitespace().nth(1) else {
            continue;
        };
        let addr = addr.split('@').next().unwrap_or(addr);
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let addr = match given.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        nodes.push(given.clone().set_addr(addr));
    }
    nodes
}

/// Reads the TLS files (each optional).
fn read_tls(files: &TlsFiles) -> Result<Option<TlsCertificates>, ConnectorError> {
    let read = |key: &'static str, path: &std::path::Path, what: Pem| {
        read_pem(path, what).map_err(|reason| ConnectorError::Tls { key, reason })
    };
    let root_cert = files
        .ca_file
        .as_deref()
        .map(|p| read("tls_ca_file", p, Pem::Certificate))
        .transpose()?;
    let client_tls = match (&files.cert_file, &files.key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("tls_cert_file", cert, Pem::Certificate)?,
            client_key: read("tls_key_file", key, Pem::PrivateKey)?,
        }),
        _ => return Err(ConnectorError::HalfAClientCertificate),
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// `url` with any `user:password@` or `user@` taken out.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(at) => rest.split_at(at),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A connection to one server or to a cluster.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(Box<ClusterConnection>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection made when first needed, kept, and forgotten after an
/// error so that the next use connects again (to a failed-over primary,
/// a new replica, a restarted server).
#[derive(Debug)]
pub struct Lazy {
    connector: Arc<Connector>,
    role: Role,
    con: Option<Conn>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl Lazy {
    pub fn new(connector: Arc<Connector>, role: Role) -> Lazy {
        Lazy {
            connector,
            role,
            con: None,
        }
    }

    /// The connection, made now if there is none.
    pub async fn get(&mut self) -> RedisResult<Conn> {
        if let Some(con) = &self.con {
            return Ok(con.clone());
        }
        let con = self.connector.connect(self.role).await?;
        self.con = Some(con.clone());
        Ok(con)
    }

    /// Forgets the connection (after an error).
    pub fn reset(&mut self) {
        self.con = None;
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<Connector, ConnectorError> {
        Connector::new(Settings {
            url,
            password: None,
            tls: &TlsFiles::default(),
            read_from: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn every_documented_form_of_url_reads() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://redis.example:6380/2",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock",
            "redis-sentinel://s1:26379,s2:26379,s3:26379/0#mymaster",
            "rediss-sentinel://s1:26380#mymaster",
            "redis-sentinel://reader@s1:26379#m",
        ] {
            let c = settings(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!c.url().contains('@'), "{}", c.url());
        }
    }

    #[test]
    fn what_the_build_cannot_honour_or_a_url_that_does_not_read_is_named() {
        let e = settings("rediss://h:6380/#insecure")
            .unwrap_err()
            .to_string();
        assert!(e.contains("#insecure"), "{e}");
        for (url, says) in [
            ("redis-sentinel://s1:26379", "master"),
            ("redis-sentinel://s1:26379#", "master"),
            ("redis-sentinel://s1#m", "host:port"),
            ("redis-sentinel://s1:x#m", "host:port"),
            ("redis-sentinel://u:pw@s1:1#m", "password"),
            ("redis-sentinel://s1:1/x#m", "database"),
            ("http://h", "Redis URL"),
        ] {
            let e = settings(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn tls_files_must_read_and_be_pem() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let files = TlsFiles {
            ca_file: Some(junk.clone()),
            ..TlsFiles::default()
        };
        let e = read_tls(&files).unwrap_err().to_string();
        assert!(e.contains("tls_ca_file") && e.contains("PEM"), "{e}");
        let missing = TlsFiles {
            ca_file: Some(dir.path().join("absent.pem")),
            ..TlsFiles::default()
        };
        assert!(read_tls(&missing)
            .unwrap_err()
            .to_string()
            .contains("tls_ca_file"));
        let half = TlsFiles {
            cert_file: Some(junk),
            ..TlsFiles::default()
        };
        assert!(matches!(
            read_tls(&half),
            Err(ConnectorError::HalfAClientCertificate)
        ));
        assert!(read_tls(&TlsFiles::default()).unwrap().is_none());
    }

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            without_credentials("redis://user:pw@h:1/0"),
            "redis://h:1/0"
        );
        assert_eq!(without_credentials("redis://h:1"), "redis://h:1");
    }
}
