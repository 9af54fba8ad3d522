//! A real `redis-server` (Debian's `redis-server`) on a free loopback port,
//! started and stopped by the tests, and a client to write to it the way
//! a publisher does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use env_sidecar::config::TlsFiles;
use env_sidecar::redis_client::connection::Settings;
use env_sidecar::redis_client::{self as redis_source, Conn, Connector, RedisKeys, Role};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    binary: PathBuf,
    /// `rediss://` when TLS is on.
    pub url: String,
}

/// Options for [`RedisServer::start`].
#[derive(Default, Clone)]
pub struct Setup {
    pub password: Option<String>,
    /// Serve TLS only, with the server certificate of these files.
    pub tls: Option<Pki>,
    /// With `tls`: require a client certificate (`tls-auth-clients yes`).
    pub client_auth: bool,
    /// Also listen on this Unix socket.
    pub unix_socket: Option<PathBuf>,
    /// More `redis-server` arguments (`--maxmemory-policy` …).
    pub extra: Vec<String>,
    /// A Redis Cluster node (its bus on the port + 10000).
    pub cluster: bool,
    /// A read-only replica of the server on this loopback port, with
    /// `replica-serve-stale-data no` (docs/control-plane.md's advice: until its first
    /// sync it answers errors, not an empty data set).
    pub replica_of: Option<u16>,
}

impl RedisServer {
    /// `None` (test skipped) where redis-server is not installed.
    pub fn start(dir: &Path, setup: Setup) -> Option<RedisServer> {
        let binary = super::system_tool("redis-server", "redis-server")?;
        let port = if setup.cluster {
            cluster_port()
        } else {
            super::shared::free_addr().port()
        };
        let mut args = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
            // DEBUG SLEEP stalls the server in the soak.
            "--enable-debug-command".into(),
            "local".into(),
        ];
        let scheme = if let Some(pki) = &setup.tls {
            args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                pki.server_cert.display().to_string(),
                "--tls-key-file".into(),
                pki.server_key.display().to_string(),
                "--tls-ca-cert-file".into(),
                pki.ca.display().to_string(),
                "--tls-auth-clients".into(),
                if setup.client_auth { "yes" } else { "no" }.into(),
            ]);
            "rediss"
        } else {
            args.extend(["--port".into(), port.to_string()]);
            "redis"
        };
        if let Some(password) = &setup.password {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        if let Some(socket) = &setup.unix_socket {
            args.extend([
                "--unixsocket".into(),
                socket.display().to_string(),
                "--unixsocketperm".into(),
                "700".into(),
            ]);
        }
        if setup.cluster {
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                format!("nodes-{port}.conf"),
                "--cluster-node-timeout".into(),
                "1000".into(),
            ]);
        }
        args.extend(setup.extra.iter().cloned());
        if let Some(primary) = setup.replica_of {
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.to_string(),
            ]);
        }
        let host = if setup.tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let mut server = RedisServer {
            child: None,
            port,
            dir: dir.to_owned(),
            args,
            binary,
            url: format!("{scheme}://{host}:{port}/0"),
        };
        server.restart();
        Some(server)
    }

    /// A primary and a read-only replica of it (`None`: skipped).
    pub fn with_replica(dir: &Path) -> Option<(RedisServer, RedisServer)> {
        let primary = RedisServer::start(dir, Setup::default())?;
        let setup = Setup {
            replica_of: Some(primary.port),
            ..Setup::default()
        };
        let replica = RedisServer::start(dir, setup)?;
        Some((primary, replica))
    }

    /// Starts the server again (empty: nothing is saved) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join(format!("redis-{}.log", self.port))).unwrap();
        self.child = Some(
            Command::new(&self.binary)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "redis-server on port {} exited ({status}): see {}",
                    self.port,
                    self.dir.join(format!("redis-{}.log", self.port)).display()
                );
            }
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server answers: a Redis reply to `PING` (`+PONG`, or an
    /// error such as `-NOAUTH`) over plain TCP. A bare connect is not
    /// enough: a connect to a port nobody listens on yet can meet itself
    /// (TCP simultaneous open), and would then read its own `PING` back.
    /// Over TLS only the connect is checked.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if !self.url.starts_with("redis://") {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut first = [0u8; 1];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut first).is_ok()
            && matches!(first[0], b'+' | b'-')
    }

    /// SIGKILL: Redis is gone, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = super::shared::free_addr().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// `redis://127.0.0.1:PORT` (no database: cluster nodes have only 0).
    pub fn node_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A publisher's connection (to the primary, through the sidecar's own
