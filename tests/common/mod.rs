//! Shared helpers for integration tests: fixture documents, a sidecar
//! started on port 0 over a snapshot file, and a small HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use env_sidecar::app::{self, Sidecar};
use env_sidecar::config::secret::Env;
use env_sidecar::config::{Config, FileConfig, HttpConfig, RedisConfig, Source, Timing};
use serde_json::{json, Value};

/// One environment document.
pub fn env(id: &str, slug: &str, pointers: Value) -> Value {
    json!({
        "id": id,
        "slug": slug,
        "name": format!("{slug} environment"),
        "color": "#16a34a",
        "system": slug == "prod" || slug == "staging",
        "pointers": pointers,
    })
}

/// A valid project: prod (fallback, position 0), staging (publish target,
/// position 1), qa and canary. Every pointer value is tagged
/// `<slug>-r<revision>` so a test can tell which revision served.
pub fn project(id: &str, revision: u64) -> Value {
    let tag = |slug: &str| json!({"prompts": {"summarize": format!("{slug}-r{revision}")}});
    let mut prod = env(&format!("{id}_prod"), "prod", tag("prod"));
    prod["gateway_fallback"] = json!(true);
    prod["production"] = json!(true);
    prod["position"] = json!(0);
    let mut staging = env(&format!("{id}_staging"), "staging", tag("staging"));
    staging["default_publish_target"] = json!(true);
    staging["position"] = json!(1);
    let mut qa = env(&format!("{id}_qa"), "qa", tag("qa"));
    qa["position"] = json!(2);
    let mut canary = env(&format!("{id}_canary"), "canary", tag("canary"));
    canary["position"] = json!(3);
    json!({"id": id, "revision": revision, "environments": [canary, qa, staging, prod]})
}

pub fn snapshot(revision: u64, projects: Vec<Value>) -> Value {
    json!({"revision": revision, "projects": projects})
}

/// A sidecar running in this test's runtime over a snapshot file.
pub struct TestSidecar {
    pub sidecar: Sidecar,
    pub dir: tempfile::TempDir,
    pub snapshot_path: PathBuf,
    pub client: reqwest::Client,
}

impl TestSidecar {
    /// Starts over `initial` (written as JSON), or over no file at all.
    pub async fn start(initial: Option<&Value>) -> TestSidecar {
        TestSidecar::start_with(initial, |_| {}).await
    }

    pub async fn start_with(
        initial: Option<&Value>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestSidecar {
        TestSidecar::start_configured(initial, tweak, test_options()).await
    }

    /// [`start_with`](Self::start_with), with the secrets in `env` (never
    /// the process environment: tests run in parallel threads).
    pub async fn start_with_env(
        initial: Option<&Value>,
        tweak: impl FnOnce(&mut Config),
        env: Env,
    ) -> TestSidecar {
        let options = app::Options {
            env,
            ..test_options()
        };
        TestSidecar::start_configured(initial, tweak, options).await
    }

    /// Starts over `initial` (or no file), with `tweak` applied to the
    /// test config and exactly `options`; waits for readiness when there
    /// is a file.
    pub async fn start_configured(
        initial: Option<&Value>,
        tweak: impl FnOnce(&mut Config),
        options: app::Options,
    ) -> TestSidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(doc) = initial {
            write_json(&dir.path().join("snapshot.json"), doc);
        }
        let mut config = file_config(dir.path());
        tweak(&mut config);
        let t = TestSidecar::launch_with(config, dir, options).await;
        if initial.is_some() {
            t.wait_ready().await;
        }
        t
    }

    /// Starts the sidecar following the control plane at `url`, without
    /// waiting for readiness.
    pub async fn follow(url: &str, tweak: impl FnOnce(&mut Config)) -> TestSidecar {
        TestSidecar::launch_following(url, tweak, test_options()).await
    }

    /// [`follow`](Self::follow), with the secrets in `env`.
    pub async fn follow_with_env(
        url: &str,
        tweak: impl FnOnce(&mut Config),
        env: Env,
    ) -> TestSidecar {
        let options = app::Options {
            env,
            ..test_options()
        };
        TestSidecar::launch_following(url, tweak, options).await
    }

