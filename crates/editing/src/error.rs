//! What can go wrong: [`RecordsError`], a store's answer when it cannot do what
//! was asked, and [`Denied`], the one wire reply each refusal becomes.

use std::collections::BTreeMap;

use phx_runtime::Payload;
use serde_json::{json, Value};

use crate::record::Record;

/// Validation errors: field name → messages, sent as `{"errors": {...}}`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Why a store could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordsError {
    /// The database did not answer in time or is unreachable.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The stored version moved on since the one the write was made against;
    /// the stored record is given so that the client can reload or overwrite.
    #[error("the record changed since version {expected}")]
    Conflict {
        /// The version the write was made against.
        expected: i64,
        /// The record as stored now.
        stored: Box<Record>,
    },
    /// The fields are not acceptable.
    #[error("invalid record")]
    Invalid(FieldErrors),
    /// No record with this id.
    #[error("no such record")]
    NotFound,
    /// The kind holds as many records as it may.
    #[error("the kind holds {0} records, its limit")]
    Full(u64),
}

impl RecordsError {
    /// A database error: unavailable when the database cannot be reached,
    /// otherwise logged and also answered `unavailable` (the client can do
    /// nothing about it).
    pub(crate) fn from_db(err: sqlx::Error) -> RecordsError {
        match &err {
            sqlx::Error::RowNotFound => RecordsError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => RecordsError::Invalid(
                BTreeMap::from([("id".to_owned(), vec!["has already been taken".to_owned()])]),
            ),
            _ => RecordsError::Unavailable(err.to_string()),
        }
    }
}

/// Why an editing request is refused; each is one wire reply (`error` status).
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// The kind or record does not exist: `{"reason": "not_found"}`.
    NotFound,
    /// Only the owner may do this: `{"reason": "not_owner"}`.
    NotOwner,
    /// Validation failed: `{"errors": {...}}`.
    Invalid(FieldErrors),
    /// The request is malformed: `{"reason": "bad_request"}`.
    BadRequest,
    /// The event is not part of the contract: `{"reason": "unknown_event"}`.
    UnknownEvent,
    /// The record changed since the form started from it:
    /// `{"reason": "conflict", "record": <stored>}`.
    Conflict(Box<Record>),
    /// The database is unreachable: `{"reason": "unavailable"}`.
    Unavailable,
    /// A record larger than allowed: `{"reason": "too_large"}`.
    TooLarge,
    /// The kind is full: `{"reason": "too_many_records"}`.
    TooMany,
}

impl From<RecordsError> for Denied {
    fn from(err: RecordsError) -> Denied {
        match err {
            RecordsError::Unavailable(why) => {
                tracing::warn!(%why, "editing request answered unavailable");
                Denied::Unavailable
            }
            RecordsError::Conflict { stored, .. } => Denied::Conflict(stored),
            RecordsError::Invalid(errors) => Denied::Invalid(errors),
            RecordsError::NotFound => Denied::NotFound,
            RecordsError::Full(_) => Denied::TooMany,
        }
    }
}

impl Denied {
    /// Every reason, in the order of [`Denied::index`].
    pub const REASONS: [&'static str; 9] = [
        "not_found",
        "not_owner",
        "invalid",
        "bad_request",
        "unknown_event",
        "conflict",
        "unavailable",
        "too_large",
        "too_many_records",
    ];

    /// The reply payload.
    ///
    /// ```
    /// use phx_editing::Denied;
    /// assert_eq!(Denied::Unavailable.to_payload().as_json(), Some(r#"{"reason":"unavailable"}"#));
    /// ```
    pub fn to_payload(&self) -> Payload {
        Payload::from(self.to_value())
    }

    fn to_value(&self) -> Value {
        match self {
            Denied::Invalid(errors) => json!({"errors": errors}),
            Denied::Conflict(record) => json!({"reason": "conflict", "record": record}),
            other => json!({"reason": other.reason()}),
        }
    }

    /// A short name for logs and metrics (one of [`Denied::REASONS`]).
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }

    /// The reason's position in [`Denied::REASONS`].
    pub fn index(&self) -> usize {
        match self {
            Denied::NotFound => 0,
            Denied::NotOwner => 1,
            Denied::Invalid(_) => 2,
            Denied::BadRequest => 3,
            Denied::UnknownEvent => 4,
            Denied::Conflict(_) => 5,
            Denied::Unavailable => 6,
            Denied::TooLarge => 7,
            Denied::TooMany => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(v: Value) -> Record {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_store_error_is_one_wire_reply() {
        let stored = record(json!({"id": "1", "title": "t", "version": 3}));
        let cases = [
            (
                RecordsError::Unavailable("timeout".into()),
                json!({"reason": "unavailable"}),
            ),
            (
                RecordsError::Conflict {
                    expected: 2,
                    stored: Box::new(stored.clone()),
                },
                json!({"reason": "conflict", "record": stored}),
            ),
            (
                RecordsError::Invalid(FieldErrors::from([(
                    "title".into(),
                    vec!["can't be blank".into()],
                )])),
                json!({"errors": {"title": ["can't be blank"]}}),
            ),
            (RecordsError::NotFound, json!({"reason": "not_found"})),
            (
                RecordsError::Full(10),
                json!({"reason": "too_many_records"}),
            ),
        ];
        for (err, wire) in cases {
            let denied = Denied::from(err.clone());
            assert_eq!(denied.to_value(), wire, "{err:?}");
            assert_eq!(Denied::REASONS[denied.index()], denied.reason());
        }
        assert_eq!(Denied::TooLarge.to_value(), json!({"reason": "too_large"}));
    }

    #[test]
    fn database_errors_map_to_unavailable_or_not_found() {
        assert_eq!(
            RecordsError::from_db(sqlx::Error::RowNotFound),
            RecordsError::NotFound
        );
        assert!(matches!(
            RecordsError::from_db(sqlx::Error::PoolTimedOut),
            RecordsError::Unavailable(_)
        ));
        assert!(matches!(
            RecordsError::from_db(sqlx::Error::Io(std::io::Error::other("refused"))),
            RecordsError::Unavailable(_)
        ));
    }
}
