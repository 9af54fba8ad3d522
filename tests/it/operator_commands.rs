//! The binary's operator commands, run for real: `check-config` gives the
//! sidecar's own verdict on a config, `validate` judges documents exactly
//! as the sidecar would (exit 0 / 1 / 2) and survives any input, and
//! `log.format = "json"` writes one JSON object per event.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{project, snapshot};
use serde_json::{json, Value};

fn sidecar(args: &[&str]) -> Output {
    common::shared::sidecar_command()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_settings_and_the_secrets_only_as_set_or_unset() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"http\"\nurl = \"http://cp:7000\"\npoll_interval = \"250ms\"\n",
    )
    .unwrap();
    let out = common::shared::sidecar_command()
        .args(["check-config", "--config"])
        .arg(&config)
        .env("ENV_SIDECAR_CONTROL_PLANE_TOKEN", "cp-s3cret")
        .env_remove("ENV_SIDECAR_ADMIN_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("url = \"http://cp:7000\""), "{stdout}");
    assert!(stdout.contains("poll_interval = \"250ms\""), "{stdout}");
    assert!(
        stdout.contains("#   source.token_env = ENV_SIDECAR_CONTROL_PLANE_TOKEN: set"),
        "{stdout}"
    );
    assert!(
        stdout.contains("#   admin.token_env = ENV_SIDECAR_ADMIN_TOKEN: unset"),
        "{stdout}"
    );
    // Only the keys an HTTP source reads.
    assert!(!stdout.contains("key_prefix"), "{stdout}");
    assert!(stdout.contains("mode = \"watch\""), "{stdout}");
    assert!(!stdout.contains("cp-s3cret"), "a secret was printed");
}

#[test]
fn check_config_refuses_every_bad_config_as_the_start_does() {
    let dir = tempfile::tempdir().unwrap();
    for (i, bad) in [
        "[source]\nrequest_timeout = \"soon\"\n",
        "[source]\nrequest_timeout = \"5 parsecs\"\n",
        "[server]\nlisten_port = 3\n",
        "[surce]\nkind = \"file\"\n",
        "[source]\nrequest_timeout = 5\n",
        "[server]\nlisten = \"nowhere\"\n",
        "[source]\nkind = \"ftp\"\n",
        "[source]\nmax_removed_fraction = 1.5\n",
        "[source]\nkind = \"http\"\n",
        "[server]\nproject_header = \"bad header\"\n",
        "[source]\npoll_interval = \"0s\"\n",
        "[log]\nlevel = \"verbose\"\n",
        "[server]\nmax_pointers_header_bytes = 61441\n",
        "[server]\nmax_pointers_header_bytes = -1\n",
        // Checks a start makes beyond the file's own rules.
        "[trust]\nkeys = [\"/nonexistent/keyz/\"]\n",
        "[trust]\nkeys = [\"/nonexistent/keyz/\"]\nrequire_signatures = true\n",
        "[admin]\nlisten = \"0.0.0.0:0\"\n",
        "[source]\nkind = \"redis\"\nurl = \"redis-sentinel://h:1\"\n",
        "not toml at all [",
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, bad).unwrap();
        let path = path.to_str().unwrap();
        let check = sidecar(&["check-config", "--config", path]);
        let start = sidecar(&["--config", path]);
        assert_eq!(check.status.code(), Some(78), "{bad:?}");
        assert_eq!(start.status.code(), Some(78), "{bad:?}");
        assert_eq!(
            text(&check).1,
            text(&start).1,
            "the same message for {bad:?}"
        );
        assert!(text(&check).1.contains("config"), "{}", text(&check).1);
    }
    let missing = sidecar(&["check-config", "--config", "/nonexistent.toml"]);
    assert_eq!(missing.status.code(), Some(78));
}

#[test]
fn check_config_says_what_a_start_would_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.toml");
    std::fs::write(&path, "[source]\npath = \"/nonexistent/snapshot.json\"\n").unwrap();
    let check = sidecar(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check).1);
    assert!(
        text(&check)
            .0
            .contains("# note: source.path /nonexistent/snapshot.json: no such file yet"),
        "{}",
        text(&check).0
    );
}