    /// Follows the control plane at `url` with exactly `options`.
    pub async fn launch_following(
        url: &str,
        tweak: impl FnOnce(&mut Config),
        options: app::Options,
    ) -> TestSidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = http_config(dir.path(), url);
        tweak(&mut config);
        TestSidecar::launch_with(config, dir, options).await
    }

    /// Starts over `initial` (a snapshot file) with non-default start
    /// options (clock, limits), and waits until it is ready.
    pub async fn start_with_options(initial: &Value, options: app::Options) -> TestSidecar {
        TestSidecar::start_configured(Some(initial), |_| {}, options).await
    }

    /// Starts the sidecar with exactly `config`; `dir` lives as long as it.
    /// No secrets: the process environment is never read.
    pub async fn launch(config: Config, dir: tempfile::TempDir) -> TestSidecar {
        TestSidecar::launch_with(config, dir, test_options()).await
    }

    /// Starts the sidecar with exactly `config` and `options`.
    pub async fn launch_with(
        config: Config,
        dir: tempfile::TempDir,
        options: app::Options,
    ) -> TestSidecar {
        let snapshot_path = match &config.source.kind {
            Source::File(f) => f.path.clone(),
            _ => PathBuf::new(),
        };
        let sidecar = app::start_with(config, options)
            .await
            .expect("sidecar starts");
        TestSidecar {
            sidecar,
            dir,
            snapshot_path,
            client: reqwest::Client::new(),
        }
    }

    /// The answer's `summarize` prompt of `project`/`environment`, which the
    /// fixtures tag with the revision (`qa-r3`), or the status code.
    pub async fn served(&self, project: &str, environment: &str) -> String {
        let r = self
            .get(&format!(
                "/v1/resolve?project={project}&environment={environment}"
            ))
            .await;
        match r.body["pointers"]["prompts"]["summarize"].as_str() {
            Some(v) => v.to_owned(),
            None => format!("status {}", r.status),
        }
    }

    pub fn data(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.sidecar.data_addr(), path_and_query)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.sidecar.admin_addr(), path)
    }

    /// GET on the data plane: status, headers, JSON body.
    pub async fn get(&self, path_and_query: &str) -> Reply {
        Reply::from(
            self.client
                .get(self.data(path_and_query))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub async fn get_admin(&self, path: &str) -> Reply {
        Reply::from(
            self.client
                .get(self.admin(path))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        let req = self
            .client
            .post(self.data(path))
            .header("content-type", "application/json")
            .body(body);
        Reply::from(req.send().await.expect("request")).await
    }

    /// POST on the operator plane, with `token` as bearer when given.
    pub async fn post_admin(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.post(self.admin(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Reply::from(req.send().await.expect("request")).await
    }

    /// Replaces the snapshot file (atomically, as an operator's deploy
    /// would) and asks the source to look at it now.
    pub fn write_snapshot(&self, doc: &Value) {
        write_json(&self.snapshot_path, doc);
        self.sidecar.check_source_now();
    }

    pub fn write_raw(&self, bytes: &[u8]) {
        let tmp = self.snapshot_path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &self.snapshot_path).unwrap();
        self.sidecar.check_source_now();
    }

    /// Waits until the last recorded source error contains `text`.
    pub async fn wait_error_containing(&self, text: &str) {
        eventually(&format!("a source error containing {text:?}"), || async {
            self.sidecar
                .status()
                .events()
                .last_error
                .is_some_and(|e| e.message.contains(text))
        })
        .await;
    }

    /// Waits until the status says the source's population is
    /// incomplete (a Redis without a matching marker).
    pub async fn wait_population_incomplete(&self) {
        eventually("the population found incomplete", || async {
            self.sidecar
                .status()
                .incomplete()
                .is_some_and(|e| e.message.contains("population is incomplete"))
        })
        .await;
    }

    /// Waits until the source's last success is newer than its last
    /// error (it recovered from whatever failed).
    pub async fn wait_recovered(&self) {
        eventually("the source recovered", || async {
            let ev = self.sidecar.status().events();
            match (ev.last_success, ev.last_error) {
                (Some(ok), Some(error)) => ok.at > error.at,
                (Some(_), None) => true,
                _ => false,
            }
        })
        .await;
    }

    pub async fn wait_ready(&self) {
        eventually("sidecar ready", || async {
            self.get_admin("/readyz").await.status == 200
        })
        .await;
    }

    /// Waits until the project's served revision is `revision`.
    pub async fn wait_revision(&self, project: &str, revision: u64) {
        eventually(&format!("{project} at revision {revision}"), || async {
            self.sidecar.store().project(project).map(|p| p.revision()) == Some(revision)
        })
        .await;
    }

    /// Serves one project (`acme` at revision 1) under `limits`.
    pub async fn with_limits(limits: env_sidecar::server::Limits) -> TestSidecar {
        let options = app::Options {
            limits,
            ..test_options()
        };
        TestSidecar::start_with_options(&snapshot(1, vec![project("acme", 1)]), options).await
    }

    /// Starts with exactly `config` on `clock` (the system's when `None`)
    /// and waits until it is ready.
    pub async fn launch_ready(
        config: Config,
        clock: Option<&env_sidecar::model::clock::ManualClock>,
    ) -> TestSidecar {
        let mut options = test_options();
        if let Some(clock) = clock {
            options.clock = std::sync::Arc::new(clock.clone());
        }
        let t =
            TestSidecar::launch_with(config, tempfile::tempdir().expect("tempdir"), options).await;
        t.wait_ready().await;
        t
    }

    /// The value of `series` (`name{labels}`) on `/metrics` now (0 when
    /// the series is not there yet).
    pub async fn metric(&self, series: &str) -> f64 {
        sample(&self.get_admin("/metrics").await.text, series).unwrap_or(0.0)
    }

    /// Waits until project `id`'s last rejection has `reason`.
    pub async fn wait_rejection(&self, id: &str, reason: &str) {
        eventually(&format!("{id} rejected as {reason}"), || async {
            self.sidecar
                .store()
                .rejection(id)
                .is_some_and(|r| r.reason.as_str() == reason)
        })
        .await;
    }

    /// Waits until project `id`'s last rejection has `reason` and names
    /// `revision`.
    pub async fn wait_rejection_at(&self, id: &str, reason: &str, revision: Option<u64>) {
        eventually(
            &format!("{id} rejected as {reason} at {revision:?}"),
            || async {
                self.sidecar
                    .store()
                    .rejection(id)
                    .is_some_and(|r| r.reason.as_str() == reason && r.revision == revision)
            },
        )
        .await;
    }

    /// Waits until the source took a full load (Redis) since it started.
    pub async fn wait_full_load(&self) {
        eventually("a full load done", || async {
            self.sidecar
                .status()
                .events()
                .last_success
                .is_some_and(|e| e.message.contains("full load"))
        })
        .await;
    }

    /// Waits until the sidecar has read its Redis stream up to `entry` (an
    /// id `XADD` answered).
    pub async fn wait_stream_entry(&self, entry: &str) {
        let entry = env_sidecar::model::cursor::StreamId::parse(entry).expect("a stream id");
        eventually(&format!("stream entry {entry} read"), || async {
            self.sidecar
                .store()
                .cursor()
                .stream()
                .is_some_and(|at| at >= entry)
        })
        .await;
    }

    /// Waits until the source has applied its last read (success or error
    /// recorded after `since`).
    pub async fn wait_source_read_after(&self, since: std::time::SystemTime) {
        eventually("the source to read the file", || async {
            let ev = self.sidecar.status().events();
            ev.last_success.is_some_and(|e| e.at >= since)
                || ev.last_error.is_some_and(|e| e.at >= since)
        })
        .await;
    }
}

/// Start options for tests: no secrets (the process environment is never
/// read), the system clock, default limits.
pub fn test_options() -> app::Options {
    app::Options {
        env: Env::from_pairs::<&str, &str>([]),
        ..app::Options::default()
    }
}

/// Test defaults: port 0 everywhere, no disk cache, a snapshot file in
/// `dir` checked every 50 ms.
pub fn file_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.source.kind = Source::File(FileConfig {
        path: dir.join("snapshot.json"),
    });
    config.source.poll_interval = Duration::from_millis(50);
    config.cache.path = PathBuf::new();
    config
}

/// Short timeouts, so faults clear fast.
pub fn fast_timing() -> Timing {
    Timing {
        long_poll_wait: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        backoff_max: Duration::from_millis(300),
    }
}

/// Following a control plane, with short timeouts so faults clear fast.
pub fn http_config(dir: &std::path::Path, url: &str) -> Config {
    let mut config = file_config(dir);
    config.source.kind = Source::Http(HttpConfig {
        timing: fast_timing(),
        ..HttpConfig::new(url)
    });
    config.source.poll_interval = Duration::from_millis(100);
    config
}

/// Following Redis at `url`, with short timeouts so faults clear fast.
pub fn redis_config(dir: &std::path::Path, url: &str) -> Config {
    let mut config = http_config(dir, url);
    config.source.kind = Source::Redis(RedisConfig {
        timing: fast_timing(),
        ..RedisConfig::new(url)
    });
    config
}

/// The Redis settings of `config` (it follows Redis).
pub fn redis_mut(config: &mut Config) -> &mut RedisConfig {
    match &mut config.source.kind {
        Source::Redis(r) => r,
        other => panic!("not a Redis source: {other:?}"),
    }
}

/// The HTTP settings of `config` (it follows a control plane).
pub fn http_mut(config: &mut Config) -> &mut HttpConfig {
    match &mut config.source.kind {
        Source::Http(h) => h,
        other => panic!("not an HTTP source: {other:?}"),
    }
}

/// `count` fixture projects named `p0`, `p1`, ... at revision 1.
pub fn numbered(count: usize) -> Vec<Value> {
    (0..count).map(|i| project(&format!("p{i}"), 1)).collect()
}

/// The ids `p0` .. `p{count-1}`.
pub fn numbered_ids(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("p{i}")).collect()
}

/// Control-plane requests served while `window` passes.
pub async fn requests_during(
    sim: &env_sidecar::sim::simulator::Simulator,
    window: Duration,
) -> u64 {
    let before = sim.requests();
    tokio::time::sleep(window).await;
    sim.requests() - before
}

/// A simulator serving `projects` as its baseline.
pub async fn simulator(
    projects: Vec<Value>,
    token: Option<&str>,
) -> env_sidecar::sim::simulator::Simulator {
    let sim = env_sidecar::sim::simulator::Simulator::start(
        "127.0.0.1:0".parse().unwrap(),
        token.map(str::to_owned),
    )
    .await
    .expect("simulator starts");
    sim.publish(projects);
    sim.compact();
    sim
}

/// The value of one sample line (`name{labels} value`) in an exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Writes `doc` as `dir/name`; its path.
pub fn json_file(dir: &std::path::Path, name: &str, doc: &Value) -> PathBuf {
    let path = dir.join(name);
    write_json(&path, doc);
    path
}

pub fn write_json(path: &std::path::Path, doc: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `cond` until it holds; fails the test after 10 s. This bounds a
/// wait for an asynchronous effect; it asserts nothing about speed.
pub async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(Duration::from_secs(10), what, cond).await
}

/// [`eventually`] with a limit of `limit`.
pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error shape and returns the code.
    pub fn error_code(&self) -> &str {
        let code = self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error shape in {}", self.text));
        let message = self.body["error"]["message"]
            .as_str()
            .expect("error.message");
        assert!(!message.is_empty(), "error message is empty");
        code
    }
}

