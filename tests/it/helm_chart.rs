//! The Helm chart (`config/helm/env-sidecar`) through Helm v4's own
//! engine (PyPI's `helm-python-sdk`, driven by `tests/helm/chart.py`; no
//! `helm` binary): strict lint; renders with its defaults, with every
//! `ci/*-values.yaml` and beside a gateway through the example chart;
//! every rendered manifest valid Kubernetes for two versions; every
//! rendered config accepted by `check-config` with the files it names
//! where the mounts put them; the PrometheusRule's rules by `promtool`;
//! a value the schema refuses named in the failure.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use super::kubernetes_manifests::{embedded_config, kubernetes_validate, repo, validate};
use common::redis::Pki;
use common::{python_with, system_tool};

/// The Kubernetes versions every manifest is validated against: the
/// chart's oldest (native sidecars) and the newest schemas at hand.
const KUBE_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

const CHART: &str = "config/helm/env-sidecar";

/// What a render wrote: `(template path, manifest text)`.
struct Rendered {
    _dir: tempfile::TempDir,
    files: Vec<(String, PathBuf)>,
}

impl Rendered {
    /// The text of the template whose path ends with `name`.
    fn text(&self, name: &str) -> String {
        let (_, path) = self
            .files
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} rendered"));
        std::fs::read_to_string(path).unwrap()
    }

    /// Every YAML document rendered, with its kind.
    fn documents(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .flat_map(|(_, path)| {
                let text = std::fs::read_to_string(path).unwrap();
                text.split("\n---")
                    .map(str::to_owned)
                    .filter_map(|doc| Some((kind(&doc)?, doc)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A document's `kind:`, or `None` for one that is only comments.
fn kind(doc: &str) -> Option<String> {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .map(|k| k.trim().to_owned())
}

/// `tests/helm/chart.py render`: the chart at `chart` with `values` (the
/// chart's defaults when `None`); Err with the engine's message.
fn render(python: &Path, chart: &Path, values: Option<&Path>) -> Result<Rendered, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg(repo("tests/helm/chart.py"))
        .arg("render")
        .arg(chart)
        .arg(values.map_or(PathBuf::from("-"), Path::to_path_buf))
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let written: Vec<String> = serde_json::from_slice(&out.stdout).expect("a list of paths");
    let files = written
        .into_iter()
        .map(|p| {
            let path = dir.path().join(&p);
            (p, path)
        })
        .collect();
    Ok(Rendered { _dir: dir, files })
}

/// The value sets CI renders: the defaults, then every `ci/*-values.yaml`.
fn value_sets() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo(CHART).join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "file, http, redis sentinel, sidecar");
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

/// The example gateway chart with this chart as its unpacked dependency,
/// as `helm dependency build` would leave it.
fn gateway_chart() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp")
            .arg("-r")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy(
        &repo("config/helm/examples/llm-gateway"),
        &dir.path().join("llm-gateway"),
    );
    std::fs::create_dir(dir.path().join("llm-gateway/charts")).unwrap();
    copy(
        &repo(CHART),
        &dir.path().join("llm-gateway/charts/env-sidecar"),
    );
    dir
}

fn helm() -> Option<PathBuf> {
    python_with("helm_python", "helm-python-sdk")
}

fn label(values: &Option<PathBuf>) -> String {
    values
        .as_ref()
        .map_or("defaults".into(), |p| p.display().to_string())
}

#[test]
fn the_chart_lints_clean_in_strict_mode_and_a_broken_one_does_not() {
    let Some(python) = helm() else { return };
    let lint = |chart: &Path| -> serde_json::Value {
        let out = Command::new(&python)
            .arg(repo("tests/helm/chart.py"))
            .args(["lint"])
            .arg(chart)
            .arg("v1.30.0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = lint(&repo(CHART));
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    // Only INFO (severity 1: "icon is recommended") is left.
    for message in report["messages"].as_array().unwrap() {
        assert!(message["severity"].as_i64() <= Some(1), "{report}");
    }
    // The lint can fail: a template that does not parse.
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("env-sidecar");
    assert!(Command::new("cp")
        .arg("-r")
        .arg(repo(CHART))
        .arg(&chart)
        .status()
        .unwrap()
        .success());
    std::fs::write(chart.join("templates/broken.yaml"), "{{ if }}\n").unwrap();
    let report = lint(&chart);
    assert_ne!(report["errors"], serde_json::json!([]), "{report}");
}

#[test]
fn every_value_set_renders_manifests_valid_for_two_kubernetes_versions() {
    let Some(python) = helm() else { return };
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let gateway = gateway_chart();
    let renders = value_sets()
        .into_iter()
        .map(|v| (label(&v), render(&python, &repo(CHART), v.as_deref())))
        .chain(std::iter::once((
            "the example gateway chart".into(),
            render(&python, &gateway.path().join("llm-gateway"), None),
        )));
    let dir = tempfile::tempdir().unwrap();
    for (name, rendered) in renders {
        let rendered = rendered.unwrap_or_else(|e| panic!("{name}: {e}"));
        // The Prometheus Operator's kinds have no schema here; the test of
        // the rules checks the PrometheusRule.
        let core: Vec<String> = rendered
            .documents()
            .into_iter()
            .filter(|(_, doc)| !doc.contains("apiVersion: monitoring.coreos.com/"))
            .map(|(_, doc)| doc)
            .collect();
        // Beside a gateway: the ConfigMap and the Secret; standalone, the
        // workload, the Service and the PodDisruptionBudget too.
        assert!(core.len() >= 2, "{name}: {core:?}");
        let files: Vec<PathBuf> = core
            .iter()
            .enumerate()
            .map(|(i, doc)| {
                let path = dir.path().join(format!("{i}.yaml"));
                std::fs::write(&path, doc).unwrap();
                path
            })
            .collect();
        for version in KUBE_VERSIONS {
            let (ok, report) = validate(&tool, version, &files);
            assert!(ok, "{name}, Kubernetes {version}: {report}");
            assert_eq!(
                report.matches("passed").count(),
                files.len(),
                "{name}, Kubernetes {version}: {report}"
            );
        }
        for f in files {
            std::fs::remove_file(f).unwrap();
        }
    }
}

/// Where the pod's mounts put a path of the rendered config, under `root`.
fn mounted(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The rendered config with its absolute paths moved under `root`, and
/// the files it names created there as the mounts would: the snapshot
/// and the trust keys from the rendered ConfigMaps, TLS files from a
/// throwaway CA, the cache and socket folders.
fn lay_out(rendered: &Rendered, root: &Path, pki: &Pki) -> PathBuf {
    let configmap = rendered.text("templates/configmap.yaml");
    let config = embedded_config(&configmap);
    for dir in [
        "etc/env-sidecar/config",
        "var/lib/env-sidecar",
        "run/env-sidecar",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    // A ConfigMap's files: `name: |` blocks after `data:` (4 spaces).
    let data_files = |doc: &str| -> Vec<(String, String)> {
        let mut files = Vec::new();
        let mut lines = doc.lines().skip_while(|l| *l != "data:").skip(1).peekable();
        while let Some(line) = lines.next() {
            let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) else {
                continue;
            };
            let mut text = String::new();
            while let Some(l) = lines.next_if(|l| l.starts_with("    ") || l.is_empty()) {
                text.push_str(l.strip_prefix("    ").unwrap_or(l));
                text.push('\n');
            }
            files.push((name.to_owned(), text));
        }
        files
    };
    for doc in configmap.split("\n---") {
        let folder = if doc.contains("-snapshot\n") {
            "etc/env-sidecar/snapshot"
        } else if doc.contains("-trust\n") {
            "etc/env-sidecar/trust"
        } else {
            continue;
        };
        std::fs::create_dir_all(root.join(folder)).unwrap();
        for (name, text) in data_files(doc) {
            std::fs::write(root.join(folder).join(name), text).unwrap();
        }
    }
    for side in ["source", "report"] {
        let dir = mounted(root, &format!("/etc/env-sidecar/tls/{side}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, from) in [
            ("ca.crt", &pki.ca),
            ("tls.crt", &pki.client_cert),
            ("tls.key", &pki.client_key),
        ] {
            std::fs::copy(from, dir.join(name)).unwrap();
        }
    }
    let moved = [
        "/etc/env-sidecar/",
        "/var/lib/env-sidecar/",
        "/run/env-sidecar/",
    ]
    .iter()
    .fold(config, |text, prefix| {
        text.replace(
            &format!("\"{prefix}"),
            &format!("\"{}", mounted(root, prefix).display()),
        )
    });
    let path = root.join("etc/env-sidecar/config/sidecar.toml");
    std::fs::write(&path, moved).unwrap();
    path
}

/// `env-sidecar check-config` as the pod runs it: the variables its
/// Secrets and the downward API set.
fn check_config(config: &Path) -> (bool, String) {
    common::run_to_end(
        Command::new(env!("CARGO_BIN_EXE_env-sidecar"))
            .arg("check-config")
            .arg("--config")
            .arg(config)
            .env("ENV_SIDECAR_ADMIN_TOKEN", "admin-token-from-the-secret")
            .env("ENV_SIDECAR_CONTROL_PLANE_TOKEN", "token-from-the-secret")
            .env("ENV_SIDECAR_REPORT_TOKEN", "token-from-the-secret")
            .env("POD_NAME", "gw-llm-gateway-7f9c-x2k"),
    )
}

#[test]
fn every_rendered_config_passes_check_config_with_its_files_in_place() {
    let Some(python) = helm() else { return };
    let pki_dir = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::make(pki_dir.path()) else {
        return;
    };
    let gateway = gateway_chart();
    let mut renders: Vec<(String, Rendered)> = value_sets()
        .into_iter()
        .map(|v| {
            let rendered = render(&python, &repo(CHART), v.as_deref());
            (label(&v), rendered.unwrap())
        })
        .collect();
    renders.push((
        "the example gateway chart".into(),
        render(&python, &gateway.path().join("llm-gateway"), None).unwrap(),
    ));
    for (name, rendered) in renders {
        let root = tempfile::tempdir().unwrap();
        let config = lay_out(&rendered, root.path(), &pki);
        let (ok, output) = check_config(&config);
        assert!(ok, "{name}: {output}");
        assert!(output.contains("every check passed"), "{name}: {output}");
        // The node is the pod (downward API), unless the values name it.
        assert!(
            output.contains("# node id: gw-llm-gateway-7f9c-x2k\n"),
            "{name}: {output}"
        );
        // A file source's snapshot, from the chart's ConfigMap, is one the
        // sidecar accepts.
        let snapshot = root.path().join("etc/env-sidecar/snapshot/snapshot.json");
        if snapshot.exists() {
            let out = Command::new(env!("CARGO_BIN_EXE_env-sidecar"))
                .arg("validate")
                .arg(&snapshot)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name}: {out:?}");
        }
        // Where a render holds the container: what the pod sets is what
        // the config reads, the token variables.
        let pod: Vec<String> = rendered
            .files
            .iter()
            .map(|(_, f)| std::fs::read_to_string(f).unwrap())
            .filter(|text| text.contains("- name: env-sidecar\n"))
            .collect();
        for var in [
            "ENV_SIDECAR_CONTROL_PLANE_TOKEN",
            "ENV_SIDECAR_REPORT_TOKEN",
        ] {
            let named = output.contains(&format!("= {var}: set"));
            let set = pod.iter().any(|text| text.contains(var));
            assert!(pod.is_empty() || named == set, "{name}: {var}: {output}");
        }
    }
    // The check can fail: the trusted keys missing from their mount.
    let rendered = render(
        &python,
        &repo(CHART),
        Some(&repo(CHART).join("ci/redis-sentinel-tls-values.yaml")),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = lay_out(&rendered, root.path(), &pki);
    std::fs::remove_dir_all(root.path().join("etc/env-sidecar/trust")).unwrap();
    let (ok, output) = check_config(&config);
    assert!(!ok && output.contains("trust.keys"), "{output}");
}

#[test]
fn the_prometheus_rule_carries_the_shipped_rules_and_promtool_accepts_them() {
    let Some(python) = helm() else { return };
    let Some(promtool) = system_tool("promtool", "prometheus") else {
        return;
    };
    let values = repo(CHART).join("ci/http-values.yaml");
    let rendered = render(&python, &repo(CHART), Some(&values)).unwrap();
    let (_, rule) = rendered
        .documents()
        .into_iter()
        .find(|(kind, _)| kind == "PrometheusRule")
        .expect("http-values enables the PrometheusRule");
    // The spec, unindented, is a rules file.
    let spec = rule.split_once("\nspec:\n").expect("a spec").1;
    let rules: String = spec
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let check = |file: &Path| {
        common::run_to_end(Command::new(&promtool).args(["check", "rules"]).arg(file))
    };
    let (ok, text) = check(&file);
    assert!(ok, "{text}\n{rules}");
    // The same rules as the shipped file, not a copy that drifts.
    let (ok, shipped) = check(&repo("config/prometheus/env-sidecar.rules.yml"));
    assert!(ok, "{shipped}");
    // The same rules as the shipped file, not a copy that drifts: every
    // record and alert, in order, and promtool counts as many.
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.trim().trim_start_matches("- "))
            .filter(|l| l.starts_with("record: ") || l.starts_with("alert: "))
            .map(str::to_owned)
            .collect()
    };
    let shipped_rules =
        std::fs::read_to_string(repo("config/prometheus/env-sidecar.rules.yml")).unwrap();
    assert!(names(&shipped_rules).len() >= 10, "{shipped_rules}");
    assert_eq!(names(&rules), names(&shipped_rules));
    let found = |t: &str| {
        t.lines()
            .find(|l| l.contains("rules found"))
            .map(str::to_owned)
    };
    assert_eq!(found(&text), found(&shipped), "{text}\n{shipped}");
    for alert in ["EnvSidecarNotReady", "EnvSidecarSnapshotStale"] {
        assert!(rules.contains(alert), "{alert}");
    }
    // promtool can refuse: a rule that does not parse.
    std::fs::write(&file, rules.replacen("expr: ", "expr: sum(", 1)).unwrap();
    assert!(!check(&file).0);
}

#[test]
fn a_value_the_schema_refuses_fails_the_render_naming_it() {
    let Some(python) = helm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("mode: sidecr\n", "/mode"),
        (
            "source:\n  kind: redis\n  redis:\n    url: http://redis:6379\n",
            "/source/redis/url",
        ),
        ("standalone:\n  replicas: three\n", "/standalone/replicas"),
        ("sourc:\n  kind: http\n", "sourc"),
        ("readiness:\n  maxStaleness: 10 minutes\n", "/readiness/maxStaleness"),
        (
            "node:\n  labels: { a: '1', b: '1', c: '1', d: '1', e: '1', f: '1', g: '1', h: '1', i: '1' }\n",
            "/node/labels",
        ),
        (
            "standalone:\n  terminationGracePeriodSeconds: 5\n",
            "/standalone/terminationGracePeriodSeconds",
        ),
    ];
    for (values, named) in cases {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values).unwrap();
        match render(&python, &repo(CHART), Some(&file)) {
            Ok(_) => panic!("accepted: {values}"),
            Err(message) => assert!(message.contains(named), "{values}: {message}"),
        }
    }
    // Required where the schema cannot say it: a URL for the source kind.
    std::fs::write(dir.path().join("values.yaml"), "source:\n  kind: http\n").unwrap();
    let message = render(&python, &repo(CHART), Some(&dir.path().join("values.yaml")))
        .err()
        .expect("refused");
    assert!(message.contains("source.http.url is required"), "{message}");
}

#[test]
fn beside_a_gateway_the_helpers_add_a_native_sidecar_sharing_the_socket() {
    let Some(python) = helm() else { return };
    let gateway = gateway_chart();
    let rendered = render(&python, &gateway.path().join("llm-gateway"), None).unwrap();
    let deployment = rendered.text("llm-gateway/templates/deployment.yaml");
    // The sidecar is an init container that keeps running, before the gateway.
    let init = deployment.find("initContainers:").unwrap();
    let sidecar = deployment.find("- name: env-sidecar").unwrap();
    let restart = deployment.find("restartPolicy: Always").unwrap();
    let containers = deployment.find("\n      containers:").unwrap();
    assert!(init < sidecar && sidecar < restart && restart < containers);
    // Both mount the socket's volume, which the pod declares.
    assert_eq!(deployment.matches("mountPath: /run/env-sidecar").count(), 2);
    assert!(deployment.contains("- name: gw-env-sidecar-socket\n          emptyDir:"));
    // The data plane on loopback only; the config and the admin Secret
    // come from the dependency's own templates.
    let config = embedded_config(&rendered.text("templates/configmap.yaml"));
    assert!(config.contains("listen = \"127.0.0.1:8080\""), "{config}");
    assert!(rendered
        .text("templates/secret.yaml")
        .contains("name: gw-env-sidecar-admin"));
    // Standalone mode has neither a loopback listener nor an init container.
    let standalone = render(&python, &repo(CHART), None).unwrap();
    let workload = standalone.text("templates/workload.yaml");
    assert!(!workload.contains("initContainers") && !workload.contains("restartPolicy"));
    assert!(
        embedded_config(&standalone.text("templates/configmap.yaml"))
            .contains("listen = \"0.0.0.0:8080\"")
    );
}

#[test]
fn the_values_docs_operations_shows_render_valid_kubernetes() {
    let Some(python) = helm() else { return };
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let docs = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    let block = docs
        .split_once("<!-- helm-values -->\n```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("docs/operations.md shows values")
        .0;
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, block).unwrap();
    let rendered = render(&python, &repo(CHART), Some(&values)).unwrap();
    let workload = rendered.text("templates/workload.yaml");
    assert!(workload.contains("name: env-sidecar-keys"), "{workload}");
    assert!(
        workload.contains("secretName: redis-client-tls"),
        "{workload}"
    );
    let files: Vec<PathBuf> = rendered
        .files
        .iter()
        .filter(|(p, _)| !p.ends_with("monitoring.yaml"))
        .map(|(_, f)| f.clone())
        .collect();
    let (ok, report) = validate(&tool, KUBE_VERSIONS[1], &files);
    assert!(ok, "{report}");
}

/// A ConfigMap volume as the kubelet writes it: each file a link into
/// `..data`, itself a link to a timestamped folder, swapped whole (a new
/// folder, a new link renamed over the old) on every update.
struct ConfigMapVolume {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(dir: PathBuf, files: &[(&str, String)]) -> ConfigMapVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = ConfigMapVolume { dir, generation: 0 };
        volume.update(files);
        volume
    }

    fn update(&mut self, files: &[(&str, String)]) {
        use std::os::unix::fs::symlink;
        let old = format!("..2026_12_06_{:04}", self.generation);
        self.generation += 1;
        let new = format!("..2026_12_06_{:04}", self.generation);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&new).join(name), text).unwrap();
        }
        symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                symlink(format!("..data/{name}"), link).unwrap();
            }
        }
        // Links to files the update no longer has go, then the old folder.
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.iter().any(|(f, _)| *f == name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.join(old));
    }
}

