//! The layer rule of `src/lib.rs`, checked on the source: each top-level
//! module imports only the layers below it, the domain never imports the
//! server, and no production module imports the tooling (`sim`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each layer and what it may import. Anything else is a violation.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &[]),
    ("telemetry", &["model", "config"]),
    ("store", &["model", "telemetry"]),
    ("sync", &["model", "config", "telemetry", "store"]),
    ("server", &["model", "config", "telemetry", "store", "sync"]),
    (
        "app",
        &["model", "config", "telemetry", "store", "sync", "server"],
    ),
    (
        "ops",
        &["model", "config", "telemetry", "store", "sync", "server"],
    ),
    (
        "sim",
        &["model", "config", "telemetry", "store", "sync", "server"],
    ),
];

/// Top-level module → the top-level modules its files name as `crate::X`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().map_or(true, |e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel.iter().next().unwrap().to_string_lossy();
            let top = top.trim_end_matches(".rs").to_string();
            if ["lib", "main", "bin"].contains(&top.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let targets = found.entry(top.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(at) = rest.find("crate::") {
                    rest = &rest[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        targets.insert(name);
                    }
                }
                // `use crate::{a, b}` groups.
                if let Some(group) = code.split("crate::{").nth(1) {
                    for part in group.split(',') {
                        let name: String = part
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != top && name != "self" {
                            targets.insert(name);
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, targets) in imports() {
        let Some(may) = allowed.get(module.as_str()) else {
            violations.push(format!("src/{module} is not in the layer table"));
            continue;
        };
        for target in targets {
            if !may.contains(&target.as_str()) {
                violations.push(format!("{module} imports {target}"));
            }
        }
    }
    assert!(violations.is_empty(), "layer rule broken: {violations:#?}");
}

#[test]
fn the_layer_table_itself_has_no_cycle_and_production_never_names_sim() {
    let position = |name: &str| ALLOWED.iter().position(|(n, _)| *n == name).unwrap();
    for (module, may) in ALLOWED {
        for target in *may {
            assert!(
                position(target) < position(module),
                "{module} may import {target}, which is not below it"
            );
            assert_ne!(*target, "sim", "{module} may not import tooling");
        }
    }
}
