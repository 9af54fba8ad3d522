//! A served project as plain values ([`Parts`]), and the project rebuilt
//! from them: what the last-known-good cache keeps, so that a restart
//! serves again without parsing, validating, rendering or compressing
//! anything. The parts hold the answers as rendered, the document as
//! compressed, and what the trust checks need (who signed, until when).
//!
//! Rebuilding checks that the parts fit together (every range inside
//! its buffer, every slug and header valid) and fails otherwise: nothing
//! in a file, even one that passed its checksum, can make a resolve read
//! out of bounds or serve a header hyper would refuse. Whether a rebuilt
//! project may serve is the writer's judgement
//! ([`Judge::restored`](crate::store::Judge::restored)), not this
//! module's.

use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;

use super::{
    header_value, render_structs, AtRest, PointersStructs, Project, ServedEnvironment, SlugIndex,
    ID_AT,
};
use crate::model::raw::RawDigest;
use crate::model::trust::Verified;
use crate::model::validate::{is_valid_id, is_valid_slug, ScheduleEntry};

/// The version of what [`Project::parts`] gives: the rendering of the
/// answers and the layout of the parts. A cache whose parts carry
/// another version is restored from its documents instead. Bump it with
/// any change to what `Project` renders; the test
/// `the_rendering_is_the_one_render_format_names` fails until then.
pub const RENDER_FORMAT: u32 = 1;

/// Everything a served project is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub id: String,
    pub revision: u64,
    /// [`Project::content_digest`].
    pub content: u64,
    /// [`Project::raw`].
    pub raw: Option<RawDigest>,
    pub accepted_at: SystemTime,
    pub published_at: Option<SystemTime>,
    /// How many schedule entries are in effect.
    pub applied: u32,
    pub signature: Option<Verified>,
    pub schedule: Vec<ScheduleEntry>,
    /// The document at rest, compressed as the project keeps it.
    pub document: Box<[u8]>,
    /// The answers: the prefix, then each environment's tail.
    pub rendered: Bytes,
    pub prefix_len: u32,
    /// In serving order.
    pub environments: Vec<EnvironmentParts>,
    /// Index of the gateway fallback in `environments`.
    pub fallback: u32,
}

/// Where one environment's answer parts are, relative to the start of
/// its tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentParts {
    pub tail_len: u32,
    pub slug: Range<u32>,
    pub pointers: Range<u32>,
}

/// Parts that do not make a project, with what restoring the project
/// from its document instead needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kept project {id:?} does not fit together: {what}")]
pub struct PartsError {
    pub id: String,
    pub what: &'static str,
    pub revision: u64,
    /// The document at rest, as [`Parts::document`].
    pub document: Box<[u8]>,
}

impl Project {
    /// This project as plain values (the answers copied into one buffer).
    pub fn parts(&self) -> Parts {
        let mut rendered = Vec::with_capacity(
            self.prefix.len()
                + self
                    .environments
                    .iter()
                    .map(|e| e.tail.len())
                    .sum::<usize>(),
        );
        rendered.extend_from_slice(&self.prefix);
        let within = |tail: &Bytes, part: &[u8]| {
            let start = part.as_ptr() as usize - tail.as_ptr() as usize;
            start as u32..(start + part.len()) as u32
        };
        let environments = self
            .environments
            .iter()
            .map(|e| {
                rendered.extend_from_slice(&e.tail);
                EnvironmentParts {
                    tail_len: e.tail.len() as u32,
                    slug: within(&e.tail, e.slug.as_bytes()),
                    pointers: within(&e.tail, e.pointers.as_bytes()),
                }
            })
            .collect();
        Parts {
            id: self.id.to_string(),
            revision: self.revision,
            content: self.content,
            raw: self.raw,
            accepted_at: self.accepted_at,
            published_at: self.published_at,
            applied: self.applied as u32,
            signature: self.signature.as_deref().cloned(),
            schedule: self.schedule.to_vec(),
            document: self.document.stored().into(),
            rendered: rendered.into(),
            prefix_len: self.prefix.len() as u32,
            environments,
            fallback: self.fallback as u32,
        }
    }

