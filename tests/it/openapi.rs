//! The OpenAPI descriptions stay in step with the code: every route a
//! plane serves is documented with the methods it takes, and nothing else
//! is; each plane serves its own description; every documented route is
//! live; and schemathesis (PyPI), run against the real sidecar, finds no
//! server error, no undocumented status and no answer off its schema.

use crate::common;

use std::collections::BTreeSet;

use common::{system_tool, TestSidecar};
use env_sidecar::config::secret::Env;
use env_sidecar::server::{admin, data, openapi};
use serde_json::Value;

const ANY_METHOD: [&str; 7] = ["get", "head", "post", "put", "patch", "delete", "options"];

fn documented(doc: &str) -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(doc).expect("the description is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

fn served(routes: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (method, path) in routes {
        if *method == "*" {
            for m in ANY_METHOD {
                out.insert((m.to_owned(), path.to_string()));
            }
        } else {
            out.insert((method.to_ascii_lowercase(), path.to_string()));
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    assert_eq!(
        served(data::ROUTES),
        documented(openapi::DATA_PLANE),
        "data plane"
    );
    assert_eq!(
        served(admin::ROUTES),
        documented(openapi::OPERATOR_PLANE),
        "operator plane"
    );
}

#[test]
fn every_error_code_and_contract_status_is_described() {
    let doc: Value = serde_json::from_str(openapi::DATA_PLANE).unwrap();
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in env_sidecar::server::error::ErrorCode::ALL {
        assert!(
            codes.contains(code.as_str()),
            "{} is not in the Error schema",
            code.as_str()
        );
    }
    let statuses = |doc: &str, path: &str, method: &str| -> BTreeSet<String> {
        let doc: Value = serde_json::from_str(doc).unwrap();
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let set = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        statuses(openapi::DATA_PLANE, "/v1/resolve", "get"),
        set(&["200", "400", "404", "503"])
    );
    assert_eq!(
        statuses(openapi::DATA_PLANE, "/v1/authz", "post"),
        set(&["200", "400", "404", "503"])
    );
    assert_eq!(
        statuses(openapi::DATA_PLANE, "/v1/resolve/batch", "post"),
        set(&["200", "400", "413"])
    );
    assert_eq!(
        statuses(openapi::OPERATOR_PLANE, "/admin/refresh", "post"),
        set(&["200", "400", "401"])
    );
    assert_eq!(
        statuses(openapi::OPERATOR_PLANE, "/readyz", "get"),
        set(&["200", "503"])
    );
}

async fn sidecar() -> TestSidecar {
    let sample: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/snapshot.json"),
        )
        .unwrap(),
    )
    .unwrap();
    TestSidecar::start_with_env(
        Some(&sample),
        |c| c.admin.token_env = "ADMIN_TOKEN".into(),
        Env::from_pairs([("ADMIN_TOKEN", "t0ken")]),
    )
    .await
}

#[tokio::test]
async fn each_plane_serves_its_description_and_every_route_is_live() {
    let t = sidecar().await;
    let r = t.get("/openapi.json").await;
    assert_eq!(
        r.body,
        serde_json::from_str::<Value>(openapi::DATA_PLANE).unwrap()
    );
    let r = t.get_admin("/openapi.json").await;
    assert_eq!(
        r.body,
        serde_json::from_str::<Value>(openapi::OPERATOR_PLANE).unwrap()
    );
    for (method, path) in data::ROUTES {
        let method = if *method == "*" { "PATCH" } else { method };
        let path = path
            .replace("{rest}", "v1/chat")
            .replace("{id}", "acme-chat");
        let resp = t
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                t.data(&path),
            )
            .header("x-project-id", "acme-chat")
            .body("{\"requests\":[]}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains("no route") && status != 405,
            "{method} {path}: {status} {text}"
        );
    }
    for (method, path) in admin::ROUTES {
        let resp = t
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                t.admin(path),
            )
            .bearer_auth("t0ken")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method} {path}");
    }
}

/// Runs schemathesis against one plane; panics with its report unless it
/// passes.
async fn schemathesis(url: String, extra: &[&str]) {
    let Some(st) = system_tool("schemathesis", "schemathesis (pip install schemathesis)") else {
        return;
    };
    let mut args = vec![
        "run".to_owned(),
        url,
        "--checks".into(),
        "not_a_server_error,status_code_conformance,response_schema_conformance".into(),
        "--max-examples".into(),
        "40".into(),
        "--no-color".into(),
        "--seed".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    // Off the runtime: the sidecar under test runs on this thread.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(st)
            .args(&args)
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
    })
    .await
    .unwrap()
    .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

#[tokio::test]
async fn schemathesis_finds_nothing_on_the_data_plane() {
    let t = sidecar().await;
    schemathesis(
        t.data("/openapi.json"),
        // A gRPC call is not JSON over HTTP/1.1: tested by ext_authz_grpc.
        &["--exclude-path", env_sidecar::server::ext_authz::CHECK_PATH],
    )
    .await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_on_the_operator_plane() {
    let t = sidecar().await;
    schemathesis(
        t.admin("/openapi.json"),
        &["-H", "Authorization: Bearer t0ken"],
    )
    .await;
}