#[tokio::test]
async fn a_configmap_update_reaches_the_sidecar_without_a_restart() {
    use common::signing::TestKey;
    use common::{project, snapshot, TestSidecar};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let doc = |revision: u64| snapshot(revision, vec![project("acme", revision)]).to_string();
    let mut snapshot_volume =
        ConfigMapVolume::new(dir.path().join("snapshot"), &[("snapshot.json", doc(1))]);
    let (k1, k2) = (
        TestKey::new(dir.path(), "cp-2026"),
        TestKey::new(dir.path(), "cp-2027"),
    );
    let pem = |k: &TestKey| std::fs::read_to_string(&k.public_file).unwrap();
    let mut keys_volume =
        ConfigMapVolume::new(dir.path().join("trust"), &[("cp-2026.pub", pem(&k1))]);
    let (snapshot_path, trust_path) = (
        dir.path().join("snapshot/snapshot.json"),
        dir.path().join("trust/"),
    );
    let t = TestSidecar::start_with(None, |c| {
        c.source.kind = env_sidecar::config::Source::File(env_sidecar::config::FileConfig {
            path: snapshot_path,
        });
        c.trust.keys = vec![trust_path];
    })
    .await;
    t.wait_ready().await;
    assert_eq!(t.served("acme", "qa").await, "qa-r1");
    let status = t.get_admin("/admin/status").await;
    assert_eq!(
        status.body["trust"]["keys"],
        json!(["cp-2026"]),
        "{}",
        status.text
    );
    // `helm upgrade` with a new snapshot: the kubelet swaps the folder.
    snapshot_volume.update(&[("snapshot.json", doc(2))]);
    common::eventually("the new snapshot served", || async {
        t.served("acme", "qa").await == "qa-r2"
    })
    .await;
    // A key added, then the old one removed: each a swap.
    keys_volume.update(&[("cp-2026.pub", pem(&k1)), ("cp-2027.pub", pem(&k2))]);
    common::eventually("both keys trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2026", "cp-2027"])
    })
    .await;
    keys_volume.update(&[("cp-2027.pub", pem(&k2))]);
    common::eventually("only the new key trusted", || async {
        t.get_admin("/admin/status").await.body["trust"]["keys"] == json!(["cp-2027"])
    })
    .await;
}

#[test]
fn the_image_tag_is_the_charts_app_version() {
    let chart = std::fs::read_to_string(repo(CHART).join("Chart.yaml")).unwrap();
    let values = std::fs::read_to_string(repo(CHART).join("values.yaml")).unwrap();
    let app = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .unwrap()
        .trim_matches('"');
    assert!(values.contains(&format!("  tag: \"{app}\"\n")), "{app}");
    assert_eq!(app, env!("CARGO_PKG_VERSION"));
}
