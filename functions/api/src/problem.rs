//! Every HTTP error of the API as `application/problem+json` (RFC 9457). Internal errors log
//! their cause chain and answer with a generic body.

use axum::body::Body;
use axum::http::StatusCode;

use crate::ApiResponse;
use pixpress::domain::input_csv::CsvIssue;
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
        let chain = pixpress::telemetry::error_chain(cause);
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
        let chain = pixpress::telemetry::error_chain(cause);
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
