//! The API's OpenAPI 3.1 description, generated from the route handlers and the document
//! types ([utoipa](https://docs.rs/utoipa)), served at `GET /openapi.json` without a key.

use axum::http::{HeaderValue, StatusCode};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{ApiResponse, json_response};

/// The fields of a multipart upload (`POST /uploads` as `multipart/form-data`).
#[derive(Debug, utoipa::ToSchema)]
pub struct UploadForm {
    /// The CSV file.
    #[schema(format = Binary, content_media_type = "text/csv")]
    pub file: String,
    /// Where the signed completion event is POSTed: an absolute http or https URL of a DNS
    /// host name, as the pattern gives it (the API also refuses private and special-purpose
    /// addresses and ports other than 80 and 443).
    #[schema(
        pattern = "^$|^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?([/?#][^\\s]*)?$"
    )]
    pub webhook_url: Option<String>,
    /// Output format: `jpeg` (default), `webp` or `avif`.
    #[schema(pattern = "^(jpeg|webp|avif)$")]
    pub format: Option<String>,
    /// Encoder quality 1–100 on the format's scale, or `auto:<score>` (10–95, SSIMULACRA2).
    #[schema(pattern = "^(100|[1-9][0-9]?|auto:([1-8][0-9]|9[0-5]))$")]
    pub quality: Option<String>,
    /// Longest side of the output images, in pixels (1–65535).
    #[schema(minimum = 1, maximum = 65535)]
    pub max_dimension: Option<u32>,
    /// `false` leaves images unscored at a fixed quality; default `true`.
    pub score: Option<bool>,
}

/// The description: every route with its parameters, bodies and every status it answers.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "pixpress",
        description = "Bulk image compression from a product CSV: submit a CSV of product image URLs, poll the request, download the output CSV with the compressed images' URLs in the same order. Errors are RFC 9457 problem details. Every route but this description needs `Authorization: Bearer <API key>`.",
    ),
    paths(
        crate::uploads,
        crate::upload_urls,
        crate::request_status,
        crate::output_csv,
        crate::redeliver,
        crate::cancel,
        crate::retry,
    ),
    modifiers(&BearerKey),
    security(("api_key" = [])),
    tags(
        (name = "requests", description = "Submit CSVs and follow their requests"),
        (name = "webhooks", description = "Completion events (Standard Webhooks)"),
    ),
)]
pub struct ApiDoc;

/// Adds the `api_key` bearer scheme every route uses.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pk_<key id>_<secret>")
                    .description(Some("An API key from `pixpress keys create`"))
                    .build(),
            ),
        );
    }
}

/// The description as JSON.
#[must_use]
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// `GET /openapi.json`.
pub(crate) async fn openapi_json() -> ApiResponse {
    let mut response = json_response(StatusCode::OK, &document());
    response.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