#[test]
fn tls_files_and_url_options_are_checked_before_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk = junk.display().to_string();
    let fixture = |name: &str| format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"));
    let redis = "[source]\nkind = \"redis\"\nurl = \"rediss://r:6380/0\"\n";
    for (i, (extra, key)) in [
        (
            "tls_ca_file = \"/nonexistent/ca.pem\"\n".to_owned(),
            "source.tls_ca_file",
        ),
        (format!("tls_ca_file = \"{junk}\"\n"), "source.tls_ca_file"),
        (
            format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{junk}\"\n",
                fixture("client.pem")
            ),
            "source.tls_key_file",
        ),
        (
            format!("tls_cert_file = \"{}\"\n", fixture("client.pem")),
            "source.tls_cert_file",
        ),
        (
            "[report]\nredis_url = \"rediss://r:6380/0\"\ntls_ca_file = \"/nonexistent\"\n"
                .to_owned(),
            "report.tls_ca_file",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("tls{i}.toml"));
        std::fs::write(&path, format!("{redis}{extra}")).unwrap();
        let path = path.to_str().unwrap();
        let check = sidecar(&["check-config", "--config", path]);
        let start = sidecar(&["--config", path]);
        assert_eq!(check.status.code(), Some(78), "{extra}");
        assert_eq!(start.status.code(), Some(78), "{extra}");
        assert!(text(&check).1.contains(key), "{key}: {}", text(&check).1);
        assert_eq!(text(&check).1, text(&start).1);
    }
    let path = dir.path().join("insecure.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"redis\"\nurl = \"rediss://r:6380/0#insecure\"\n",
    )
    .unwrap();
    let check = sidecar(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(78));
    assert!(
        text(&check).1.contains("source.url") && text(&check).1.contains("#insecure"),
        "{}",
        text(&check).1
    );
    // Good files pass.
    let path = dir.path().join("good.toml");
    std::fs::write(
        &path,
        format!(
            "{redis}tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            fixture("ca.pem"),
            fixture("client.pem"),
            fixture("client.key")
        ),
    )
    .unwrap();
    let check = sidecar(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check).1);
}

#[test]
fn every_problem_of_a_config_is_reported_at_once_each_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"redis\"\nmax_removed_fraction = 3.0\n\
         [log]\nlevel = \"loud\"\n[admin]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = sidecar(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out).1;
    for key in [
        "source.url",
        "source.max_removed_fraction",
        "log.level",
        "admin.listen",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), 4, "one line per problem:\n{stderr}");
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path.display().to_string()
}

#[test]
fn validate_passes_good_documents_and_names_the_rule_a_bad_one_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.json",
        &snapshot(1, vec![project("acme", 2), project("globex", 1)]),
    );
    let out = sidecar(&["validate", &good]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout,
        "ok project=acme revision=2\nok project=globex revision=1\n"
    );

    let mut broken = project("globex", 2);
    broken["environments"][0]["color"] = json!("green");
    let single = write(dir.path(), "single.json", &broken);
    let out = sidecar(&["validate", &good, &single]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("rejected project=globex revision=2 reason=invalid_color message="),
        "{last}"
    );
    // Greppable: exactly one rejected line.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("rejected "))
            .count(),
        1
    );
}

#[test]
fn validate_against_the_published_snapshot_checks_revisions_and_slugs() {
    let dir = tempfile::tempdir().unwrap();
    let published = write(
        dir.path(),
        "published.json",
        &snapshot(9, vec![project("acme", 5), project("globex", 5)]),
    );
    // Same revision, same document: fine.
    let same = write(dir.path(), "same.json", &project("acme", 5));
    let out = sidecar(&["validate", "--previous", &published, &same]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).0);
    assert!(text(&out).0.contains("unchanged=true"));
    for (name, doc, reason) in [
        ("stale", project("acme", 4), "stale_revision"),
        (
            "reused",
            {
                let mut d = project("acme", 5);
                d["environments"][0]["name"] = json!("renamed");
                d
            },
            "revision_reused",
        ),
        (
            "slug",
            {
                let mut d = project("globex", 6);
                d["environments"][1]["slug"] = json!("quality");
                d
            },
            "slug_changed",
        ),
    ] {
        let path = write(dir.path(), &format!("{name}.json"), &doc);
        let out = sidecar(&["validate", "--previous", &published, &path]);
        let (stdout, _) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        assert!(
            stdout.contains(&format!("reason={reason} ")),
            "{name}: {stdout}"
        );
    }
    // Without --previous the renamed slug is just a valid new document.
    let slug = dir.path().join("slug.json");
    assert_eq!(
        sidecar(&["validate", slug.to_str().unwrap()]).status.code(),
        Some(0)
    );
}

#[test]
fn validate_reads_stdin() {
    let mut child = common::shared::sidecar_command()
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(project("acme", 1).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out).0, "ok project=acme revision=1\n");
}

