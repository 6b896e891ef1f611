//! The one place where store, view and validation errors become gRPC statuses: what a client
//! may learn (the field and the fix) and what stays in the log (database text).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::apply::{DocumentError, MAX_PROBLEMS};
use crate::domain::ValidationError;
use crate::fleet::view::ViewError;
use crate::store::{ApplyError, StoreError};

/// What a client sees when the store fails: the details are in the log, not on the wire.
pub const INTERNAL_MESSAGE: &str = "internal storage error; see the control plane's log";

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } | StoreError::UnknownService(_) => {
                Status::not_found(e.to_string())
            }
            StoreError::AlreadyExists { .. } | StoreError::RouteConflict { .. } => {
                Status::already_exists(e.to_string())
            }
            StoreError::InUse { .. }
            | StoreError::TooManyKeys { .. }
            | StoreError::TooManyJwtCredentials { .. }
            | StoreError::ClaimConflict { .. } => Status::failed_precondition(e.to_string()),
            StoreError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
            StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "store failure");
                Status::internal(INTERNAL_MESSAGE)
            }
        }
    }
}

impl From<ViewError> for Status {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::UnknownService(_)
            | ViewError::UnknownNode(_)
            | ViewError::UnknownConsumer(_) => Status::not_found(e.to_string()),
        }
    }
}

impl From<DocumentError> for Status {
    /// INVALID_ARGUMENT whose message lists the problems and whose details carry them as
    /// google.rpc.BadRequest field violations, so a client can map each field path back to
    /// where it read the object from (a line of a file). At most [`MAX_PROBLEMS`] violations,
    /// then one without a field that counts the rest, as the message does: the details
    /// travel in a header, so a huge bad file must not make them unbounded.
    fn from(e: DocumentError) -> Self {
        let mut details = ErrorDetails::new();
        for p in e.0.iter().take(MAX_PROBLEMS) {
            details.add_bad_request_violation(p.field.clone(), p.description.clone());
        }
        if e.0.len() > MAX_PROBLEMS {
            let more = e.0.len() - MAX_PROBLEMS;
            details.add_bad_request_violation("", format!("and {more} more problems"));
        }
        Status::with_error_details(Code::InvalidArgument, e.to_string(), details)
    }
}

impl From<ApplyError> for Status {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(e) => e.into(),
            ApplyError::Store(e) => e.into(),
        }
    }
}

impl From<ValidationError> for Status {
    fn from(e: ValidationError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn store_errors_map_to_codes_without_leaking_database_text() {
        let db = StoreError::Database(sqlx::Error::Protocol(
            "disk I/O error in table services".into(),
        ));
        let s = Status::from(db);
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), INTERNAL_MESSAGE);
        assert!(!s.message().contains("services"));

        let corrupt = Status::from(StoreError::Corrupt("service 'x': hosts".into()));
        assert_eq!(
            (corrupt.code(), corrupt.message()),
            (Code::Internal, INTERNAL_MESSAGE)
        );

        let cases = [
            (
                StoreError::TooLarge { size: 5, limit: 4 },
                Code::ResourceExhausted,
                "the config would be 5 bytes, above the limit of 4 bytes that data planes accept \
                 in one message; remove endpoints, services or policies instead",
            ),
            (
                StoreError::NotFound {
                    kind: "service",
                    name: "x".into(),
                },
                Code::NotFound,
                "service 'x' does not exist",
            ),
            (
                StoreError::UnknownService("x".into()),
                Code::NotFound,
                "policy.service: service 'x' does not exist",
            ),
            (
                StoreError::AlreadyExists {
                    kind: "policy",
                    name: "p".into(),
                },
                Code::AlreadyExists,
                "policy 'p' already exists",
            ),
            (
                StoreError::InUse {
                    service: "x".into(),
                    policies: vec!["p1".into(), "p2".into()],
                },
                Code::FailedPrecondition,
                "service 'x' is used by policies 'p1', 'p2'; remove them first (gwctl policy rm ...)",
            ),
            (
                StoreError::ClaimConflict {
                    issuer: "https://idp".into(),
                    claim: "sub".into(),
                    consumer: "alice".into(),
                    id: "j-0123456789ab".into(),
                },
                Code::FailedPrecondition,
                "credential.claim: issuer 'https://idp' names its consumers in claim 'sub' \
                 (credential j-0123456789ab of consumer 'alice'); every credential of one issuer \
                 must name the same claim (use --claim sub)",
            ),
            (
                StoreError::TooManyJwtCredentials {
                    consumer: "alice".into(),
                    limit: 16,
                },
                Code::FailedPrecondition,
                "consumer 'alice' already has 16 JWT credentials; remove one first \
                 (gwctl consumer jwt rm ID)",
            ),
        ];
        for (err, code, msg) in cases {
            let s = Status::from(err);
            assert_eq!((s.code(), s.message()), (code, msg));
        }
    }

    /// `n` problems, one per service.
    fn problems(n: usize) -> DocumentError {
        DocumentError(
            (0..n)
                .map(|i| crate::apply::FieldProblem {
                    field: format!("services[{i}].name"),
                    description: "must not be empty".into(),
                })
                .collect(),
        )
    }

    fn violations(s: &Status) -> Vec<(String, String)> {
        s.get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect()
    }

    #[test]
    fn field_violations_are_capped_like_the_message() {
        let few = Status::from(problems(MAX_PROBLEMS));
        assert_eq!(few.code(), Code::InvalidArgument);
        let listed = violations(&few);
        assert_eq!(listed.len(), MAX_PROBLEMS);
        assert_eq!(
            listed[MAX_PROBLEMS - 1],
            (
                format!("services[{}].name", MAX_PROBLEMS - 1),
                "must not be empty".to_owned()
            )
        );

        // A huge bad file: the first MAX_PROBLEMS, then the rest counted.
        let many = Status::from(problems(100_000));
        let listed = violations(&many);
        assert_eq!(listed.len(), MAX_PROBLEMS + 1);
        assert_eq!(listed[0].0, "services[0].name");
        assert_eq!(
            listed[MAX_PROBLEMS],
            (
                String::new(),
                format!("and {} more problems", 100_000 - MAX_PROBLEMS)
            )
        );
        assert!(many.message().ends_with(&listed[MAX_PROBLEMS].1));
        // Bounded on the wire too: a few kilobytes, not megabytes.
        assert!(many.details().len() < 4096, "{}", many.details().len());
    }
}
