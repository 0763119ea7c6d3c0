//! Logging set-up shared by the Lambda entry points.

/// JSON logs on stdout without timestamps (CloudWatch adds them), filtered by `RUST_LOG`
/// (default `info`). Call once, first thing in `main`.
pub fn init_lambda() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .without_time()
        .init();
}

/// `error` and its causes as one line, `outer: inner: root`, for logs and problem details
/// that must name the cause without exposing a `Debug` dump.
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
