//! Validation: turns an untrusted [`WireProject`] into a [`ValidProject`],
//! enforcing every field rule of the data model, once, off the hot path.
//!
//! A `ValidProject` can only be made here, so the store cannot hold a
//! project that broke a rule. Rules that depend on history (slug
//! immutability) take the environments of the project's last accepted
//! revision; revision ordering is the store's business because "stale" is
//! not an error.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

pub use crate::model::rejection::{Reason, ValidationError};
use crate::model::timestamp::parse_rfc3339;
use crate::model::trust::Verified;
use crate::model::wire::{Pointers, WireEnvironment, WireProject, POINTER_KINDS};

pub const MAX_ID_LEN: usize = 128;
pub const MAX_SLUG_LEN: usize = 64;
pub const MIN_ENVIRONMENTS: usize = 2;
pub const MAX_ENVIRONMENTS: usize = 256;
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_DESCRIPTION_CHARS: usize = 280;
pub const MAX_POINTER_CHARS: usize = 128;
pub const MAX_POINTERS_PER_ENVIRONMENT: usize = 4096;
pub const RESERVED_SLUGS: [&str; 2] = ["prod", "staging"];

fn fail<T>(reason: Reason, message: String) -> Result<T, ValidationError> {
    Err(ValidationError { reason, message })
}

/// A scheduled overlay, resolved to an instant and located in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleEntry {
    pub at: SystemTime,
    /// Index into [`ValidProject::environments`].
    pub environment: usize,
    /// Index into that environment's `scheduled` list.
    pub entry: usize,
}

/// A project document that satisfies every rule. Environments are in
/// serving order (ascending `position`, then slug; no position sorts last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidProject {
    doc: WireProject,
    /// The envelope it arrived in and what it was signed by, once the
    /// writer believed it (see [`super::trust`]).
    seal: Option<Box<Sealed>>,
    published_at: Option<SystemTime>,
    /// Every scheduled entry of every environment, by `at` (ties keep
    /// document order, so a later entry wins over an earlier one).
    schedule: Vec<ScheduleEntry>,
}

/// A believed envelope: its text as received and what verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub envelope: Box<str>,
    pub verified: Verified,
}

impl ValidProject {
    /// The same project, as it arrived: in `envelope`, believed as
    /// `verified`.
    pub fn sealed(mut self, envelope: Box<str>, verified: Verified) -> ValidProject {
        self.seal = Some(Box::new(Sealed { envelope, verified }));
        self
    }

    /// The envelope it arrived in, when it was signed.
    pub fn seal(&self) -> Option<&Sealed> {
        self.seal.as_deref()
    }

    pub fn id(&self) -> &str {
        &self.doc.id
    }

    pub fn revision(&self) -> u64 {
        self.doc.revision
    }

    pub fn environments(&self) -> &[WireEnvironment] {
        &self.doc.environments
    }

    /// The document as accepted (environments in serving order).
    pub fn document(&self) -> &WireProject {
        &self.doc
    }

    /// The document as compact JSON: the form a project keeps at rest and
    /// the cache stores. Reading it back and validating it again gives
    /// this same project.
    pub fn to_json(&self) -> Box<str> {
        let mut out = Vec::new();
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_default().into_boxed_str()
    }

    /// [`to_json`](Self::to_json), appended to `out` (a buffer the writer
    /// reuses, rather than a new string per project).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Plain data of strings, integers and booleans: cannot fail.
        let _ = serde_json::to_writer(out, &self.doc);
    }

    pub fn published_at(&self) -> Option<SystemTime> {
        self.published_at
    }

    pub fn schedule(&self) -> &[ScheduleEntry] {
        &self.schedule
    }

    /// The pointers of environment `index` with the first `applied`
    /// schedule entries overlaid, or `None` when none of them concerns this
    /// environment (its own pointers serve as they are).
    pub fn overlaid_pointers(&self, index: usize, applied: usize) -> Option<Pointers> {
        let due = &self.schedule[..applied.min(self.schedule.len())];
        due.iter()
            .any(|e| e.environment == index)
            .then(|| self.pointers_with(index, applied))
    }

    /// The pointers of environment `index` with the first `applied`
    /// schedule entries overlaid. Pending releases are never part of this.
    pub fn pointers_with(&self, index: usize, applied: usize) -> Pointers {
        let mut pointers = self.doc.environments[index].pointers.clone();
        for entry in self.schedule[..applied.min(self.schedule.len())]
            .iter()
            .filter(|e| e.environment == index)
        {
            let overlay = &self.doc.environments[index].scheduled[entry.entry].pointers;
            for (kind, map) in overlay {
                if let Some(target) = pointers.kind_mut(kind) {
                    target.extend(map.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                }
            }
        }
        pointers
    }
}

/// Puts environments in serving order: ascending `position`, ties by
/// slug, those without a position last. Every accepted document is kept
/// in this order.
pub fn serving_order(environments: &mut [WireEnvironment]) {
    environments.sort_by(|a, b| {
        match (a.position, b.position) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.slug.cmp(&b.slug))
    });
}