#[test]
fn validate_refuses_unreadable_input_with_exit_2_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.json"), b"").unwrap();
    std::fs::write(d.join("wrong-shape.json"), br#"{"hello": "world"}"#).unwrap();
    std::fs::write(d.join("array.json"), b"[1, 2, 3]").unwrap();
    std::fs::write(
        d.join("no-id.json"),
        br#"{"revision": 1, "projects": [{"x": 1}]}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("trailing.json"),
        br#"{"revision": 1, "projects": []} {}"#,
    )
    .unwrap();
    // A gigabyte of garbage: sparse, so it costs no disk; it must fail at
    // the first bad byte without reading (or holding) the rest.
    let big = std::fs::File::create(d.join("garbage.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    for name in [
        "missing.json",
        "empty.json",
        "wrong-shape.json",
        "array.json",
        "no-id.json",
        "trailing.json",
        "garbage.bin",
        "",
    ] {
        let path = d.join(name);
        let started = std::time::Instant::now();
        let out = sidecar(&["validate", path.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {stdout}{stderr}");
        assert!(stdout.starts_with("error file="), "{name}: {stdout}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        if name == "garbage.bin" {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "it read the whole gigabyte"
            );
        }
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    common::write_json(
        &dir.path().join("snapshot.json"),
        &snapshot(3, vec![project("acme", 1)]),
    );
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[source]\npath = \"{}\"\n[cache]\npath = \"\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n",
            dir.path().join("snapshot.json").display()
        ),
    )
    .unwrap();
    let mut child = common::shared::sidecar_command()
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // The writer applies the first update on its own thread, so "update
    // applied" may come before or after "listening": read until both.
    let mut events: Vec<Value> = Vec::new();
    let seen = |events: &[Value], message: &str| events.iter().any(|e| e["message"] == message);
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        events.push(event);
        if seen(&events, "update applied") && seen(&events, "env-sidecar listening") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let listening = events
        .iter()
        .find(|e| e["message"] == "env-sidecar listening")
        .expect("the listen event");
    assert_eq!(listening["level"], "INFO");
    assert!(listening["data_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let applied = events
        .iter()
        .find(|e| e["message"] == "update applied")
        .expect("the applied event");
    assert_eq!(applied["origin"], "file");
    assert_eq!(applied["added"], 1);
    assert!(applied["timestamp"].is_string() && applied["target"].is_string());
}

/// `sign` reports on stdout like every command; only when stdout is the
/// signed snapshot itself does the report move to stderr.
#[test]
fn sign_reports_on_stdout_unless_stdout_is_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    let keygen = sidecar(&[
        "keygen",
        "--private",
        key.to_str().unwrap(),
        "--public",
        public.to_str().unwrap(),
    ]);
    assert_eq!(keygen.status.code(), Some(0), "{:?}", text(&keygen));
    let file = write(dir.path(), "s.json", &snapshot(3, vec![project("acme", 1)]));
    let signed = dir.path().join("signed.json");
    let out = sidecar(&[
        "sign",
        "--key",
        key.to_str().unwrap(),
        &file,
        "-o",
        signed.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("signed projects=1 keyid="), "{stdout}");
    assert_eq!(stderr, "");
    let out = sidecar(&["sign", "--key", key.to_str().unwrap(), &file]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let served: Value = serde_json::from_str(&stdout).expect("stdout is the signed snapshot");
    assert_eq!(served["revision"], 3);
    assert!(stderr.starts_with("signed projects=1 keyid="), "{stderr}");
    // A refusal is a report too.
    let mut broken = project("acme", 1);
    broken["id"] = json!("Bad Id");
    let bad = write(dir.path(), "bad.json", &snapshot(3, vec![broken]));
    let out = sidecar(&[
        "sign",
        "--key",
        key.to_str().unwrap(),
        &bad,
        "-o",
        signed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).0.contains("refused rejected=1"),
        "{:?}",
        text(&out)
    );
}

/// `fleet` reads `config/sidecar.toml` when no store is named, as its
/// help says and as the sidecar itself does; without one it says what to
/// name.
#[test]
fn fleet_reads_the_default_config_when_no_store_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = || {
        common::shared::sidecar_command()
            .args(["fleet", "status", "--retry-for", "0s"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = fleet();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .contains("--redis URL, --control-plane URL or --config FILE"),
        "{:?}",
        text(&out)
    );
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/sidecar.toml"),
        "[source]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = fleet();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).0.contains("cannot reach Redis"),
        "{:?}",
        text(&out)
    );
}

/// The files the docs' sessions name (`config/examples/`) are what the
/// sessions say: every config passes the start's checks, and each next
/// snapshot is a valid successor of the one before it.
#[test]
fn the_example_files_the_docs_use_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = root.join("config/examples");
    let mut configs = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = sidecar(&["check-config", "--config", path.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {:?}",
                path.display(),
                text(&out)
            );
            configs += 1;
        }
    }
    assert!(configs >= 2, "the fleet session's two nodes");
    let file = |name: &str| root.join(name).display().to_string();
    for (previous, next, code) in [
        ("config/snapshot.json", "config/examples/next.json", 0),
        (
            "config/examples/next.json",
            "config/examples/next-59.json",
            0,
        ),
        (
            "config/snapshot.json",
            "config/examples/next-slug-changed.json",
            1,
        ),
    ] {
        let out = sidecar(&["validate", "--previous", &file(previous), &file(next)]);
        assert_eq!(out.status.code(), Some(code), "{next}: {:?}", text(&out));
    }
}
