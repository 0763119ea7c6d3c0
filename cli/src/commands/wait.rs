//! Waiting for a request with a progress view, shared by `submit --wait` and `retry --wait`.

use std::path::PathBuf;
use std::process::ExitCode;

use pixpress_cli::client::{ApiClient, exit_code, progress_line, status_text};

/// Prints a status `document`: the whole JSON with `json`, else the text `pixpress status`
/// shows.
///
/// # Errors
/// When the document cannot be written as JSON.
pub(crate) fn print_status(document: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(document)?);
    } else {
        print!("{}", status_text(document));
    }
    Ok(())
}

/// `--wait`, `--out` and `--json` of the commands that start a request (`submit`, `retry`).
#[derive(Debug, clap::Args)]
pub(crate) struct WaitArgs {
    /// Wait until the request is done, showing progress, then download its output.csv.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Where `--wait` writes output.csv.
    #[arg(long, default_value = ".")]
    pub(crate) out: PathBuf,
    /// Print JSON (the acceptance, or with --wait the whole final status document).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Waits for request `id` with a progress view, downloads its output CSV into `out`, prints its
/// status (JSON with `json`) and returns the exit code of its final status.
pub(crate) async fn wait_and_download(
    client: &ApiClient,
    id: &str,
    out: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut progress = ProgressView::new();
    let summary = client.wait(id, |document| progress.show(document)).await?;
    progress.finish();
    let status = summary["status"].as_str().unwrap_or_default().to_owned();
    if summary.get("output_csv_url").is_some() {
        let path = out.join("output.csv");
        client.download(id, &path).await?;
        eprintln!("output CSV: {}", path.display());
    }
    let document = client.status_document(id).await?;
    print_status(&document, json)?;
    Ok(ExitCode::from(exit_code(&status)))
}

/// Progress of `submit --wait`: a bar (rows, images, bytes saved, rate, ETA) on a terminal,
/// plain lines on stderr when not on one.
struct ProgressView {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressView {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} images · {per_sec} · ETA {eta} · {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    fn show(&mut self, document: &serde_json::Value) {
        let p = pixpress_cli::client::Progress::of(document);
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.images_total);
                bar.set_position(p.images_done());
                bar.set_message(format!(
                    "rows {}/{} · {} failed · {} saved",
                    p.rows_done,
                    p.rows_total,
                    p.images_failed,
                    pixpress_cli::client::human_bytes(p.bytes_saved())
                ));
            }
            None => eprintln!("{}", progress_line(document)),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
