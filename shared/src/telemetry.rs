//! Logging set-up shared by the Lambda entry points.

use tracing_subscriber::filter::LevelFilter;

/// The log level of a function: `AWS_LAMBDA_LOG_LEVEL` (set by Lambda from the function's
/// `LoggingConfig.ApplicationLogLevel` when the log format is JSON), else `RUST_LOG` when it is
/// a plain level, else `info`.
#[must_use]
pub fn lambda_log_level(lookup: impl Fn(&str) -> Option<String>) -> LevelFilter {
    ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"]
        .iter()
        .filter_map(|name| lookup(name))
        .find_map(|value| match value.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(LevelFilter::TRACE),
            "debug" => Some(LevelFilter::DEBUG),
            "info" => Some(LevelFilter::INFO),
            "warn" => Some(LevelFilter::WARN),
            "error" | "fatal" => Some(LevelFilter::ERROR),
            "off" => Some(LevelFilter::OFF),
            _ => None,
        })
        .unwrap_or(LevelFilter::INFO)
}

/// How a function writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line with `timestamp` (RFC 3339, UTC) and `level`: what Lambda's
    /// JSON log format reads to file and filter a line.
    Json,
    /// Plain text lines.
    Text,
}

/// The log format of a function: `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`, set by Lambda from
/// the function's `LoggingConfig.LogFormat`), JSON when unset.
#[must_use]
pub fn lambda_log_format(lookup: impl Fn(&str) -> Option<String>) -> LogFormat {
    match lookup("AWS_LAMBDA_LOG_FORMAT") {
        Some(v) if v.trim().eq_ignore_ascii_case("text") => LogFormat::Text,
        _ => LogFormat::Json,
    }
}

/// Logs on stdout in [`lambda_log_format`] at [`lambda_log_level`], every line with an RFC 3339
/// timestamp. A plain level filter, not `EnvFilter`, keeps the regex engine out of the
/// bootstraps. Call once, first thing in `main`.
pub fn init_lambda() {
    let env = |name: &str| std::env::var(name).ok();
    let level = lambda_log_level(env);
    match lambda_log_format(env) {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_max_level(level)
            .with_current_span(true)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .init(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_log_level_follows_lambdas_logging_config() {
        let level = |pairs: &[(&str, &str)]| {
            lambda_log_level(|name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert_eq!(level(&[]), LevelFilter::INFO);
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]),
            LevelFilter::DEBUG
        );
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("RUST_LOG", "trace")]),
            LevelFilter::WARN
        );
        assert_eq!(level(&[("RUST_LOG", "error")]), LevelFilter::ERROR);
        assert_eq!(level(&[("RUST_LOG", "pixpress=debug")]), LevelFilter::INFO);
    }

    #[test]
    fn the_log_format_follows_lambdas_logging_config() {
        let format = |value: Option<&str>| {
            lambda_log_format(|name| {
                (name == "AWS_LAMBDA_LOG_FORMAT")
                    .then_some(value)
                    .flatten()
                    .map(str::to_owned)
            })
        };
        assert_eq!(format(None), LogFormat::Json);
        assert_eq!(format(Some("JSON")), LogFormat::Json);
        assert_eq!(format(Some("Text")), LogFormat::Text);
    }
}
