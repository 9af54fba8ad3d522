//! A real Prometheus (Debian's `prometheus`) with the shipped rules and
//! dashboard: it scrapes the sidecar and answers the resolve counter; the
//! rules pass `promtool test rules` (each alert firing and not firing);
//! every metric the rules name is one the sidecar exports; every query of
//! the Grafana dashboard evaluates without error against live data.
//! Skipped, with a printed reason, where the programs are absent (CI
//! installs them and requires them).

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::gateway::Proc;
use common::shared::free_addr;
use common::{project, snapshot, system_tool, TestSidecar};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Prometheus scraping the sidecar's operator plane every second, with the
/// shipped rules loaded; returns the process and its API base URL.
fn start_prometheus(prometheus: &Path, dir: &Path, admin: std::net::SocketAddr) -> (Proc, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: env-sidecar\n    static_configs:\n      - targets: ['{admin}']\n",
            repo("config/prometheus/env-sidecar.rules.yml").display()
        ),
    )
    .unwrap();
    let listen = free_addr();
    let child = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus starts");
    (Proc(child), format!("http://{listen}/api/v1"))
}

/// `GET <api>/query?query=…`, retried until `accept` holds (60 s).
async fn query_until(api: &str, promql: &str, accept: impl Fn(&Value) -> bool) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        if let Ok(resp) = client
            .get(format!("{api}/query"))
            .query(&[("query", promql)])
            .send()
            .await
        {
            last =
                serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null);
            if accept(&last) {
                return last;
            }
        }
        assert!(Instant::now() < deadline, "{promql}: last answer {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn prometheus_ingests_the_resolve_counter_and_evaluates_the_dashboard() {
    let Some(prometheus) = system_tool("prometheus", "prometheus") else {
        return;
    };
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    for _ in 0..5 {
        t.get("/v1/resolve?project=acme&environment=qa").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, api) = start_prometheus(&prometheus, dir.path(), t.sidecar.admin_addr());
    let answer = query_until(
        &api,
        r#"env_sidecar_resolve_requests_total{outcome="exact",api="resolve"}"#,
        |v| v["data"]["result"][0]["value"][1].is_string(),
    )
    .await;
    assert_eq!(answer["data"]["result"][0]["value"][1], "5", "{answer}");

    // Every query of the dashboard, with its variables set as Grafana
    // would, evaluates without error.
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(repo("config/grafana/env-sidecar.json")).unwrap())
            .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", "env-sidecar")
                .replace("$instance", ".*");
            let answer = query_until(&api, &expr, |v| v["status"].is_string()).await;
            assert_eq!(
                answer["status"], "success",
                "{}: {expr}: {answer}",
                panel["title"]
            );
            queries += 1;
        }
    }
    assert!(queries >= 15, "{queries} queries");
    // The shipped rules loaded and evaluated cleanly.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client
            .get(format!("{api}/rules"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let rules: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let groups = rules["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().iter())
            .collect();
        if all.len() == 11 && all.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "rules not all healthy: {rules}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let Some(promtool) = system_tool("promtool", "prometheus") else {
        return;
    };
    for args in [
        vec![
            "check".into(),
            "rules".into(),
            repo("config/prometheus/env-sidecar.rules.yml")
                .display()
                .to_string(),
        ],
        vec!["test".into(), "rules".into(), "rules_test.yml".into()],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(&args)
            .current_dir(repo("tests/fixtures/prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    let exposition = t.get_admin("/metrics").await.text;
    let exported: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for file in [
        "config/prometheus/env-sidecar.rules.yml",
        "config/grafana/env-sidecar.json",
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let mut named = BTreeSet::new();
        for (i, _) in text.match_indices("env_sidecar_") {
            // Recording rule names (env_sidecar:…) are not exported metrics.
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_owned();
            named.insert(base);
        }
        assert!(named.len() >= 8, "{file}: {named:?}");
        for name in &named {
            assert!(
                exported.contains(name.as_str()),
                "{file} names {name}, which /metrics does not export"
            );
        }
    }
}
