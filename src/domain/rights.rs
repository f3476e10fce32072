//! The data subject's rights requests (GDPR arts. 15–22): what a resident
//! may ask, the states a request goes through, and the art. 19 notices a
//! change causes. Pure codes; the deadlines are in `service::rights`.

code_enum!(
    /// What a resident asks the DPO for.
    RightsRequestKind {
        Erasure => "erasure",
        Objection => "objection",
        Rectification => "rectification",
        Restriction => "restriction",
        Access => "access",
        Portability => "portability",
        Other => "other",
    }
);

code_enum!(
    /// Where a rights request is: open (received, extended) or closed.
    RightsRequestState {
        Received => "received",
        Extended => "extended",
        Granted => "granted",
        Refused => "refused",
    }
);

impl RightsRequestState {
    /// Still awaiting the DPO's answer.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RightsRequestState::Received | RightsRequestState::Extended
        )
    }
}

code_enum!(
    /// Why a recipient is told about a resident (art. 19).
    NoticeKind {
        Rectification => "rectification",
        Erasure => "erasure",
        Restriction => "restriction",
    }
);

/// What an objection (art. 21) is to: a purpose of the register, or a
/// public-task data source. Both live in one table, keyed by text: a
/// purpose by its id, a source as `source:{id}` (a purpose id has no ':',
/// so the two cannot meet).
#[derive(Clone, Copy, Debug)]
pub enum ObjectionTo<'a> {
    Purpose(&'a super::PurposeId),
    Source(&'a str),
}

impl ObjectionTo<'_> {
    /// The stored key.
    pub fn key(self) -> String {
        match self {
            Self::Purpose(p) => p.to_string(),
            Self::Source(s) => format!("source:{s}"),
        }
    }
}
