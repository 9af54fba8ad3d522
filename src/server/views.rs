//! JSON views of served and sync state (`/v1/projects/{id}`,
//! `/admin/status`, `/admin/refresh`): the presentation of domain types,
//! built per request; not the hot path.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::timestamp::format_rfc3339;
use crate::model::validate::ValidProject;
use crate::model::wire::{Pending, Pointers};
use crate::store::{Project, Rejection};
use crate::sync::refresh::{Position, RefreshOutcome};

#[derive(Debug, Clone, Serialize)]
pub struct RejectionView {
    pub project: String,
    pub revision: Option<u64>,
    pub reason: &'static str,
    pub message: String,
    pub at: String,
}

impl From<&Rejection> for RejectionView {
    fn from(r: &Rejection) -> Self {
        RejectionView {
            project: r.project.clone(),
            revision: r.revision,
            reason: r.reason.as_str(),
            message: r.message.clone(),
            at: format_rfc3339(r.at),
        }
    }
}

/// The answer of `POST /admin/refresh`.
#[derive(Debug, Serialize)]
pub struct RefreshView<'a> {
    pub result: &'static str,
    pub revision_before: Option<Position>,
    pub revision_after: Option<Position>,
    pub changed: usize,
    pub rejected: Vec<RejectionView>,
    pub error: Option<&'a str>,
}

impl<'a> From<&'a RefreshOutcome> for RefreshView<'a> {
    fn from(o: &'a RefreshOutcome) -> Self {
        RefreshView {
            result: o.result.as_str(),
            revision_before: o.revision_before,
            revision_after: o.revision_after,
            changed: o.changed,
            rejected: o.rejected.iter().map(RejectionView::from).collect(),
            error: o.error.as_deref(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ProjectView<'a> {
    pub id: &'a str,
    pub revision: u64,
    pub accepted_at: String,
    pub published_at: Option<&'a str>,
    pub environments: Vec<EnvironmentView<'a>>,
    pub last_rejection: Option<RejectionView>,
    /// `null` for an unsigned document.
    pub signature: Option<SignatureView>,
}

/// What a served document was signed by.
#[derive(Debug, Serialize)]
pub struct SignatureView {
    /// Trusted key ids whose signature verified.
    pub keys: Vec<String>,
    pub signed_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EnvironmentView<'a> {
    pub id: &'a str,
    pub slug: &'a str,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub color: &'a str,
    pub system: bool,
    pub default_publish_target: bool,
    pub production: bool,
    pub gateway_fallback: bool,
    pub position: Option<i64>,
    /// As served now: scheduled changes that are due are merged in.
    pub pointers: Pointers,
    /// Awaiting approval; never served.
    pub pending: &'a [Pending],
    /// Scheduled changes not yet in effect, soonest first.
    pub scheduled: Vec<ScheduledView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ScheduledView<'a> {
    pub at: String,
    pub pointers: &'a BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> ProjectView<'a> {
    /// The view of `project`; `valid` is its document read back
    /// ([`Project::reparse`]).
    pub fn new(
        project: &'a Project,
        valid: &'a ValidProject,
        rejection: Option<&Rejection>,
    ) -> ProjectView<'a> {
        let upcoming = &valid.schedule()[project.applied()..];
        let environments = valid
            .environments()
            .iter()
            .enumerate()
            .map(|(i, doc)| EnvironmentView {
                id: &doc.id,
                slug: &doc.slug,
                name: &doc.name,
                description: doc.description.as_deref(),
                color: &doc.color,
                system: doc.system,
                default_publish_target: doc.default_publish_target,
                production: doc.production,
                gateway_fallback: doc.gateway_fallback,
                position: doc.position,
                pointers: valid.pointers_with(i, project.applied()),
                pending: &doc.pending,
                scheduled: upcoming
                    .iter()
                    .filter(|e| e.environment == i)
                    .map(|e| ScheduledView {
                        at: format_rfc3339(e.at),
                        pointers: &doc.scheduled[e.entry].pointers,
                    })
                    .collect(),
            })
            .collect();
        ProjectView {
            id: project.id(),
            revision: project.revision(),
            accepted_at: format_rfc3339(project.accepted_at()),
            published_at: valid.document().published_at.as_deref(),
            environments,
            last_rejection: rejection.map(RejectionView::from),
            signature: project.signature().map(|s| SignatureView {
                keys: s.keyids.clone(),
                signed_at: format_rfc3339(s.signed_at),
                expires_at: s.expires_at.map(format_rfc3339),
            }),
        }
    }
}