    /// The project the parts describe, its pointers structs made as
    /// `structs` says. The answers are the parts' buffer, shared.
    pub fn from_parts(parts: Parts, structs: PointersStructs) -> Result<Project, PartsError> {
        let (environments, revision_at) = match checked(&parts) {
            Ok(checked) => checked,
            Err(what) => {
                return Err(PartsError {
                    id: parts.id,
                    what,
                    revision: parts.revision,
                    document: parts.document,
                })
            }
        };
        let buffer = &parts.rendered;
        let prefix_len = parts.prefix_len as usize;
        let environments: Box<[ServedEnvironment]> = environments.into();
        let pointers_structs = match structs {
            PointersStructs::PerCheck => None,
            PointersStructs::Prerendered => Some(render_structs(&environments)),
        };
        let slug_index = SlugIndex::of(&environments);
        Ok(Project {
            slug_index,
            revision_header: header_value(buffer.slice(revision_at..prefix_len - 1)),
            prefix: buffer.slice(..prefix_len),
            environments,
            fallback: parts.fallback as usize,
            pointers_structs,
            id: parts.id.into_boxed_str(),
            revision: parts.revision,
            content: parts.content,
            raw: parts.raw,
            document: AtRest::from_stored(parts.document),
            signature: parts.signature.map(Box::new),
            published_at: parts.published_at,
            schedule: parts.schedule.into_boxed_slice(),
            accepted_at: parts.accepted_at,
            applied: parts.applied as usize,
        })
    }
}

/// Checks that the parts fit together: the environments' served parts,
/// and where the revision's digits start in the prefix.
fn checked(parts: &Parts) -> Result<(Vec<ServedEnvironment>, usize), &'static str> {
    if !is_valid_id(&parts.id) {
        return Err("the id is not a project id");
    }
    let buffer = &parts.rendered;
    let prefix_len = parts.prefix_len as usize;
    let digits = parts.revision.to_string();
    // `{"project":…,"revision":<digits>,`
    let revision_at = prefix_len
        .checked_sub(digits.len() + 1)
        .ok_or("the prefix is too short")?;
    if buffer.get(revision_at..prefix_len - 1) != Some(digits.as_bytes())
        || buffer.get(prefix_len - 1) != Some(&b',')
    {
        return Err("the prefix does not end with the revision");
    }
    let environments = environments(buffer, prefix_len, &parts.environments)?;
    if parts.fallback as usize >= environments.len() {
        return Err("the fallback is not an environment");
    }
    if parts.applied as usize > parts.schedule.len() {
        return Err("more schedule entries applied than there are");
    }
    Ok((environments, revision_at))
}

