//! A real Prometheus (Debian's `prometheus`) scrapes the sidecar's
//! `/metrics` and its query API returns the resolve counter. Skipped, with
//! a printed reason, where the binary is absent (CI installs it and
//! requires it).

mod common;

use std::time::{Duration, Instant};

use common::{project, snapshot, TestSidecar};

#[tokio::test]
async fn prometheus_ingests_the_resolve_counter() {
    let Some(prometheus) = common::system_tool("prometheus", "prometheus") else {
        return;
    };
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    for _ in 0..5 {
        t.get("/v1/resolve?project=acme&environment=qa").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: env-sidecar\n    static_configs:\n      - targets: ['{}']\n",
            t.sidecar.admin_addr()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=env_sidecar_resolve_requests_total%7Boutcome%3D%22exact%22%2Capi%3D%22resolve%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let value = loop {
        if let Ok(resp) = reqwest::get(&query).await {
            last = resp.text().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            if let Some(v) = body["data"]["result"][0]["value"][1].as_str() {
                break v.parse::<f64>().unwrap_or(-1.0);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("prometheus never returned the counter; last answer: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(value, 5.0, "{last}");
}