/// Sends `request` verbatim over a fresh TCP connection and reads the
/// answer until the server closes it. For paths and bytes an HTTP client
/// library would normalise or refuse to send.
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A GET of `path` (sent exactly as given) with `Connection: close`.
pub async fn raw_get(addr: std::net::SocketAddr, path: &[u8]) -> (u16, String) {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path);
    req.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    raw_request(addr, &req).await
}

pub mod rules;
pub mod targets;

/// Whether the long forms run: the soaks at their full length, the scale
/// tests at full scale, the property tests with all their cases. CI sets
/// `ENV_SIDECAR_LONG_TESTS=1`; a plain `cargo test` runs the short forms
/// (the same assertions on less), so a newcomer's run stays short.
pub fn long_tests() -> bool {
    std::env::var_os("ENV_SIDECAR_LONG_TESTS").is_some_and(|v| v != "0")
}

/// `long` under [`long_tests`], a quarter of it otherwise: how many
/// generated cases a property test runs, or a scale test holds.
pub fn scaled(long: u32) -> u32 {
    if long_tests() {
        long
    } else {
        (long / 4).max(1)
    }
}

/// Runs `command` to its end: whether it succeeded, and what it wrote
/// (stdout, then stderr).
pub fn run_to_end(command: &mut std::process::Command) -> (bool, String) {
    let out = command.output().expect("the program runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A system program a test drives for real (nginx, prometheus, promtool).
/// Where it is missing the test is skipped with a printed reason, unless
/// `ENV_SIDECAR_REQUIRE_TOOLS` is set: CI sets it after installing them,
/// so there a missing program fails instead of passing silently.
pub fn system_tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("ENV_SIDECAR_REQUIRE_TOOLS").is_none(),
            "{name} is required here: apt-get install {package}"
        );
        println!("SKIPPED: {name} is not installed (apt-get install {package}; CI installs it)");
    }
    found
}
/// `python3` able to import `module` (from PyPI's `package`), for tests
/// that drive a Python library for real; skipped like [`system_tool`]
/// where it is missing.
pub fn python_with(module: &str, package: &str) -> Option<PathBuf> {
    let python = system_tool("python3", "python3")?;
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("ENV_SIDECAR_REQUIRE_TOOLS").is_none(),
            "the Python module {module} is required here: pip install {package}"
        );
        println!(
            "SKIPPED: Python's {module} is not installed (pip install {package}; CI installs it)"
        );
        return None;
    }
    Some(python)
}