/// connection layer: any URL it takes).
pub struct Publisher {
    pub con: Conn,
    pub keys: RedisKeys,
}

impl Publisher {
    pub async fn connect(url: &str, password: Option<&str>, tls: TlsFiles) -> Publisher {
        let connector = Connector::new(Settings {
            url,
            password: password.map(env_sidecar::config::secret::Secret::new),
            tls: &tls,
            read_from: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
        })
        .expect("a usable URL");
        let con = connector
            .connect(Role::Write)
            .await
            .expect("connects to redis");
        Publisher {
            con,
            keys: RedisKeys::new("env-sidecar"),
        }
    }

    /// [`Publisher::connect`] to a server without password or TLS.
    pub async fn plain(url: &str) -> Publisher {
        Publisher::connect(url, None, TlsFiles::default()).await
    }

    /// Writes `doc` (a document, or an envelope: its payload names the
    /// id) the way a publisher does.
    /// Returns the stream entry id.
    pub async fn write(&mut self, doc: &serde_json::Value) -> String {
        let id = match doc["id"].as_str() {
            Some(id) => id.to_owned(),
            // An envelope is attributed to the id its payload names.
            None => {
                env_sidecar::model::wire::parse_element(&doc.to_string())
                    .expect("an envelope")
                    .id
            }
        };
        redis_source::write_project(&mut self.con, &self.keys, &id, &doc.to_string())
            .await
            .expect("written")
    }

    /// Writes `(id, document)` pairs in transactions of 1 000, the last
    /// one marking the population complete (as `publish` does).
    pub async fn write_all(&mut self, docs: Vec<(String, String)>) {
        use redis_source::{write_changes, Change, Population};
        let changes: Vec<Change> = docs
            .into_iter()
            .map(|(project, document)| Change {
                project,
                document: Some(document),
            })
            .collect();
        let chunks: Vec<&[Change]> = changes.chunks(1000).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let population = match i + 1 == chunks.len() {
                true => Population::Complete,
                false => Population::Untouched,
            };
            write_changes(&mut self.con, &self.keys, chunk, population)
                .await
                .expect("written");
        }
    }

    /// Writes `doc` as a writer that follows the hash-and-stream rule
    /// alone does: the hash field and the stream entry in one
    /// transaction, the population marker untouched.
    pub async fn write_unmarked(&mut self, doc: &serde_json::Value) -> String {
        self.unmarked(doc["id"].as_str().expect("an id"), Some(doc.to_string()))
            .await
    }

    /// Removes `id` as such a writer does: a `removed` entry.
    pub async fn remove_unmarked(&mut self, id: &str) -> String {
        self.unmarked(id, None).await
    }

    async fn unmarked(&mut self, id: &str, document: Option<String>) -> String {
        use redis_source::{write_changes, Change, Population};
        let change = Change {
            project: id.to_owned(),
            document,
        };
        let mut ids = write_changes(&mut self.con, &self.keys, &[change], Population::Untouched)
            .await
            .expect("written");
        ids.pop().expect("an entry")
    }

    pub async fn remove(&mut self, id: &str) {
        redis_source::remove_project(&mut self.con, &self.keys, id)
            .await
            .expect("removed");
    }

    /// Any command, for the tests' own fiddling (XTRIM, DEL, DEBUG …).
    pub async fn run(&mut self, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut self.con)
            .await
            .expect("the command runs")
    }
}

/// A throwaway CA (made with openssl), a server certificate for
/// `localhost` and a client certificate, both signed by it.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// `None` (test skipped) where openssl is not installed.
    pub fn make(dir: &Path) -> Option<Pki> {
        let openssl = super::system_tool("openssl", "openssl")?;
        let run = |args: &[&str]| {
            let out = Command::new(&openssl).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let p = |name: &str| dir.join(name).display().to_string();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=env-sidecar test CA",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        for (name, subject) in [("server", "/CN=localhost"), ("client", "/CN=env-sidecar")] {
            let (key, csr, cert) = (
                p(&format!("{name}.key")),
                p(&format!("{name}.csr")),
                p(&format!("{name}.pem")),
            );
            run(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                subject,
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &p("ca.pem"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &p("ext.cnf"),
            ]);
        }
        Some(Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        })
    }

    /// What a client needs: the CA, and the client certificate.
    pub fn client_files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
        }
    }
}

/// How often each command ran on the server at `port`, from `INFO
/// commandstats` (commands a script ran count too): `hscan` → calls.
pub fn command_calls(port: u16) -> std::collections::BTreeMap<String, u64> {
    super::attacker::redis_cli(port, &["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}
