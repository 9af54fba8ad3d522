//! A fleet of real sidecar processes for the convergence tests: configs
//! written per node, the `env-sidecar` operator commands run as the
//! binary, and waiting on their output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::SidecarProcess;

/// A node's config: port 0 everywhere, a cache of its own, short timeouts,
/// `[source]` from `source` and anything else from `extra`.
pub fn node_config(dir: &Path, id: &str, region: &str, source: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{id}.toml"));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [source]\n{source}\nrequest_timeout = \"1s\"\nbackoff_max = \"300ms\"\n\
         [cache]\npath = \"{cache}\"\n\
         [node]\nid = \"{id}\"\nlabels = {{ region = \"{region}\" }}\n\
         {extra}\n",
        cache = dir.join(format!("{id}-cache.json")).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The `[source]` lines of a node following Redis at `url`.
pub fn redis_source(url: &str) -> String {
    format!("kind = \"redis\"\nurl = \"{url}\"\nlong_poll_wait = \"2s\"")
}

/// The `[source]` lines of a node following a control plane at `url`.
pub fn http_source(url: &str) -> String {
    format!("kind = \"http\"\nurl = \"{url}\"\nlong_poll_wait = \"2s\"")
}

/// `[report]` with a heartbeat of `interval`.
pub fn reporting(interval: &str) -> String {
    format!("[report]\ninterval = \"{interval}\"\nmin_interval = \"100ms\"")
}

/// Starts `config` as a process.
pub fn start(config: &Path, envs: &[(&str, &str)]) -> SidecarProcess {
    SidecarProcess::start(config, envs)
}

/// Until `fleet status` on `store` (`--redis URL`, `--control-plane
/// URL`) lists every node of `ids`: on a busy machine a node's first
/// report can come after a test's next step, and `fleet wait` counts
/// only the nodes that have reported.
pub fn listed(store: &[&str], ids: &[&str]) {
    let mut args = vec!["fleet", "status"];
    args.extend_from_slice(store);
    until(Duration::from_secs(240), &args, |out| {
        ids.iter().all(|id| out.contains(&format!("node={id} ")))
    });
}

/// `env-sidecar ARGS…`: exit code and stdout.
pub fn run(args: &[&str]) -> (i32, String) {
    run_with_env(args, &[])
}

/// `env-sidecar ARGS…` with `envs` set: exit code and stdout.
pub fn run_with_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let (code, stdout, _) = run_capturing(args, envs);
    (code, stdout)
}

/// [`run_with_env`], with stderr too: exit code, stdout, stderr.
pub fn run_capturing(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = super::shared::sidecar_command()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `env-sidecar publish --redis URL ARGS… FILE`: exit code and stdout.
pub fn publish(url: &str, args: &[&str], file: &Path) -> (i32, String) {
    let mut all = vec!["publish", "--redis", url];
    all.extend_from_slice(args);
    all.push(file.to_str().expect("a UTF-8 path"));
    run(&all)
}

/// Runs `args` until its output satisfies `want` (at most `limit`),
/// returning that output. A bound on waiting for an effect, not a timing
/// assertion.
pub fn until(limit: Duration, args: &[&str], want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, out) = run(args);
        if want(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on `env-sidecar {}`; last output:\n{out}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to `node`.
pub fn signal(node: &SidecarProcess, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &node.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The node's `/admin/status`, as JSON.
pub async fn status(node: &SidecarProcess) -> serde_json::Value {
    let text = reqwest::get(format!("http://{}/admin/status", node.admin_addr))
        .await
        .expect("status answers")
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The node's `/metrics` text.
pub async fn metrics(node: &SidecarProcess) -> String {
    reqwest::get(format!("http://{}/metrics", node.admin_addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .unwrap()
}

/// [`run`] off the async threads (a test serving a simulator must not
/// block its runtime).
pub async fn run_async(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    })
    .await
    .unwrap()
}

/// `publish --redis URL [--wait --timeout 30s]` of `acme` at `revision`
/// and `globex` at 1 (a file written in `dir`); asserts exit 0 and
/// returns the output.
pub async fn publish_acme(dir: &Path, url: &str, revision: u64, wait: bool) -> String {
    let file = acme_file(dir, revision);
    let mut args = vec!["publish", "--redis", url];
    if wait {
        args.extend(["--wait", "--timeout", "30s"]);
    }
    args.push(file.to_str().expect("a UTF-8 path"));
    let (code, out) = run_async(&args).await;
    assert_eq!(code, 0, "{out}");
    out
}

/// [`publish_acme`] with `--wait`, started while the primary is down: it
/// must ride the failover out and converge. Returns stdout and stderr:
/// whether it had to say `waiting for` depends on the topology (a
/// cluster's client retries inside one request, and a fast failover ends
/// before that request gives up), so the caller asserts that.
pub async fn publish_acme_through_failover(
    dir: &Path,
    url: &str,
    revision: u64,
) -> (String, String) {
    let file = acme_file(dir, revision).display().to_string();
    let url = url.to_owned();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_capturing(
            &[
                "publish",
                "--redis",
                &url,
                "--wait",
                "--timeout",
                "30s",
                &file,
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    (out, err)
}

/// The snapshot file of `acme` at `revision` and `globex` at 1.
fn acme_file(dir: &Path, revision: u64) -> PathBuf {
    super::json_file(
        dir,
        &format!("acme-{revision}.json"),
        &super::snapshot(
            revision,
            vec![
                super::project("acme", revision),
                super::project("globex", 1),
            ],
        ),
    )
}
