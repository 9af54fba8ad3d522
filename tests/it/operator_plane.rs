//! The operator plane: metrics (names, labels, counters that move, a real
//! Prometheus parser), status, forced refresh (results, scope, override,
//! coalescing, auth), staleness, the public-bind refusal, the Unix socket.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{
    eventually, file_config, http_config, project, raw_request, sample, simulator, snapshot, Reply,
    TestSidecar,
};
use env_sidecar::app::{self, Options, StartError};
use env_sidecar::config::secret::Env;
use env_sidecar::config::SyncMode;
use env_sidecar::model::clock::ManualClock;
use env_sidecar::sim::simulator::Faults;
use serde_json::json;

#[tokio::test]
async fn metrics_have_every_contract_name_and_counters_move() {
    let t = TestSidecar::start(Some(&snapshot(9, vec![project("acme", 3)]))).await;
    t.get("/v1/resolve?project=acme&environment=qa").await;
    t.get("/v1/resolve?project=acme&environment=perf").await;
    t.get("/v1/resolve?project=acme&environment=perf&strict=true")
        .await;
    t.get("/v1/resolve?project=nobody").await;
    t.get("/v1/resolve?project=bad%20id").await;
    t.post(
        "/v1/resolve/batch",
        r#"{"requests":[{"project":"acme"},{"project":"acme","environment":"qa"}]}"#,
    )
    .await;
    let m = t.get_admin("/metrics").await.text;
    for name in env_sidecar::telemetry::metrics::ALL {
        assert!(
            m.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{m}"
        );
    }
    let count = |api: &str, outcome: &str| {
        sample(
            &m,
            &format!("env_sidecar_resolve_requests_total{{outcome=\"{outcome}\",api=\"{api}\"}}"),
        )
    };
    assert_eq!(count("resolve", "exact"), Some(1.0));
    assert_eq!(count("batch", "exact"), Some(1.0));
    assert_eq!(count("resolve", "fallback"), Some(1.0));
    assert_eq!(count("batch", "fallback"), Some(1.0));
    assert_eq!(count("resolve", "unknown_environment"), Some(1.0));
    assert_eq!(count("resolve", "unknown_project"), Some(1.0));
    assert_eq!(count("resolve", "invalid_request"), Some(1.0));
    assert_eq!(count("resolve", "not_ready"), Some(0.0));
    for api in ["authz_http", "authz_grpc"] {
        assert_eq!(
            count(api, "exact"),
            Some(0.0),
            "every api is exported from the start"
        );
    }
    assert_eq!(
        sample(&m, "env_sidecar_resolve_duration_seconds_count"),
        Some(7.0)
    );
    assert!(
        m.contains("env_sidecar_resolve_duration_seconds_bucket{le=\"0.000001\"}"),
        "microsecond buckets"
    );
    assert_eq!(sample(&m, "env_sidecar_projects"), Some(1.0));
    assert_eq!(sample(&m, "env_sidecar_environments"), Some(4.0));
    assert_eq!(sample(&m, "env_sidecar_snapshot_revision"), Some(9.0));
    assert!(sample(&m, "env_sidecar_snapshot_age_seconds").is_some());
    assert!(
        sample(
            &m,
            "env_sidecar_sync_requests_total{kind=\"snapshot\",result=\"ok\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            &format!(
                "env_sidecar_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    // No label carries a project id or anything a request sent.
    assert!(!m.contains("acme") && !m.contains("nobody") && !m.contains("perf"));

    t.get("/v1/resolve?project=acme&environment=qa").await;
    let m = t.get_admin("/metrics").await.text;
    assert_eq!(
        sample(
            &m,
            "env_sidecar_resolve_requests_total{outcome=\"exact\",api=\"resolve\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn rejections_and_propagation_are_counted() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = TestSidecar::follow(&sim.url(), |_| {}).await;
    t.wait_ready().await;
    let mut bad = project("acme", 2);
    bad["environments"][0]["color"] = json!("red");
    let mut published = project("globex", 1);
    published["published_at"] = json!(env_sidecar::model::timestamp::format_rfc3339(
        SystemTime::now()
    ));
    sim.publish([bad, published]);
    t.wait_revision("globex", 1).await;
    let m = t.get_admin("/metrics").await.text;
    assert_eq!(
        sample(
            &m,
            "env_sidecar_project_rejections_total{reason=\"invalid_color\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "env_sidecar_propagation_delay_seconds_count"),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "env_sidecar_sync_requests_total{kind=\"changes\",result=\"ok\"}"
        )
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Some(promtool) = common::system_tool("promtool", "prometheus") else {
        return;
    };
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    t.get("/v1/resolve?project=acme").await;
    let text = t.get_admin("/metrics").await.text;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn status_reports_accepted_and_rejected_updates() {
    let t = TestSidecar::start(Some(&snapshot(
        5,
        vec![project("acme", 1), project("globex", 1)],
    )))
    .await;
    let mut bad = project("acme", 2);
    bad["environments"].as_array_mut().unwrap().truncate(1);
    t.write_snapshot(&snapshot(6, vec![bad, project("globex", 2)]));
    t.wait_revision("globex", 2).await;
    // The store moves before the status records the fetch that moved it.
    eventually("the status recording the update", || async {
        t.get_admin("/admin/status").await.body["last_success"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 changed, 1 rejected"))
    })
    .await;
    let s = t.get_admin("/admin/status").await;
    assert_eq!(s.status, 200, "{}", s.text);
    let b = &s.body;
    assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(b["ready"], true);
    assert_eq!(b["source"]["kind"], "file");
    assert!(b["source"]["path"]
        .as_str()
        .unwrap()
        .ends_with("snapshot.json"));
    assert_eq!(b["cursor"], 6);
    assert_eq!(b["projects"], 2);
    assert_eq!(b["environments"], 8);
    assert!(b["last_success"]["message"]
        .as_str()
        .unwrap()
        .contains("1 changed, 1 rejected"));
    assert!(b["last_success"]["at"].as_str().unwrap().ends_with('Z'));
    assert!(b["snapshot_age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(b["rejected"][0]["project"], "acme");
    assert_eq!(b["rejected"][0]["reason"], "environment_count");
    assert_eq!(b["rejected"][0]["revision"], 2);
    assert_eq!(b["cache"]["path"], json!(null));
}

#[tokio::test]
async fn status_shows_the_control_plane_url_and_never_the_token() {
    let sim = simulator(vec![project("acme", 1)], Some("cp-s3cret")).await;
    let t = TestSidecar::follow_with_env(
        &sim.url(),
        |c| common::http_mut(c).token_env = "CP_TOKEN".into(),
        Env::from_pairs([("CP_TOKEN", "cp-s3cret")]),
    )
    .await;
    t.wait_ready().await;
    let s = t.get_admin("/admin/status").await;
    assert_eq!(s.body["source"]["url"], sim.url());
    assert_eq!(s.body["source"]["mode"], "watch");
    assert!(!s.text.contains("cp-s3cret"));
}

#[tokio::test]
async fn the_node_id_comes_from_id_env_and_a_bad_value_is_refused() {
    let doc = snapshot(1, vec![project("acme", 1)]);
    let named = |c: &mut env_sidecar::config::Config| c.node.id_env = "POD_NAME".into();
    let env = |value: &str| Env::from_pairs([("POD_NAME", value)]);
    // Set: the variable's value is the id.
    let t = TestSidecar::start_with_env(Some(&doc), named, env("gw-7f9c-x2")).await;
    let s = t.get_admin("/admin/status").await;
    assert_eq!(s.body["node"]["id"], "gw-7f9c-x2", "{}", s.text);
    // Empty (a variable the pod does not set): the host name and the port.
    let t = TestSidecar::start_with_env(Some(&doc), named, env("")).await;
    let s = t.get_admin("/admin/status").await;
    let fallback = format!(
        "{}:{}",
        env_sidecar::config::host_name(),
        t.sidecar.data_addr().port()
    );
    assert_eq!(s.body["node"]["id"], fallback.as_str(), "{}", s.text);
    // A value that is no node id stops the start, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let mut config = file_config(dir.path());
    named(&mut config);
    let options = Options {
        env: env("gw 1"),
        ..common::test_options()
    };
    let err = app::start_with(config, options).await.expect_err("refused");
    assert!(matches!(err, StartError::NodeId(_)), "{err}");
    assert!(err.is_config());
    assert!(err.to_string().contains("node.id_env: $POD_NAME"), "{err}");
}

/// A poll-mode sidecar that only fetches when forced.
async fn forced_only(sim: &env_sidecar::sim::simulator::Simulator) -> TestSidecar {
    let t = TestSidecar::follow(&sim.url(), |c| {
        common::http_mut(c).mode = SyncMode::Poll;
        c.source.poll_interval = Duration::from_secs(3600);
    })
    .await;
    t.wait_ready().await;
    t
}

#[tokio::test]
async fn refresh_answers_updated_then_not_modified() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = forced_only(&sim).await;
    let before = t.sidecar.store().cursor();
    sim.publish([project("acme", 2), project("globex", 1)]);
    let r = t.post_admin("/admin/refresh", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"], "updated");
    assert_eq!(r.body["changed"], 2);
    assert_eq!(r.body["revision_before"], json!(before));
    assert_eq!(r.body["revision_after"], sim.revision());
    assert_eq!(r.body["rejected"], json!([]));
    assert_eq!(t.served("acme", "qa").await, "qa-r2");
    let r = t.post_admin("/admin/refresh", None).await;
    assert_eq!(r.body["result"], "not_modified");
    assert_eq!(r.body["changed"], 0);
    assert_eq!(
        sim.last_if_none_match(),
        None,
        "a forced fetch is unconditional"
    );
    let m = t.get_admin("/metrics").await.text;
    assert_eq!(
        sample(&m, "env_sidecar_admin_refresh_total{result=\"updated\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "env_sidecar_admin_refresh_total{result=\"not_modified\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn refresh_reports_rejected_documents_and_errors() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = forced_only(&sim).await;
    let mut bad = project("acme", 2);
    bad["environments"][0]["color"] = json!("nope");
    sim.publish([bad]);
    let r = t.post_admin("/admin/refresh", None).await;
    assert_eq!(r.body["result"], "rejected");
    assert_eq!(r.body["rejected"][0]["reason"], "invalid_color");
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let r = t.post_admin("/admin/refresh", None).await;
    assert_eq!(r.body["result"], "error");
    assert!(r.body["error"].as_str().unwrap().contains("503"));
}

#[tokio::test]
async fn refresh_of_one_project_fetches_only_that_project() {
    let sim = simulator(vec![project("acme", 1), project("globex", 1)], None).await;
    let t = forced_only(&sim).await;
    sim.publish([project("acme", 3), project("globex", 2)]);
    let snapshots = sim.counters().snapshot.load(Ordering::SeqCst);
    let r = t.post_admin("/admin/refresh?project=acme", None).await;
    assert_eq!(r.body["result"], "updated", "{}", r.text);
    assert_eq!(r.body["revision_before"], 1);
    assert_eq!(r.body["revision_after"], 3);
    assert_eq!(r.body["changed"], 1);
    assert_eq!(
        t.served("globex", "qa").await,
        "qa-r1",
        "other projects untouched"
    );
    assert_eq!(sim.counters().snapshot.load(Ordering::SeqCst), snapshots);
    assert_eq!(sim.counters().project.load(Ordering::SeqCst), 1);
    // A project the control plane no longer has is removed.
    sim.remove(["globex"]);
    let r = t.post_admin("/admin/refresh?project=globex", None).await;
    assert_eq!(r.body["result"], "updated");
    assert_eq!(r.body["revision_after"], json!(null));
    assert_eq!(t.get("/v1/resolve?project=globex").await.status, 404);
    let r = t.post_admin("/admin/refresh?project=bad%20id", None).await;
    assert_eq!(r.status, 400);
}

/// Project ids go into `/v1/projects/{id}` as they are (`-` and `_` need
/// no percent-encoding): a control plane that reads the raw segment, as
/// the simulator does, finds `acme-chat`. Encoded as `acme%2Dchat`, it
/// answered 404 and the refresh removed a project that exists.
#[tokio::test]
async fn refresh_of_a_project_whose_id_has_a_dash_finds_it() {
    let sim = simulator(vec![project("acme-chat_1", 1), project("globex", 1)], None).await;
    let t = forced_only(&sim).await;
    sim.publish([project("acme-chat_1", 2)]);
    let r = t
        .post_admin("/admin/refresh?project=acme-chat_1", None)
        .await;
    assert_eq!(r.body["result"], "updated", "{}", r.text);
    assert_eq!(r.body["revision_after"], 2, "{}", r.text);
    assert_eq!(t.served("acme-chat_1", "qa").await, "qa-r2");
}

#[tokio::test]
async fn mass_removal_needs_the_override() {
    let many: Vec<_> = common::numbered(12);
    let sim = simulator(many, None).await;
    let t = forced_only(&sim).await;
    sim.remove(common::numbered_ids(9).iter().map(String::as_str));
    let r = t.post_admin("/admin/refresh", None).await;
    assert_eq!(r.body["result"], "rejected");
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .contains("refusing to remove 9 of 12"));
    assert_eq!(t.sidecar.store().project_count(), 12);
    let r = t
        .post_admin("/admin/refresh?allow_mass_removal=true", None)
        .await;
    assert_eq!(r.body["result"], "updated", "{}", r.text);
    assert_eq!(r.body["changed"], 9);
    assert_eq!(t.sidecar.store().project_count(), 3);
}

#[tokio::test]
async fn concurrent_refreshes_coalesce_into_one_fetch() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let t = Arc::new(forced_only(&sim).await);
    let snapshots = sim.counters().snapshot.load(Ordering::SeqCst);
    sim.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    sim.publish([project("acme", 2)]);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.post_admin("/admin/refresh", None).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    assert_eq!(
        sim.counters().snapshot.load(Ordering::SeqCst),
        snapshots + 1,
        "one fetch for ten calls"
    );
    for r in &results {
        assert_eq!(r.body["result"], "updated");
        assert_eq!(r.body["changed"], 1);
    }
}

#[tokio::test]
async fn refresh_works_for_the_file_source() {
    let t = TestSidecar::start_with(Some(&snapshot(1, vec![project("acme", 1)])), |c| {
        c.source.poll_interval = Duration::from_secs(3600)
    })
    .await;
    common::write_json(&t.snapshot_path, &snapshot(2, vec![project("acme", 2)]));
    let r = t.post_admin("/admin/refresh", None).await;
    assert_eq!(r.body["result"], "updated", "{}", r.text);
    assert_eq!(r.body["revision_before"], 1);
    assert_eq!(r.body["revision_after"], 2);
    common::write_json(&t.snapshot_path, &snapshot(3, vec![project("acme", 5)]));
    let r = t.post_admin("/admin/refresh?project=acme", None).await;
    assert_eq!(r.body["result"], "updated");
    assert_eq!(r.body["revision_after"], 5);
}

#[tokio::test]
async fn admin_endpoints_need_the_token_when_one_is_set() {
    let t = TestSidecar::start_with_env(
        Some(&snapshot(1, vec![project("acme", 1)])),
        |c| c.admin.token_env = "ADMIN_TOKEN".into(),
        Env::from_pairs([("ADMIN_TOKEN", "adm1n-t0ken")]),
    )
    .await;
    for token in [
        None,
        Some("wrong"),
        Some("adm1n-t0ke"),
        Some("adm1n-t0ken-"),
    ] {
        let r = t.post_admin("/admin/refresh", token).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.error_code(), "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let s = Reply::from(t.client.get(t.admin("/admin/status")).send().await.unwrap()).await;
        assert_eq!(s.status, 401);
    }
    let r = t.post_admin("/admin/refresh", Some("adm1n-t0ken")).await;
    assert_eq!(r.status, 200);
    let s = Reply::from(
        t.client
            .get(t.admin("/admin/status"))
            .bearer_auth("adm1n-t0ken")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.status, 200);
    // Probes and scrapes stay open.
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(t.get_admin(path).await.status, 200, "{path}");
    }
    let m = t.get_admin("/metrics").await.text;
    assert_eq!(
        sample(
            &m,
            "env_sidecar_admin_refresh_total{result=\"unauthorized\"}"
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn staleness_flips_readiness() {
    let sim = simulator(vec![project("acme", 1)], None).await;
    let clock = ManualClock::new(SystemTime::now());
    let dir = tempfile::tempdir().unwrap();
    let mut config = http_config(dir.path(), &sim.url());
    config.readiness.max_staleness = Duration::from_secs(30);
    let options = Options {
        clock: Arc::new(clock.clone()),
        ..common::test_options()
    };
    let sidecar = app::start_with(config, options).await.unwrap();
    let readyz = format!("http://{}/readyz", sidecar.admin_addr());
    let status = || async { reqwest::get(&readyz).await.unwrap().status().as_u16() };
    eventually("ready", || async { status().await == 200 }).await;
    sim.stop();
    eventually("the control plane gone", || async {
        sidecar
            .status()
            .events()
            .last_error
            .is_some_and(|e| e.message.contains("request to the control plane failed"))
    })
    .await;
    clock.advance(Duration::from_secs(20));
    assert_eq!(status().await, 200, "20 s is within max_staleness");
    clock.advance(Duration::from_secs(20));
    let r = Reply::from(reqwest::get(&readyz).await.unwrap()).await;
    assert_eq!(r.status, 503);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_staleness"));
    // Data keeps being served while unready.
    let resolve = format!("http://{}/v1/resolve?project=acme", sidecar.data_addr());
    assert_eq!(reqwest::get(&resolve).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_public_operator_plane_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = file_config(dir.path());
    config.admin.listen = "0.0.0.0:0".parse().unwrap();
    config.admin.token_env = "ADMIN_TOKEN".into();
    let options = |pairs: &[(&str, &str)]| app::Options {
        env: Env::from_pairs(pairs.iter().copied()),
        ..common::test_options()
    };
    let err = app::start_with(config.clone(), options(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::InsecureAdmin(_)));
    assert!(err.to_string().contains("without a token"), "{err}");
    let err = app::start_with(config.clone(), options(&[("ADMIN_TOKEN", "")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StartError::InsecureAdmin(_)),
        "an empty token is no token"
    );
    app::start_with(config, options(&[("ADMIN_TOKEN", "x")]))
        .await
        .expect("allowed with a token")
        .shutdown()
        .await;
}

#[tokio::test]
async fn the_unix_socket_serves_the_data_plane() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    // A stale socket from a previous run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    common::write_json(
        &dir.path().join("snapshot.json"),
        &snapshot(1, vec![project("acme", 4)]),
    );
    let mut config = file_config(dir.path());
    config.server.unix_socket = socket.display().to_string();
    let t = TestSidecar::launch(config, dir).await;
    t.wait_ready().await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream
        .write_all(b"GET /v1/resolve?project=acme&environment=qa HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-resolved-environment: qa"));
    assert!(answer.contains("qa-r4"));
    t.sidecar.shutdown().await;
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn a_regular_file_in_the_socket_path_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, "keep me").unwrap();
    let mut config = file_config(dir.path());
    config.server.unix_socket = path.display().to_string();
    let err = app::start(config).await.unwrap_err();
    assert!(matches!(err, StartError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[tokio::test]
async fn repeated_or_bad_admin_parameters_get_the_data_planes_400() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    for query in [
        "project=acme&project=acme",
        "allow_mass_removal=true&allow_mass_removal=true",
        "allow_mass_removal=yes",
        "project=bad%20id",
    ] {
        let r = t.post_admin(&format!("/admin/refresh?{query}"), None).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_request");
    }
    let r = t.get_admin("/admin/refresh").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
}

/// HEAD is GET without the body on every GET route (scrapers and load
/// balancers probe with it); a method a route does not answer gets 405
/// naming the ones it does in `Allow`.
#[tokio::test]
async fn head_answers_every_get_route_and_a_405_says_what_is_allowed() {
    let t = TestSidecar::start(Some(&snapshot(1, vec![project("acme", 1)]))).await;
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/admin/status",
        "/openapi.json",
    ] {
        let get = t.get_admin(path).await;
        let request = format!("HEAD {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let (status, text) = raw_request(t.sidecar.admin_addr(), request.as_bytes()).await;
        assert_eq!(status, 200, "HEAD {path}: {text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "", "HEAD {path} sent a body");
        let content_type = get.header("content-type").unwrap();
        assert!(
            head.contains(&format!("content-type: {content_type}\r\n")),
            "HEAD {path}: {head}"
        );
    }
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        (reqwest::Method::POST, "/metrics", "GET, HEAD"),
        (reqwest::Method::DELETE, "/readyz", "GET, HEAD"),
        (reqwest::Method::PUT, "/admin/refresh", "POST"),
    ] {
        let r = Reply::from(
            client
                .request(method.clone(), t.admin(path))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.error_code(), "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
}

/// Only changes seen as they happen count for propagation: a cold start
/// (a full snapshot of documents published long ago), a restart from the
/// cache and a forced refresh do not; the file changing afterwards does.
#[tokio::test]
async fn propagation_counts_changes_seen_live_never_a_first_load() {
    let long_ago = |id: &str, revision| {
        let mut doc = project(id, revision);
        doc["published_at"] = json!("2026-11-20T10:00:00Z");
        doc
    };
    let count = |m: &str| sample(m, "env_sidecar_propagation_delay_seconds_count");
    let t = TestSidecar::start(Some(&snapshot(1, vec![long_ago("acme", 1)]))).await;
    t.wait_ready().await;
    assert_eq!(count(&t.get_admin("/metrics").await.text), Some(0.0));
    assert_eq!(t.post_admin("/admin/refresh", None).await.status, 200);
    assert_eq!(count(&t.get_admin("/metrics").await.text), Some(0.0));
    // The file changes after the start: a change seen live.
    let mut next = project("acme", 2);
    next["published_at"] = json!(env_sidecar::model::timestamp::format_rfc3339(
        SystemTime::now()
    ));
    t.write_snapshot(&snapshot(2, vec![next]));
    t.wait_revision("acme", 2).await;
    let m = t.get_admin("/metrics").await.text;
    assert_eq!(count(&m), Some(1.0), "{m}");
    assert!(
        sample(&m, "env_sidecar_propagation_delay_seconds_sum").unwrap() < 60.0,
        "{m}"
    );
}
