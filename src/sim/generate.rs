//! Synthetic populations: realistic project documents for the simulator,
//! benchmarks and load tests. Deterministic: project `i` at revision `r` is
//! always the same document.
//!
//! Each project has `prod`, `staging` and two custom environments, a few
//! pointers of each kind, and pointer values tagged with the revision
//! (`v<revision>-...`) so a reader can tell which revision served it.

use std::time::SystemTime;

use crate::model::timestamp::format_rfc3339;
use crate::model::wire::{Pending, Pointers, WireEnvironment, WireProject};

const CUSTOM: [&str; 6] = ["qa", "canary", "dev", "perf", "eu-canary", "sandbox"];
const COLORS: [&str; 6] = [
    "#16a34a", "#ca8a04", "#2563eb", "#dc2626", "#7c3aed", "#0891b2",
];

/// The id of synthetic project `i`.
pub fn project_id(i: usize) -> String {
    format!("proj-{i:06}")
}

/// Synthetic project `i` at `revision`, optionally stamped `published_at`.
pub fn project(i: usize, revision: u64, published_at: Option<SystemTime>) -> WireProject {
    let mut rng = Rng((i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(1));
    let id = project_id(i);
    let custom_a = CUSTOM[rng.below(3)];
    let custom_b = CUSTOM[3 + rng.below(3)];
    let slugs = ["prod", "staging", custom_a, custom_b];
    // Most projects fall back to prod; some to staging.
    let fallback = if rng.below(10) == 0 { 1 } else { 0 };
    let environments = slugs
        .iter()
        .enumerate()
        .map(|(pos, slug)| {
            let mut pointers = Pointers::default();
            for k in 0..3 {
                pointers.prompts.insert(
                    format!("prompt-{k}"),
                    format!("v{revision}-{}", rng.below(100)),
                );
            }
            pointers
                .routing_rules
                .insert("default", format!("v{revision}-rel-{}", rng.below(50)));
            pointers
                .providers
                .insert("openai", format!("v{revision}-act-{}", rng.below(20)));
            pointers
                .providers
                .insert("anthropic", format!("v{revision}-act-{}", rng.below(20)));
            WireEnvironment {
                id: format!("{id}-env-{pos}"),
                slug: (*slug).to_string(),
                name: slug.to_uppercase(),
                description: Some(format!("{slug} traffic for {id}")),
                color: COLORS[pos % COLORS.len()].to_string(),
                system: pos < 2,
                default_publish_target: pos == 1,
                production: pos == 0,
                gateway_fallback: pos == fallback,
                position: Some(pos as i64),
                pointers,
                pending: if pos == 0 {
                    vec![Pending {
                        kind: "prompts".into(),
                        key: "prompt-0".into(),
                        version: format!("v{}-pending", revision + 1),
                        requested_by: Some("u_1".into()),
                    }]
                } else {
                    Vec::new()
                },
                scheduled: Vec::new(),
            }
        })
        .collect();
    WireProject {
        id,
        revision,
        environments,
        published_at: published_at.map(format_rfc3339),
        signed_at: None,
        expires_at: None,
    }
}

/// A snapshot body of `n` projects at revision 1, as JSON bytes.
pub fn snapshot_json(n: usize, revision: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body {
        revision: u64,
        projects: Vec<WireProject>,
    }
    let body = Body {
        revision,
        projects: (0..n).map(|i| project(i, 1, None)).collect(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A tiny deterministic generator (splitmix64); no `rand` needed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::validate;

    #[test]
    fn generated_projects_are_valid_and_deterministic() {
        for i in 0..200 {
            let p = project(i, 3, Some(SystemTime::now()));
            assert_eq!(p.environments.len(), 4);
            validate(p.clone(), &[]).unwrap_or_else(|e| panic!("project {i}: {e}"));
            assert_eq!(project(i, 3, None).environments, p.environments);
        }
    }
}
