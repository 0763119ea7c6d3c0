//! Logging set-up shared by the Lambda entry points.

pub use pixpress_domain::text::error_chain;
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

/// The `level` every EMF document carries: the function's own application log level
/// (`AWS_LAMBDA_LOG_LEVEL`, one of `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`, `FATAL`), so
/// Lambda's log-level filtering always keeps it. A JSON line without `level` counts as `INFO`
/// ("Log-level filtering", AWS Lambda Developer Guide), and `LogLevel=WARN` would drop every
/// metric.
#[must_use]
pub fn emf_level(lookup: impl Fn(&str) -> Option<String>) -> &'static str {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    lookup("AWS_LAMBDA_LOG_LEVEL")
        .and_then(|value| {
            let value = value.trim().to_ascii_uppercase();
            LEVELS.into_iter().find(|level| *level == value)
        })
        .unwrap_or("INFO")
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

/// The span of work on one request: every log line inside it carries `request_id` (JSON logs
/// include the current span). At error level, so it exists whatever the log level.
#[must_use]
pub fn request_span(request_id: &str) -> tracing::Span {
    tracing::error_span!("request", request_id = %request_id)
}

/// The span of one queue message: its SQS `message_id`, and `request_id` (and `row_index` for a
/// row job) read from its JSON body — row, chunk and webhook jobs all name their request — so every log line about
/// the message carries them; no fields for a body that is not JSON.
#[must_use]
pub fn message_span(message_id: &str, body: &str) -> tracing::Span {
    #[derive(serde::Deserialize)]
    struct Ids {
        request_id: Option<String>,
        row_index: Option<u32>,
    }
    let span = tracing::error_span!(
        "message",
        message_id,
        request_id = tracing::field::Empty,
        row_index = tracing::field::Empty
    );
    if let Ok(ids) = serde_json::from_str::<Ids>(body) {
        if let Some(id) = &ids.request_id {
            span.record("request_id", id.as_str());
        }
        if let Some(index) = ids.row_index {
            span.record("row_index", index);
        }
    }
    span
}

/// CloudWatch namespace of pixpress's metrics.
pub const METRICS_NAMESPACE: &str = "pixpress";

/// The invocation's metrics, written as CloudWatch Embedded Metric Format (one JSON document
/// per invocation on stdout, which CloudWatch Logs turns into metrics without any API call).
#[derive(Clone, Copy)]
pub struct Metrics(Option<&'static metrics_cloudwatch_embedded::Collector>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Metrics").field(&self.0.is_some()).finish()
    }
}

impl Metrics {
    /// Installs the EMF recorder for the `metrics` facade, every metric with the dimension
    /// `function`. Call once in `main`; without it (the CLI, tests) metrics cost nothing.
    #[must_use]
    pub fn init(function: &'static str) -> Self {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(METRICS_NAMESPACE)
            .with_dimension("function", function)
            .init();
        match &collector {
            Ok(collector) => {
                collector.set_property("level", emf_level(|name| std::env::var(name).ok()));
            }
            Err(e) => tracing::warn!(error = %e, "metrics are off"),
        }
        Self(collector.ok())
    }

    /// Writes what this invocation recorded to `out` (stdout in a function) and starts over.
    pub fn flush_to(self, out: impl std::io::Write) {
        if let Some(collector) = self.0
            && let Err(e) = collector.flush(out)
        {
            tracing::warn!(error = %e, "metrics could not be written");
        }
    }

    /// [`Metrics::flush_to`] stdout.
    pub fn flush(self) {
        self.flush_to(std::io::stdout());
    }
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

    /// EMF documents survive every application log level: they carry the configured one.
    #[test]
    fn metric_documents_carry_the_functions_own_log_level() {
        let level = |value: Option<&str>| {
            emf_level(|name| {
                (name == "AWS_LAMBDA_LOG_LEVEL")
                    .then_some(value)
                    .flatten()
                    .map(str::to_owned)
            })
        };
        assert_eq!(level(Some("WARN")), "WARN");
        assert_eq!(level(Some("error")), "ERROR");
        assert_eq!(level(Some("FATAL")), "FATAL");
        assert_eq!(level(None), "INFO");
        assert_eq!(level(Some("loud")), "INFO");
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

    /// One CloudWatch EMF document per flush: the namespace, the `function` dimension, and the
    /// values recorded since the last flush.
    #[test]
    fn metrics_are_written_as_one_embedded_metric_format_document_per_flush() {
        let metrics = Metrics::init("unit-test");
        metrics::counter!("images_ok").increment(2);
        metrics::counter!("bytes_in").increment(1_000);
        let mut out = Vec::new();
        metrics.flush_to(&mut out);
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let aws = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(aws["Namespace"], METRICS_NAMESPACE);
        assert_eq!(aws["Dimensions"][0][0], "function");
        assert_eq!(doc["function"], "unit-test");
        assert_eq!(doc["images_ok"], 2);
        assert_eq!(doc["bytes_in"], 1_000);
        // Without a configured level, Lambda's default: INFO.
        assert_eq!(doc["level"], "INFO");
        assert!(doc["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
}
