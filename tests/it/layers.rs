//! The layer rule of `src/lib.rs`, checked on the source: each top-level
//! module imports only the layers below it, the domain never imports the
//! server, no production module imports the tooling (`sim`), and the
//! modules inside each layer (`model::trust`, `sync::report`, …) import
//! each other without a cycle.
//!
//! Imports are read from `crate::` and `super::` paths (and `use
//! crate::{a, b}` groups), as `module_cycles.py` reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each layer and what it may import. Anything else is a violation.
const ALLOWED: &[(&str, &[&str])] = &[
    ("lock", &[]),
    ("parallel", &[]),
    ("protobuf", &[]),
    ("model", &["lock", "parallel"]),
    ("config", &["lock"]),
    ("telemetry", &["lock", "model", "config"]),
    ("redis_client", &["lock", "parallel", "model", "config"]),
    (
        "store",
        &["lock", "parallel", "protobuf", "model", "telemetry"],
    ),
    (
        "sync",
        &[
            "lock",
            "parallel",
            "model",
            "config",
            "telemetry",
            "redis_client",
            "store",
        ],
    ),
    (
        "server",
        &[
            "lock",
            "protobuf",
            "model",
            "config",
            "telemetry",
            "store",
            "sync",
        ],
    ),
    (
        "app",
        &[
            "lock",
            "model",
            "config",
            "telemetry",
            "store",
            "sync",
            "server",
        ],
    ),
    (
        "ops",
        &[
            "lock",
            "model",
            "config",
            "telemetry",
            "redis_client",
            "store",
            "sync",
            "server",
            "app",
        ],
    ),
    (
        "sim",
        &[
            "lock",
            "model",
            "config",
            "telemetry",
            "redis_client",
            "store",
            "sync",
            "server",
        ],
    ),
];

/// Every `.rs` file under `src/` but the crate roots: its path relative
/// to `src/` as segments without `.rs`, and its code without comments.
fn files() -> Vec<(Vec<String>, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
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
            let rel: Vec<String> = path
                .strip_prefix(&src)
                .unwrap()
                .with_extension("")
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if ["lib", "main", "bin"].contains(&rel[0].as_str()) {
                continue;
            }
            let code: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            out.push((rel, code));
        }
    }
    out
}

/// The module a file is, to `depth` segments (`sync/report/mod` →
/// `sync::report`).
fn module_of(rel: &[String], depth: usize) -> Vec<String> {
    let mut parts = rel.to_vec();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.truncate(depth);
    parts
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect()
}

/// Every path a file names from `crate::` or `super::`, as absolute
/// segments.
fn references(rel: &[String], code: &str) -> Vec<Vec<String>> {
    let parent: Vec<String> = {
        let mut p = rel.to_vec();
        let is_mod = p.last().is_some_and(|l| l == "mod");
        p.pop();
        if is_mod {
            p.pop();
        }
        p
    };
    let mut out = Vec::new();
    for (kind, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code;
        while let Some(at) = rest.find(kind) {
            let before = rest[..at].chars().last();
            rest = &rest[at + kind.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let mut segs = base.clone();
            let mut tail = rest;
            loop {
                let name = ident(tail);
                if name.is_empty() {
                    break;
                }
                tail = &tail[name.len()..];
                segs.push(name);
                match tail.strip_prefix("::") {
                    Some(more) => tail = more,
                    None => break,
                }
            }
            if let Some(group) = tail.strip_prefix('{') {
                // `path::{Type, module}`: the path itself is named, and
                // each lower-case part may be a module below it.
                out.push(segs.clone());
                let group = group.split('}').next().unwrap_or("");
                for part in group.split(',') {
                    let name = ident(part.trim());
                    if !name.is_empty() && name != "self" {
                        let mut full = segs.clone();
                        full.push(name);
                        out.push(full);
                    }
                }
            } else if !segs.is_empty() {
                out.push(segs);
            }
        }
    }
    out
}

/// Module → the modules it names, at `depth` (2: only edges inside one
/// layer).
fn graph(depth: usize) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = files();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(r, _)| module_of(r, depth)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (rel, code) in &files {
        let me = module_of(rel, depth);
        for full in references(rel, code) {
            let target = (1..=depth.min(full.len()))
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|m| modules.contains(m));
            if let Some(t) = target {
                if t != me && (depth == 1 || t[0] == me[0]) {
                    edges.entry(me.clone()).or_default().insert(t);
                }
            }
        }
    }
    edges
}

/// The cycles of a graph: its strongly connected components of more than
/// one module.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&Vec<String>> = edges.keys().chain(edges.values().flatten()).collect();
    // Reachability by search, then mutual reachability: small graphs.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for t in edges.get(&n).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let mut component: Vec<String> = nodes
            .iter()
            .filter(|m| reached[*n].contains(**m) && reached[**m].contains(*n))
            .map(|m| m.join("::"))
            .collect();
        if component.len() > 1 {
            component.sort();
            out.insert(component);
        }
    }
    out.into_iter().collect()
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, targets) in graph(1) {
        let Some(may) = allowed.get(module[0].as_str()) else {
            violations.push(format!("src/{} is not in the layer table", module[0]));
            continue;
        };
        for target in targets {
            if !may.contains(&target[0].as_str()) {
                violations.push(format!("{} imports {}", module[0], target[0]));
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

#[test]
fn no_cycles_among_the_modules_inside_a_layer() {
    let found = cycles(&graph(2));
    assert!(found.is_empty(), "module cycles: {found:?}");
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let mut edges = BTreeMap::new();
    edges.insert(m("model::trust"), BTreeSet::from([m("model::validate")]));
    edges.insert(m("model::validate"), BTreeSet::from([m("model::trust")]));
    edges.insert(m("model::wire"), BTreeSet::from([m("model::trust")]));
    assert_eq!(
        cycles(&edges),
        [vec![
            "model::trust".to_owned(),
            "model::validate".to_owned()
        ]]
    );
    // And reads `super::` paths as the files write them.
    let refs = references(
        &["model".into(), "trust".into()],
        "use super::validate::{Reason, X};\nuse crate::model::{wire, keys::K};",
    );
    assert!(refs.contains(&m("model::validate")), "{refs:?}");
    assert!(refs.contains(&m("model::wire")), "{refs:?}");
}
