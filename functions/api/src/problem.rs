//! Every HTTP error of the API as `application/problem+json` (RFC 9457). Internal errors log
//! their cause chain and answer with a generic body.

use axum::body::Body;
use axum::http::StatusCode;

use crate::ApiResponse;
use pixpress_app::ingest::{IngestError, RetryError};
use pixpress_domain::input_csv::CsvIssue;

use serde::Serialize;

/// Media type of problem details (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem details document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Problem type URI (`urn:pixpress:problem:<slug>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What happened in this occurrence.
    pub detail: String,
    /// CSV issues, for `invalid-csv`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<CsvIssue>,
    /// Issues found beyond those listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub errors_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Problem {
    /// A problem of type `slug` with `status`, `title` and `detail`.
    #[must_use]
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            problem_type: format!("urn:pixpress:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            errors_omitted: 0,
        }
    }

    /// 404 for an unknown request — byte-identical whether the id is missing or another
    /// tenant's.
    #[must_use]
    pub fn request_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "request-not-found",
            "Request not found",
            "no request with this id exists",
        )
    }

    /// 401 for a missing, malformed, unknown, wrong or revoked API key: one answer for all,
    /// with `WWW-Authenticate: Bearer` (RFC 6750 §3).
    #[must_use]
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send a valid API key as `Authorization: Bearer <key>`",
        )
    }

    /// 500 with a generic body; the cause is logged, never sent.
    #[must_use]
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let chain = pixpress_app::telemetry::error_chain(cause);
        tracing::error!(error = %chain, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be processed; try again later",
        )
    }

    /// 503 saying what could not be done (`detail`); the backend `cause` is logged, never sent.
    #[must_use]
    pub fn unavailable(cause: &(dyn std::error::Error + 'static), detail: &str) -> Self {
        let chain = pixpress_app::telemetry::error_chain(cause);
        tracing::error!(error = %chain, "backend unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            format!("{detail}; try again later"),
        )
    }

    /// The HTTP response.
    #[must_use]
    pub fn into_response(self) -> ApiResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&self).unwrap_or_default();
        let mut response = ApiResponse::new(Body::from(body));
        *response.status_mut() = status;
        if let Ok(value) = PROBLEM_JSON.parse() {
            response.headers_mut().insert("content-type", value);
        }
        if status == StatusCode::UNAUTHORIZED
            && let Ok(value) = r#"Bearer realm="pixpress""#.parse()
        {
            response.headers_mut().insert("www-authenticate", value);
        }
        response
    }
}

/// Every way an ingest fails, as the client sees it: the CSV's issues (400 `invalid-csv`, each
/// with row and column), a refused webhook URL (400), a reused idempotency key (422), or a
/// backend that could not be reached (503, cause logged).
impl From<IngestError> for Problem {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::InvalidCsv(rejection) => {
                let mut problem = Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-csv",
                    "Invalid CSV",
                    format!(
                        "the CSV has {} error(s); nothing was processed — fix them and upload again",
                        rejection.issues.len() + rejection.omitted
                    ),
                );
                problem.errors = rejection.issues;
                problem.errors_omitted = rejection.omitted;
                problem
            }
            IngestError::InvalidWebhookUrl(detail) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid-webhook-url",
                "Invalid webhook URL",
                detail,
            ),
            IngestError::IdempotencyKeyReused(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used for a different upload; send the same upload to get its request, or use a new key",
            ),
            e @ (IngestError::EnqueueFailed(_) | IngestError::Storage(_)) => {
                Self::unavailable(&e, "the upload could not be recorded")
            }
        }
    }
}

/// Every way `POST /requests/{id}/retry` fails: a running request, one with nothing to retry or
/// one whose rows were never all read (409 `cannot-retry`), too many rows (413 `retry-too-large`), a backend (503).
impl From<RetryError> for Problem {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::NotFinished(_)
            | RetryError::NothingToRetry
            | RetryError::RowsMissing { .. } => Self::new(
                StatusCode::CONFLICT,
                "cannot-retry",
                "Cannot retry",
                e.to_string(),
            ),
            RetryError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "retry-too-large",
                "Too large to retry",
                format!(
                    "{e}; upload a CSV of the failed rows instead (the status lists them: GET /requests/{{id}})"
                ),
            ),
            RetryError::EnqueueFailed(_) | RetryError::Storage(_) => {
                Self::unavailable(&e, "the retry could not be started")
            }
        }
    }
}
