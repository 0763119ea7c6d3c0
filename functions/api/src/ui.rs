//! The web page at `GET /`: enter an API key, drop a CSV, follow the request, compare each
//! product's images before and after, download the output CSV, reopen recent requests. Plain
//! HTML, CSS and JavaScript in `assets/ui/`, served by the API (no build step, no CDN); it calls
//! the routes of this API with the key from the tab's session storage.

use axum::http::HeaderValue;

use crate::ApiResponse;

const INDEX_HTML: &str = include_str!("../assets/ui/index.html");
const APP_JS: &str = include_str!("../assets/ui/app.js");
const APP_CSS: &str = include_str!("../assets/ui/app.css");

/// Scripts and styles from this API only; images from anywhere (the products' own image hosts
/// and the output bucket); calls to this API and to https origins (a presigned upload URL, the
/// presigned output CSV link).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data: blob:; connect-src 'self' https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> ApiResponse {
    let mut response = ApiResponse::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`.
pub(crate) async fn index() -> ApiResponse {
    let mut response = asset(INDEX_HTML, "text/html; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /ui/app.js`.
pub(crate) async fn script() -> ApiResponse {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /ui/app.css`.
pub(crate) async fn stylesheet() -> ApiResponse {
    asset(APP_CSS, "text/css; charset=utf-8")
}
