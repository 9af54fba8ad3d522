//! The shipped Kubernetes manifests: valid against Kubernetes 1.37's
//! schemas (kubernetes-validate --strict, from PyPI), and consistent with
//! the sidecar itself: the embedded config passes every check the sidecar
//! makes, and the probes and the PodMonitor point at routes and ports that
//! exist.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::system_tool;
use env_sidecar::config::Config;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `kubernetes-validate --strict` of `files` against Kubernetes
/// `version`'s schemas: whether all passed, and what it said.
pub fn validate(tool: &Path, version: &str, files: &[PathBuf]) -> (bool, String) {
    common::run_to_end(
        Command::new(tool)
            .args(["--strict", "-k", version])
            .args(files),
    )
}

/// `kubernetes-validate`, from PyPI.
pub fn kubernetes_validate() -> Option<PathBuf> {
    system_tool(
        "kubernetes-validate",
        "kubernetes-validate (pip install kubernetes-validate)",
    )
}

#[test]
fn the_manifest_is_valid_kubernetes_and_a_broken_one_is_not() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let manifest = repo("config/kubernetes/env-sidecar.yaml");
    let (ok, report) = validate(&tool, "1.37.0", std::slice::from_ref(&manifest));
    assert!(ok, "{report}");
    assert_eq!(report.matches("passed").count(), 3, "{report}");
    // The check can fail: a misspelt field is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &broken,
        text.replacen(
            "\n          restartPolicy: Always",
            "\n          restartPolicyy: Always",
            1,
        ),
    )
    .unwrap();
    let (ok, report) = validate(&tool, "1.37.0", &[broken]);
    assert!(!ok, "a misspelt field passed: {report}");
}

/// The `sidecar.toml` of the ConfigMap, unindented.
pub fn embedded_config(manifest: &str) -> String {
    let start = manifest
        .find("sidecar.toml: |\n")
        .expect("the ConfigMap has sidecar.toml")
        + "sidecar.toml: |\n".len();
    let block = &manifest[start
        ..manifest[start..]
            .find("\n---")
            .map_or(manifest.len(), |e| start + e)];
    block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_embedded_config_passes_every_check_and_matches_the_probes() {
    let manifest = std::fs::read_to_string(repo("config/kubernetes/env-sidecar.yaml")).unwrap();
    let config = Config::from_toml(&embedded_config(&manifest), Path::new("configmap"))
        .expect("the ConfigMap's config is valid");
    assert_eq!(config.admin.listen.port(), 9901);
    assert!(manifest.contains("containerPort: 9901"));
    // Probes use routes the operator plane serves.
    let routes: Vec<&str> = env_sidecar::server::admin::ROUTES
        .iter()
        .map(|(_, p)| *p)
        .collect();
    for path in ["/readyz", "/healthz", "/metrics"] {
        assert!(manifest.contains(&format!("path: {path}")), "{path}");
        assert!(routes.contains(&path), "{path} is not served");
    }
    // A public operator plane needs the token, which comes from the Secret.
    assert!(!config.admin.listen.ip().is_loopback());
    assert!(manifest.contains(&format!("name: {}", config.admin.token_env)));
    // The cache lives on the writable volume (the root filesystem is read-only).
    assert!(config.cache.path.starts_with("/var/lib/env-sidecar"));
    assert!(manifest.contains("mountPath: /var/lib/env-sidecar"));
    assert!(manifest.contains("readOnlyRootFilesystem: true"));
    // Native sidecar: an init container that keeps running.
    let init = manifest.find("initContainers:").unwrap();
    let restart = manifest.find("\n          restartPolicy: Always").unwrap();
    assert!(restart > init && restart < manifest.find("      containers:").unwrap());
}

#[test]
fn the_pod_monitor_scrapes_the_named_port() {
    let monitor = std::fs::read_to_string(repo("config/kubernetes/podmonitor.yaml")).unwrap();
    let manifest = std::fs::read_to_string(repo("config/kubernetes/env-sidecar.yaml")).unwrap();
    assert!(
        monitor.contains("kind: PodMonitor")
            && monitor.contains("apiVersion: monitoring.coreos.com/v1")
    );
    assert!(monitor.contains("port: sidecar-admin") && manifest.contains("name: sidecar-admin"));
    assert!(
        monitor.contains("matchLabels: { app: llm-gateway }")
            && manifest.contains("labels: { app: llm-gateway }")
    );
}