/// Validates `doc` against every rule. `previous` holds `(environment id,
/// slug)` of every environment of the project's last accepted revision
/// (empty for a new project): slugs are immutable.
pub fn validate(
    mut doc: WireProject,
    previous: &[(&str, &str)],
) -> Result<ValidProject, ValidationError> {
    if !is_valid_id(&doc.id) {
        return fail(
            Reason::InvalidProjectId,
            format!(
                "project id must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 _ - (got {:?})",
                truncate(&doc.id)
            ),
        );
    }
    let count = doc.environments.len();
    if !(MIN_ENVIRONMENTS..=MAX_ENVIRONMENTS).contains(&count) {
        return fail(
            Reason::EnvironmentCount,
            format!(
                "a project needs {MIN_ENVIRONMENTS}-{MAX_ENVIRONMENTS} environments, got {count}"
            ),
        );
    }

    validate_environments(&doc.environments, previous)?;
    serving_order(&mut doc.environments);
    let schedule = validate_schedule(&doc.environments)?;

    // published_at is telemetry: an unreadable one must not block a rollout,
    // so it is treated as absent rather than rejecting the document.
    let published_at = doc
        .published_at
        .as_deref()
        .and_then(|t| parse_rfc3339(t).ok());
    Ok(ValidProject {
        doc,
        seal: None,
        published_at,
        schedule,
    })
}

