//! Interactive API docs at `GET /docs`: RapiDoc (MIT, vendored in `assets/`, see
//! `assets/ATTRIBUTION.md`) rendering `GET /openapi.json`. Every asset comes from the API itself:
//! the page forbids any other origin (`Content-Security-Policy`) and RapiDoc's web-font loading
//! is off.

use axum::http::{HeaderMap, HeaderValue, StatusCode};

use crate::ApiResponse;
use crate::problem::Problem;

/// RapiDoc 9.3.8's `rapidoc-min.js`, gzip-compressed as the npm package ships it (217 KB; the
/// plain file is 863 KB).
const RAPIDOC_JS_GZ: &[u8] = include_bytes!("../assets/rapidoc-min.js.gz");

/// Only this API's own origin, for scripts, styles, fonts, images and calls.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pixpress API</title>
<script type="module" src="docs/rapidoc-min.js"></script>
</head>
<body>
<rapi-doc spec-url="openapi.json" load-fonts="false" render-style="focused" show-header="false"
  allow-server-selection="false" allow-authentication="true" schema-style="table"
  regular-font="system-ui, sans-serif" mono-font="ui-monospace, monospace"></rapi-doc>
</body>
</html>
"#;

fn with_headers(
    mut response: ApiResponse,
    headers: &[(&'static str, &'static str)],
) -> ApiResponse {
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    response
}

/// `GET /docs`: the page.
pub(crate) async fn page() -> ApiResponse {
    with_headers(
        ApiResponse::new(axum::body::Body::from(PAGE)),
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-content-type-options", "nosniff"),
            ("cache-control", "public, max-age=300"),
        ],
    )
}

/// `true` unless `Accept-Encoding` is sent without `gzip` (or with `gzip;q=0`): without the
/// header any coding is acceptable (RFC 9110 §12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("accept-encoding").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name == "gzip" || name == "*") && !refused
    })
}

/// `GET /docs/rapidoc-min.js`: the script, gzip-coded; `406` for a client that refuses gzip.
pub(crate) async fn script(headers: HeaderMap) -> ApiResponse {
    if !accepts_gzip(&headers) {
        return Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-acceptable",
            "Not acceptable",
            "this script is served gzip-coded only; send Accept-Encoding: gzip",
        )
        .into_response();
    }
    with_headers(
        ApiResponse::new(axum::body::Body::from(RAPIDOC_JS_GZ)),
        &[
            ("content-type", "text/javascript; charset=utf-8"),
            ("content-encoding", "gzip"),
            ("vary", "accept-encoding"),
            ("x-content-type-options", "nosniff"),
            ("cache-control", "public, max-age=86400"),
        ],
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(accept: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = accept {
            headers.insert("accept-encoding", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn gzip_is_acceptable_unless_refused() {
        assert!(accepts_gzip(&headers(None)));
        assert!(accepts_gzip(&headers(Some("gzip, deflate, br"))));
        assert!(accepts_gzip(&headers(Some("*"))));
        assert!(!accepts_gzip(&headers(Some("identity"))));
        assert!(!accepts_gzip(&headers(Some("br, gzip;q=0"))));
    }
}