/// Each environment's served parts, slices of `buffer` after its
/// prefix; checks that every range lies inside its tail, that the tails
/// fill the buffer, and that slugs and pointers are valid.
fn environments(
    buffer: &Bytes,
    prefix_len: usize,
    parts: &[EnvironmentParts],
) -> Result<Vec<ServedEnvironment>, &'static str> {
    let mut at = prefix_len;
    let mut environments = Vec::with_capacity(parts.len());
    for env in parts {
        let tail = at..at + env.tail_len as usize;
        let inside = |r: &Range<u32>| {
            let r = r.start as usize..r.end as usize;
            (r.start <= r.end && r.end <= tail.len())
                .then(|| tail.start + r.start..tail.start + r.end)
        };
        let (Some(slug), Some(pointers)) = (inside(&env.slug), inside(&env.pointers)) else {
            return Err("a part lies outside its environment");
        };
        if tail.end > buffer.len() || !buffer[tail.clone()].starts_with(ID_AT) {
            return Err("an environment's answer is not where it says");
        }
        let slug_text = std::str::from_utf8(&buffer[slug.clone()]).unwrap_or("");
        if !is_valid_slug(slug_text) {
            return Err("a slug is not a valid slug");
        }
        // A valid slug is a valid header value; the pointers are checked.
        let Ok(pointers) = HeaderValue::from_maybe_shared(buffer.slice(pointers)) else {
            return Err("the pointers are not a valid header value");
        };
        environments.push(ServedEnvironment {
            tail: buffer.slice(tail.clone()),
            slug: header_value(buffer.slice(slug)),
            pointers,
        });
        at = tail.end;
    }
    if at != buffer.len() || environments.is_empty() {
        return Err("the answers do not fill their buffer");
    }
    Ok(environments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::validate;
    use crate::model::wire::WireProject;

    fn project(doc: &str) -> Project {
        let wire: WireProject = serde_json::from_str(doc).unwrap();
        let valid = validate(wire, &[]).unwrap();
        Project::build(
            &valid,
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH,
            PointersStructs::PerCheck,
        )
    }

    const DOC: &str = r##"{"id":"acme","revision":42,"environments":[
        {"id":"e1","slug":"prod","name":"Prod \"é\"","color":"#000000","system":true,"gateway_fallback":true,"position":0,
         "pointers":{"prompts":{"q\"uote":"x\\y","été":"1"},"providers":{"😀":"2"}},
         "scheduled":[{"at":"2999-01-01T00:00:00Z","pointers":{"prompts":{"été":"3"}}}]},
        {"id":"e2","slug":"staging","name":"s","color":"#ffffff","system":true,"default_publish_target":true,"position":1},
        {"id":"e3","slug":"a-very-long-canary-slug","name":"c","color":"#ffffff","system":false,"position":2}]}"##;

    fn answers(p: &Project) -> Vec<Vec<u8>> {
        ["prod", "staging", "a-very-long-canary-slug", "nope"]
            .iter()
            .map(|s| p.answer(Some(s.as_bytes()), false).unwrap().body())
            .chain([p.answer(None, false).unwrap().body()])
            .collect()
    }

    #[test]
    fn a_project_rebuilt_from_its_parts_is_the_same_project() {
        let original = project(DOC);
        let parts = original.parts();
        let rebuilt = Project::from_parts(parts.clone(), PointersStructs::PerCheck).unwrap();
        assert_eq!(answers(&rebuilt), answers(&original));
        assert_eq!(rebuilt.parts(), parts);
        assert_eq!(
            rebuilt.stored_text().unwrap(),
            original.stored_text().unwrap()
        );
        assert_eq!(rebuilt.reparse().unwrap(), original.reparse().unwrap());
        assert_eq!(rebuilt.environment_keys(), original.environment_keys());
        let prerendered = Project::from_parts(parts, PointersStructs::Prerendered).unwrap();
        assert_eq!(prerendered.pointers_structs(), PointersStructs::Prerendered);
    }

    #[test]
    fn parts_that_do_not_fit_are_refused() {
        let parts = project(DOC).parts();
        type Breaks = fn(&mut Parts);
        let broken: Vec<(&str, Breaks)> = vec![
            ("id", |p| p.id = "bad id".into()),
            ("revision", |p| p.revision = 43),
            ("prefix", |p| p.prefix_len = 3),
            ("tail", |p| p.environments[0].tail_len += 1),
            ("slug", |p| p.environments[2].slug.end += 1),
            ("outside", |p| p.environments[0].pointers.end = u32::MAX),
            ("order", |p| {
                p.environments[0].slug = Range { start: 5, end: 2 }
            }),
            ("fallback", |p| p.fallback = 3),
            ("applied", |p| p.applied = 2),
            ("empty", |p| {
                p.environments.clear();
                p.rendered = p.rendered.slice(..p.prefix_len as usize);
            }),
            ("short", |p| {
                p.rendered = p.rendered.slice(..p.rendered.len() - 1)
            }),
        ];
        for (what, breaks) in broken {
            let mut bad = parts.clone();
            breaks(&mut bad);
            assert!(
                Project::from_parts(bad, PointersStructs::PerCheck).is_err(),
                "{what}"
            );
        }
    }

    /// A fixed document's rendering, pinned: a change to what a project
    /// renders fails here until [`RENDER_FORMAT`] is bumped with it (and
    /// the digest updated), so a cache of the old rendering is never
    /// served as this build's.
    #[test]
    fn the_rendering_is_the_one_render_format_names() {
        let parts = project(DOC).parts();
        let digest = crc32fast::hash(&parts.rendered);
        assert_eq!(
            (RENDER_FORMAT, format!("{digest:08x}")),
            (1, "0717f9cf".to_owned()),
            "the rendering changed: bump RENDER_FORMAT and update the digest"
        );
    }
}
