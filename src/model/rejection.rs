//! Why a document is rejected: the reason vocabulary and the error every
//! check (validation, signatures, size) returns. Its own module so that
//! the checks can share it without importing each other.

/// Why a document was rejected: a short, fixed vocabulary (it is a metric
/// label and an API field, so it never carries request or document data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The element could not be read as a project document at all.
    Malformed,
    InvalidProjectId,
    EnvironmentCount,
    InvalidEnvironmentId,
    DuplicateEnvironmentId,
    InvalidSlug,
    DuplicateSlug,
    /// `prod`/`staging` missing.
    ReservedSlug,
    /// `system: true` on a custom environment, or missing on `prod`/`staging`.
    SystemFlag,
    InvalidName,
    InvalidDescription,
    InvalidColor,
    GatewayFallback,
    PublishTarget,
    InvalidPointer,
    TooManyPointers,
    InvalidSchedule,
    SlugChanged,
    /// No signature where `trust.require_signatures` asks for one (also a
    /// removal that is not a signed tombstone).
    Unsigned,
    /// Signed, but by no key this sidecar trusts.
    UnknownKey,
    /// A trusted key's signature that does not verify, or a payload type
    /// this sidecar does not read.
    BadSignature,
    /// Past `expires_at`, or signed longer ago than `max_signature_age`.
    Expired,
    /// Signed further in the future than `trust.max_clock_skew` allows.
    NotYetValid,
    /// Larger than `source.max_document_bytes`: refused unread.
    TooLarge,
    /// The served revision again with other content, a signed removal at
    /// the served revision, or a re-signed copy not signed after the
    /// served one: a revision means one document (§4).
    RevisionReused,
}

impl Reason {
    pub const ALL: [Reason; 25] = [
        Reason::Malformed,
        Reason::InvalidProjectId,
        Reason::EnvironmentCount,
        Reason::InvalidEnvironmentId,
        Reason::DuplicateEnvironmentId,
        Reason::InvalidSlug,
        Reason::DuplicateSlug,
        Reason::ReservedSlug,
        Reason::SystemFlag,
        Reason::InvalidName,
        Reason::InvalidDescription,
        Reason::InvalidColor,
        Reason::GatewayFallback,
        Reason::PublishTarget,
        Reason::InvalidPointer,
        Reason::TooManyPointers,
        Reason::InvalidSchedule,
        Reason::SlugChanged,
        Reason::Unsigned,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::TooLarge,
        Reason::RevisionReused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::InvalidProjectId => "invalid_project_id",
            Reason::EnvironmentCount => "environment_count",
            Reason::InvalidEnvironmentId => "invalid_environment_id",
            Reason::DuplicateEnvironmentId => "duplicate_environment_id",
            Reason::InvalidSlug => "invalid_slug",
            Reason::DuplicateSlug => "duplicate_slug",
            Reason::ReservedSlug => "reserved_slug",
            Reason::SystemFlag => "system_flag",
            Reason::InvalidName => "invalid_name",
            Reason::InvalidDescription => "invalid_description",
            Reason::InvalidColor => "invalid_color",
            Reason::GatewayFallback => "gateway_fallback",
            Reason::PublishTarget => "default_publish_target",
            Reason::InvalidPointer => "invalid_pointer",
            Reason::TooManyPointers => "too_many_pointers",
            Reason::InvalidSchedule => "invalid_schedule",
            Reason::SlugChanged => "slug_changed",
            Reason::Unsigned => "unsigned",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::TooLarge => "too_large",
            Reason::RevisionReused => "revision_reused",
        }
    }
}

/// A rejected document: the reason code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub reason: Reason,
    pub message: String,
}
