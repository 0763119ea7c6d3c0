//! `pixpress demo`: a self-contained run. Serves real photos bundled in the binary (see
//! `cli/assets/demo/ATTRIBUTION.md`) on a loopback port, writes a CSV for them plus one broken
//! URL, runs the pipeline with a local webhook receiver that verifies the Standard Webhooks
//! signature, and reports where the outputs are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use pixpress_app::config::Config;
use pixpress_domain::model::{OutputFormat, Quality};
use pixpress_domain::webhook::WebhookSecret;

use crate::faults::FaultSpec;
use crate::pipeline::{LocalPipeline, PipelineOptions, UploadQuery};
use crate::run::{RunOptions, RunOutcome, run_csv, summary};

/// A bundled photo.
#[derive(Debug, Clone, Copy)]
pub struct DemoPhoto {
    /// File name (also the URL path segment).
    pub name: &'static str,
    /// Product name used in the demo CSV.
    pub product: &'static str,
    /// MIME type served.
    pub content_type: &'static str,
    /// The file.
    pub bytes: &'static [u8],
}

macro_rules! photo {
    ($name:literal, $product:literal, $ct:literal) => {
        DemoPhoto {
            name: $name,
            product: $product,
            content_type: $ct,
            bytes: include_bytes!(concat!("../assets/demo/", $name)),
        }
    };
}

/// The bundled photos (1000×1000 to 1200×1600 JPEGs, progressive and baseline, and a WebP).
pub const PHOTOS: [DemoPhoto; 6] = [
    photo!(
        "p01_dragonfly_1000sq.jpg",
        "Dragonfly art print",
        "image/jpeg"
    ),
    photo!(
        "p02_ladybird_1000sq.jpg",
        "Ladybird art print",
        "image/jpeg"
    ),
    photo!("p03_cups_1000sq.jpg", "Colourful cups", "image/jpeg"),
    photo!("p06_friends_1200x1600.jpg", "Friends poster", "image/jpeg"),
    photo!("j23_rocket_0.27mp.jpg", "Rocket model", "image/jpeg"),
    photo!("p08_path_1000sq.webp", "Garden path canvas", "image/webp"),
];

async fn photo(UrlPath(name): UrlPath<String>) -> impl IntoResponse {
    match PHOTOS.iter().find(|p| p.name == name) {
        Some(p) => ([(header::CONTENT_TYPE, p.content_type)], p.bytes).into_response(),
        None => (StatusCode::NOT_FOUND, "no such photo").into_response(),
    }
}

/// A router serving the bundled photos under `/photos/{name}`; anything else is 404.
pub fn photo_router() -> Router {
    Router::new().route("/photos/{name}", get(photo))
}

/// Serves `router` on an ephemeral loopback port until the process ends.
///
/// # Errors
/// When no loopback port can be bound.
pub async fn serve_on_loopback(router: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "loopback server stopped");
        }
    });
    Ok(addr)
}

/// One delivery received by a [`WebhookReceiver`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id` header.
    pub id: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Signature check result.
    pub verified: Result<(), String>,
}

/// A webhook receiver on loopback that verifies every delivery's signature.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Deliveries so far.
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl WebhookReceiver {
    /// Starts a receiver at `http://127.0.0.1:<port>/webhook` that answers 204.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(secret: WebhookSecret) -> anyhow::Result<Self> {
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let state = (secret, deliveries.clone());
        let router = Router::new()
            .route("/webhook", post(receive))
            .with_state(state);
        let addr = serve_on_loopback(router).await?;
        Ok(Self { addr, deliveries })
    }

    /// The URL to register.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// A copy of the deliveries so far.
    #[must_use]
    pub fn received(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}

type ReceiverState = (WebhookSecret, Arc<Mutex<Vec<Delivery>>>);

async fn receive(
    State((secret, deliveries)): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let verified = secret.verify(
        &id,
        &header("webhook-timestamp"),
        &header("webhook-signature"),
        &body,
        chrono::Utc::now(),
    );
    if let Ok(mut list) = deliveries.lock() {
        list.push(Delivery {
            id,
            body: body.to_vec(),
            verified,
        });
    }
    StatusCode::NO_CONTENT
}

/// The demo CSV for photos served at `base`: three products, one with a broken URL.
#[must_use]
pub fn demo_csv(base: &str) -> String {
    let url = |i: usize| format!("{base}/photos/{}", PHOTOS[i].name);
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    csv.push_str(&format!(
        "1.,{},\"{}, {}\"\n",
        PHOTOS[0].product,
        url(0),
        url(1)
    ));
    csv.push_str(&format!(
        "2.,{},\"{}, {base}/photos/discontinued.jpg\"\n",
        PHOTOS[2].product,
        url(2)
    ));
    csv.push_str(&format!(
        "3.,{},\"{}, {}, {}\"\n",
        PHOTOS[3].product,
        url(3),
        url(4),
        url(5)
    ));
    csv
}

/// Runs the demo into `out`; returns the report to print.
///
/// # Errors
/// When a server cannot start or the pipeline fails.
pub async fn run_demo(
    out: &Path,
    format: OutputFormat,
    quality: Option<Quality>,
    faults: Option<FaultSpec>,
) -> anyhow::Result<String> {
    let photos = serve_on_loopback(photo_router()).await?;
    let secret = WebhookSecret::from_bytes(uuid::Uuid::new_v4().as_bytes());
    let receiver = WebhookReceiver::start(secret.clone()).await?;
    let mut config = Config::from_env()?;
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.webhook_secret = Some(secret);
    let base = format!("http://{photos}");
    let csv = demo_csv(&base);
    tokio::fs::create_dir_all(out).await?;
    let csv_path: PathBuf = out.join("input.csv");
    tokio::fs::write(&csv_path, &csv).await?;
    let mut pipeline_options = PipelineOptions::new(out);
    pipeline_options.faults = faults;
    let pipeline = LocalPipeline::new(&config, pipeline_options)?;
    let options = RunOptions {
        upload: UploadQuery {
            webhook_url: Some(receiver.url()),
            format: Some(format),
            quality,
            ..UploadQuery::default()
        },
        progress: true,
        ..RunOptions::default()
    };
    let report = match run_csv(&pipeline, csv.into_bytes(), &options).await? {
        RunOutcome::Finished(report) => report,
        RunOutcome::Rejected { status, problem } => {
            anyhow::bail!("demo CSV rejected ({status}): {problem}")
        }
    };
    let mut text = format!(
        "pixpress demo: {} bundled photos served at {base}\n  input CSV: {}\n",
        PHOTOS.len(),
        csv_path.display()
    );
    text.push_str(&summary(&report));
    for delivery in receiver.received() {
        text.push_str(&format!(
            "  webhook received: id {} — signature {}\n",
            delivery.id,
            match &delivery.verified {
                Ok(()) => "verified".to_owned(),
                Err(e) => format!("INVALID: {e}"),
            }
        ));
    }
    if let Some(injected) = pipeline.faults() {
        eprintln!("faults injected: {}", injected.counts());
    }
    if let Some(path) = &report.output_csv {
        text.push_str("\noutput.csv:\n");
        text.push_str(&tokio::fs::read_to_string(path).await.unwrap_or_default());
    }
    Ok(text)
}
