//! A project as served: a validated document, the effective pointers of each
//! environment (scheduled changes that are due merged in), a slug index, and
//! every resolve answer pre-rendered to bytes.
//!
//! All the work happens in [`Project::build`], once per accepted revision (or
//! per scheduled change applied). Resolving only looks up and clones
//! reference-counted bytes: it never formats, parses or allocates.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;
use serde::Serialize;

use crate::resolve::{Answer, Outcome};
use crate::validate::{ValidProject, MAX_SLUG_LEN};
use crate::wire::Pointers;

/// One environment as served.
#[derive(Debug)]
pub struct ServedEnvironment {
    /// The pointers with due scheduled changes overlaid, when any overlay
    /// applies to this environment; otherwise the document's own pointers
    /// serve (not copied: most environments have no schedule).
    overlaid: Option<Pointers>,
    exact: Answer,
}

#[derive(Debug)]
pub struct Project {
    valid: Arc<ValidProject>,
    accepted_at: SystemTime,
    /// How many entries of `valid.schedule()` are in effect (a prefix).
    applied: usize,
    /// In serving order, parallel to `valid.environments()`.
    environments: Box<[ServedEnvironment]>,
    /// Every slug as an inline key, sorted, for a binary search that does
    /// not leave this array for slugs of up to 8 bytes (most of them).
    slug_index: Box<[SlugKey]>,
    fallback_not_requested: Answer,
    fallback_unknown: Answer,
}

impl Project {
    /// Builds the served form with every scheduled entry due at `now`
    /// applied.
    pub fn build(valid: Arc<ValidProject>, accepted_at: SystemTime, now: SystemTime) -> Project {
        let applied = valid.schedule().iter().take_while(|e| e.at <= now).count();
        Project::with_applied(valid, accepted_at, applied)
    }

    /// Builds the served form with exactly the first `applied` schedule
    /// entries in effect.
    pub fn with_applied(
        valid: Arc<ValidProject>,
        accepted_at: SystemTime,
        applied: usize,
    ) -> Project {
        let applied = applied.min(valid.schedule().len());
        let envs = valid.environments();
        let fallback = envs.iter().position(|e| e.gateway_fallback).unwrap_or(0);
        let environments: Box<[ServedEnvironment]> = (0..envs.len())
            .map(|i| {
                let overlaid = valid.overlaid_pointers(i, applied);
                let pointers = overlaid.as_ref().unwrap_or(&envs[i].pointers);
                let exact = render(&valid, i, pointers, Outcome::Exact);
                ServedEnvironment { overlaid, exact }
            })
            .collect();
        let mut slug_index: Vec<SlugKey> = envs
            .iter()
            .enumerate()
            .map(|(i, e)| SlugKey::new(e.slug.as_bytes(), i as u16))
            .collect();
        slug_index.sort_unstable_by(|a, b| {
            (a.prefix, a.len).cmp(&(b.prefix, b.len)).then_with(|| {
                envs[usize::from(a.index)]
                    .slug
                    .cmp(&envs[usize::from(b.index)].slug)
            })
        });
        let fallback_pointers = environments[fallback]
            .overlaid
            .as_ref()
            .unwrap_or(&envs[fallback].pointers);
        let fallback_not_requested =
            render(&valid, fallback, fallback_pointers, Outcome::NotRequested);
        let fallback_unknown = render(
            &valid,
            fallback,
            fallback_pointers,
            Outcome::UnknownEnvironment,
        );
        Project {
            valid,
            accepted_at,
            applied,
            environments,
            slug_index: slug_index.into_boxed_slice(),
            fallback_not_requested,
            fallback_unknown,
        }
    }

    pub fn id(&self) -> &str {
        self.valid.id()
    }

    pub fn revision(&self) -> u64 {
        self.valid.revision()
    }

    pub fn valid(&self) -> &Arc<ValidProject> {
        &self.valid
    }

    pub fn accepted_at(&self) -> SystemTime {
        self.accepted_at
    }

    /// Number of schedule entries in effect.
    pub fn applied(&self) -> usize {
        self.applied
    }

    /// When the next scheduled change falls due, if any is left.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.valid.schedule().get(self.applied).map(|e| e.at)
    }

    pub fn environments(&self) -> &[ServedEnvironment] {
        &self.environments
    }

    /// The pointers environment `index` serves now.
    pub fn pointers(&self, index: usize) -> &Pointers {
        self.environments[index]
            .overlaid
            .as_ref()
            .unwrap_or(&self.valid.environments()[index].pointers)
    }

    /// The answer for a slug already lower-cased and syntax-checked, or the
    /// fallback; `None` only in strict mode for a slug that is not here.
    #[inline]
    pub fn answer(&self, slug: Option<&[u8]>, strict: bool) -> Option<&Answer> {
        let Some(slug) = slug else {
            return Some(&self.fallback_not_requested);
        };
        match self.find(slug) {
            Some(index) => Some(&self.environments[index].exact),
            None if strict => None,
            None => Some(&self.fallback_unknown),
        }
    }

    #[inline]
    fn find(&self, slug: &[u8]) -> Option<usize> {
        let key = SlugKey::new(slug, 0);
        let start = self
            .slug_index
            .partition_point(|k| (k.prefix, k.len) < (key.prefix, key.len));
        for k in &self.slug_index[start..] {
            if (k.prefix, k.len) != (key.prefix, key.len) {
                break;
            }
            let index = usize::from(k.index);
            // Up to 8 bytes the key is the whole slug; beyond, compare.
            if slug.len() <= 8 || self.valid.environments()[index].slug.as_bytes() == slug {
                return Some(index);
            }
        }
        None
    }
}

/// A slug's first 8 bytes and length, packed for comparison in place.
#[derive(Debug, Clone, Copy)]
struct SlugKey {
    prefix: u64,
    len: u8,
    index: u16,
}

impl SlugKey {
    #[inline]
    fn new(slug: &[u8], index: u16) -> SlugKey {
        let mut bytes = [0u8; 8];
        let n = slug.len().min(8);
        bytes[..n].copy_from_slice(&slug[..n]);
        SlugKey {
            prefix: u64::from_be_bytes(bytes),
            len: slug.len().min(255) as u8,
            index,
        }
    }
}

const _: () = assert!(MAX_SLUG_LEN <= 64);

#[derive(Serialize)]
struct AnswerBody<'a> {
    project: &'a str,
    revision: u64,
    outcome: &'static str,
    reason: Option<&'static str>,
    environment: AnswerEnvironment<'a>,
    pointers: &'a Pointers,
}

#[derive(Serialize)]
struct AnswerEnvironment<'a> {
    id: &'a str,
    slug: &'a str,
    name: &'a str,
    production: bool,
    color: &'a str,
}

fn render(valid: &ValidProject, index: usize, pointers: &Pointers, outcome: Outcome) -> Answer {
    let env = &valid.environments()[index];
    let body = AnswerBody {
        project: valid.id(),
        revision: valid.revision(),
        outcome: outcome.as_str(),
        reason: outcome.reason(),
        environment: AnswerEnvironment {
            id: &env.id,
            slug: &env.slug,
            name: &env.name,
            production: env.production,
            color: &env.color,
        },
        pointers,
    };
    // Serialising plain structs of strings and integers cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Answer {
        outcome,
        body: Bytes::from(bytes),
        // A validated slug is `[a-z0-9-]`, always a valid header value.
        environment: HeaderValue::from_str(&env.slug).unwrap_or(HeaderValue::from_static("")),
        revision: HeaderValue::from(valid.revision()),
    }
}