pub mod attacker;
pub mod fleet;
pub mod gateway;
pub mod h2;
pub mod process;
pub mod redis;
pub mod resolver_loop;
pub mod shared;
pub mod signing;
pub mod topology;

/// The documents the last-known-good cache at `path` holds, as their
/// text (none while there is no valid cache): what a test looks for in
/// the cache now that the file is binary.
pub fn cached_documents(path: &std::path::Path) -> Vec<String> {
    env_sidecar::sync::cache::load(path).map_or_else(
        |_| Vec::new(),
        |cached| {
            cached
                .projects
                .iter()
                .filter_map(|p| p.stored_text().ok())
                .collect()
        },
    )
}

/// True when a document the cache at `path` holds contains `text`.
pub fn cache_contains(path: &std::path::Path, text: &str) -> bool {
    cached_documents(path).iter().any(|d| d.contains(text))
}

/// The cache at `path` in the form version 1 files had (`{"body":
/// {"cursor", "projects": [documents as JSON], "signers", "removed",
/// "refused"}}`): for tests that edit a cache as an earlier version
/// wrote it.
pub fn cache_as_v1(path: &std::path::Path) -> Value {
    use env_sidecar::model::floor::Floor;
    let cached = env_sidecar::sync::cache::load(path).expect("a cache");
    let projects: Vec<Value> = cached_documents(path)
        .iter()
        .map(|text| serde_json::from_str(text).expect("documents are JSON"))
        .collect();
    let mut removed = serde_json::Map::new();
    let mut refused = serde_json::Map::new();
    for (id, floor) in &cached.floors {
        match floor {
            Floor::Removed(revision) => {
                removed.insert(id.clone(), json!(revision));
            }
            Floor::Refused {
                revision,
                signed_at,
            } => {
                let nanos = signed_at
                    .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
                refused.insert(id.clone(), json!([revision, nanos]));
            }
        }
    }
    let mut signers = cached.signers.clone();
    for p in &cached.projects {
        if let Some(verified) = p.signature() {
            signers.insert(p.id().to_owned(), verified.keyids.clone());
        }
    }
    json!({"body": {
        "cursor": cached.cursor,
        "projects": projects,
        "signers": signers,
        "removed": removed,
        "refused": refused,
    }})
}
