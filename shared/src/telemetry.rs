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