/// The rules across a project's environments: each environment's own,
/// ids and slugs unique, the reserved slugs present, exactly one gateway
/// fallback and one default publish target, and no slug changed from
/// `previous`.
fn validate_environments(
    environments: &[WireEnvironment],
    previous: &[(&str, &str)],
) -> Result<(), ValidationError> {
    let mut ids = HashSet::with_capacity(environments.len());
    let mut slugs = HashSet::with_capacity(environments.len());
    let (mut fallbacks, mut targets) = (0, 0);
    for env in environments {
        validate_environment(env)?;
        if !ids.insert(env.id.as_str()) {
            return fail(
                Reason::DuplicateEnvironmentId,
                format!("environment id {:?} appears twice", env.id),
            );
        }
        if !slugs.insert(env.slug.as_str()) {
            return fail(
                Reason::DuplicateSlug,
                format!("slug {:?} appears twice", env.slug),
            );
        }
        fallbacks += usize::from(env.gateway_fallback);
        targets += usize::from(env.default_publish_target);
    }
    for reserved in RESERVED_SLUGS {
        if !slugs.contains(reserved) {
            return fail(
                Reason::ReservedSlug,
                format!("the {reserved:?} environment is missing"),
            );
        }
    }
    if fallbacks != 1 {
        return fail(
            Reason::GatewayFallback,
            format!("exactly one environment must be the gateway fallback, found {fallbacks}"),
        );
    }
    if targets != 1 {
        return fail(
            Reason::PublishTarget,
            format!("exactly one environment must be the default publish target, found {targets}"),
        );
    }
    for env in environments {
        if let Some((_, old)) = previous.iter().find(|(id, _)| *id == env.id) {
            if *old != env.slug {
                return fail(
                    Reason::SlugChanged,
                    format!(
                        "environment {:?} has slug {:?}; slugs are immutable (was {:?})",
                        env.id, env.slug, old
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Every scheduled change (environments in serving order): a valid
/// instant, only the three pointer kinds, valid pointers, and at most
/// [`MAX_POINTERS_PER_ENVIRONMENT`] pointers with them; the schedule by
/// instant, equal instants in document order.
fn validate_schedule(
    environments: &[WireEnvironment],
) -> Result<Vec<ScheduleEntry>, ValidationError> {
    let mut schedule = Vec::new();
    for (index, env) in environments.iter().enumerate() {
        let mut merged: BTreeMap<(&str, &str), ()> = BTreeMap::new();
        for (kind, key, _) in env.pointers.iter() {
            merged.insert((kind, key), ());
        }
        for (entry, change) in env.scheduled.iter().enumerate() {
            let at = parse_rfc3339(&change.at).or_else(|e| {
                fail(
                    Reason::InvalidSchedule,
                    format!(
                        "environment {:?}: scheduled \"at\" {:?}: {e}",
                        env.slug,
                        truncate(&change.at)
                    ),
                )
            })?;
            for (kind, map) in &change.pointers {
                let Some(kind) = POINTER_KINDS.iter().find(|k| **k == kind.as_str()) else {
                    return fail(
                        Reason::InvalidSchedule,
                        format!(
                            "environment {:?}: scheduled pointer kind {:?} is not one of prompts, routing_rules, providers",
                            env.slug,
                            truncate(kind)
                        ),
                    );
                };
                for (key, value) in map {
                    validate_pointer(&env.slug, kind, key, value)?;
                    merged.insert((kind, key), ());
                }
            }
            schedule.push(ScheduleEntry {
                at,
                environment: index,
                entry,
            });
        }
        if merged.len() > MAX_POINTERS_PER_ENVIRONMENT {
            return fail(
                Reason::TooManyPointers,
                format!(
                    "environment {:?} has {} pointers (with scheduled changes), at most {MAX_POINTERS_PER_ENVIRONMENT}",
                    env.slug,
                    merged.len()
                ),
            );
        }
    }
    // Stable: equal instants keep document order.
    schedule.sort_by_key(|e| e.at);
    Ok(schedule)
}

fn validate_environment(env: &WireEnvironment) -> Result<(), ValidationError> {
    if !is_valid_id(&env.id) {
        return fail(
            Reason::InvalidEnvironmentId,
            format!(
                "environment id must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 _ - (got {:?})",
                truncate(&env.id)
            ),
        );
    }
    if !is_valid_slug(&env.slug) {
        return fail(
            Reason::InvalidSlug,
            format!(
                "slug {:?} must be 1-{MAX_SLUG_LEN} characters of a-z 0-9 -, start with a letter and not end with '-'",
                truncate(&env.slug)
            ),
        );
    }
    let reserved = RESERVED_SLUGS.contains(&env.slug.as_str());
    if env.system != reserved {
        let message = if reserved {
            format!("the {:?} environment must have \"system\": true", env.slug)
        } else {
            format!(
                "only prod and staging may have \"system\": true (environment {:?})",
                env.slug
            )
        };
        return fail(Reason::SystemFlag, message);
    }
    let name_chars = env.name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&name_chars) {
        return fail(
            Reason::InvalidName,
            format!(
                "environment {:?}: name must be 1-{MAX_NAME_CHARS} characters, got {name_chars}",
                env.slug
            ),
        );
    }
    if let Some(description) = &env.description {
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return fail(
                Reason::InvalidDescription,
                format!(
                    "environment {:?}: description must be at most {MAX_DESCRIPTION_CHARS} characters, got {chars}",
                    env.slug
                ),
            );
        }
    }
    if !is_valid_color(&env.color) {
        return fail(
            Reason::InvalidColor,
            format!(
                "environment {:?}: color {:?} is not #RRGGBB",
                env.slug,
                truncate(&env.color)
            ),
        );
    }
    if env.pointers.len() > MAX_POINTERS_PER_ENVIRONMENT {
        return fail(
            Reason::TooManyPointers,
            format!(
                "environment {:?} has {} pointers, at most {MAX_POINTERS_PER_ENVIRONMENT}",
                env.slug,
                env.pointers.len()
            ),
        );
    }
    for (kind, key, value) in env.pointers.iter() {
        validate_pointer(&env.slug, kind, key, value)?;
    }
    Ok(())
}

fn validate_pointer(slug: &str, kind: &str, key: &str, value: &str) -> Result<(), ValidationError> {
    let key_chars = key.chars().count();
    if !(1..=MAX_POINTER_CHARS).contains(&key_chars) || key.chars().any(char::is_control) {
        return fail(
            Reason::InvalidPointer,
            format!(
                "environment {slug:?}: {kind} key {:?} must be 1-{MAX_POINTER_CHARS} characters without control characters",
                truncate(key)
            ),
        );
    }
    if !(1..=MAX_POINTER_CHARS).contains(&value.len())
        || !value.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        return fail(
            Reason::InvalidPointer,
            format!(
                "environment {slug:?}: {kind}.{} value {:?} must be 1-{MAX_POINTER_CHARS} printable ASCII characters",
                truncate(key),
                truncate(value)
            ),
        );
    }
    Ok(())
}

/// Project and environment ids: 1-128 of `A-Z a-z 0-9 _ -`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Slugs as stored: 1-64 of `a-z 0-9 -`, a letter first, no trailing `-`.
pub fn is_valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    (1..=MAX_SLUG_LEN).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Checks the syntax of a slug as a client sent it (any ASCII case) and
/// writes its lower-case form into `buf`; `None` for anything that cannot
/// be a slug. Allocation-free: the resolve path calls it per request.
#[inline]
pub fn lower_slug<'b>(raw: &str, buf: &'b mut [u8; MAX_SLUG_LEN]) -> Option<&'b [u8]> {
    let bytes = raw.as_bytes();
    let len = bytes.len();
    if len == 0 || len > MAX_SLUG_LEN || !bytes[0].is_ascii_alphabetic() || bytes[len - 1] == b'-' {
        return None;
    }
    for (dst, &c) in buf.iter_mut().zip(bytes) {
        if !(c.is_ascii_alphanumeric() || c == b'-') {
            return None;
        }
        *dst = c.to_ascii_lowercase();
    }
    Some(&buf[..len])
}

fn is_valid_color(color: &str) -> bool {
    let b = color.as_bytes();
    b.len() == 7 && b[0] == b'#' && b[1..].iter().all(u8::is_ascii_hexdigit)
}

/// Bounds what a message quotes back from a document.
fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests;
