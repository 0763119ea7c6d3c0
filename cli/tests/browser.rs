//! The web page (`GET /`) in headless Chromium, driven through chromedriver (WebDriver) like a
//! person would use it, against `pixpress serve`'s router on loopback: enter the API key, choose
//! a CSV, follow the request to its end, see every product's images before and after with
//! their sizes, download the output CSV, reopen the request from the recent list. A screenshot
//! is saved as `<target>/tmp/web-page.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test.sh` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use pixpress_cli::demo::{PHOTOS, photo_router, serve_on_loopback};
use serde_json::{Value, json};
use support::{serve_with_a_key, temp_dir};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a loopback port, stopped (by its process id) when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install Debian's chromium and chromium-driver packages (scripts/test.sh does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }

    async fn browser(&self, downloads: &Path) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1400", "--no-first-run", "--no-default-browser-check"],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Evaluates `script` until it returns `true` (or panics after `timeout` with `what`).
async fn wait_until(client: &Client, script: &str, timeout: Duration, what: &str) {
    let started = Instant::now();
    loop {
        let value = client.execute(script, Vec::new()).await.unwrap();
        if value == Value::Bool(true) {
            return;
        }
        if started.elapsed() > timeout {
            let status = client
                .execute("return document.body.innerText", Vec::new())
                .await
                .unwrap();
            panic!(
                "timed out waiting for {what}; the page shows:\n{}",
                status.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_takes_a_csv_through_a_whole_request_and_shows_every_image() {
    let (api, key, _pump) = serve_with_a_key().await;
    let origin = serve_on_loopback(photo_router()).await.unwrap();
    let work = temp_dir("browser");
    let downloads = work.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    // Six products, two images each; one image is gone from its origin.
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\r\n");
    for i in 0..6 {
        let second = if i == 2 {
            format!("http://{origin}/photos/discontinued.jpg")
        } else {
            format!(
                "http://{origin}/photos/{}",
                PHOTOS[(i + 1) % PHOTOS.len()].name
            )
        };
        csv.push_str(&format!(
            "{},{},\"http://{origin}/photos/{}, {second}\"\r\n",
            i + 1,
            PHOTOS[i].product,
            PHOTOS[i].name
        ));
    }
    let input = work.join("catalogue.csv");
    std::fs::write(&input, &csv).unwrap();

    let driver = Driver::start().await;
    let client = driver.browser(&downloads).await;
    client.goto(&format!("{api}/")).await.unwrap();

    // The key, for this tab.
    assert!(text(&client, "#key-state").await.contains("No key set"));
    client
        .find(Locator::Id("api-key"))
        .await
        .unwrap()
        .send_keys(&key)
        .await
        .unwrap();
    client
        .find(Locator::Id("save-key"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&client, "#key-state").await.contains("A key is set"));

    // The CSV, then Compress.
    client
        .find(Locator::Id("file"))
        .await
        .unwrap()
        .send_keys(&input.display().to_string())
        .await
        .unwrap();
    assert!(
        text(&client, "#drop-text")
            .await
            .starts_with("catalogue.csv")
    );
    // The network drops the first upload: the page sends it again, under the same
    // Idempotency-Key.
    client
        .execute(
            r#"
            window.uploadKeys = [];
            const realFetch = window.fetch;
            window.fetch = async (url, init) => {
              if (String(url).includes("/uploads") && init && init.method === "POST") {
                window.uploadKeys.push(init.headers["idempotency-key"]);
                if (window.uploadKeys.length === 1) throw new TypeError("network error (simulated)");
              }
              return realFetch(url, init);
            };
            "#,
            vec![],
        )
        .await
        .unwrap();
    client
        .find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Live progress to the end, then every product with its images.
    wait_until(
        &client,
        "return document.getElementById('status').textContent === 'COMPLETED_WITH_ERRORS'",
        Duration::from_secs(120),
        "the request to finish",
    )
    .await;
    let keys = client
        .execute("return window.uploadKeys", vec![])
        .await
        .unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "one upload, sent twice: {keys:?}");
    assert!(keys[0].as_str().is_some_and(|k| !k.is_empty()), "{keys:?}");
    assert_eq!(
        keys[0], keys[1],
        "the retry carries the first attempt's key"
    );
    wait_until(
        &client,
        "return document.querySelectorAll('#products tbody tr').length === 6",
        Duration::from_secs(20),
        "six products",
    )
    .await;
    let request_id = text(&client, "#request-id").await;
    assert!(
        text(&client, "#counts")
            .await
            .contains("rows 6/6 · images 12/12 (1 failed)")
    );
    assert!(text(&client, "#counts").await.contains("saved"));
    let figures = client
        .execute(
            "return [document.querySelectorAll('figure.image.ok').length, document.querySelectorAll('figure.image.failed').length]",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(figures, json!([11, 1]));
    let failed = text(&client, "tr[data-row='3'] figure.failed figcaption").await;
    assert!(failed.starts_with("http_404"), "{failed}");
    let caption = text(&client, "tr[data-row='1'] figure.ok figcaption").await;
    assert!(
        caption.contains(" → ") && caption.contains('−') && caption.contains(" px"),
        "{caption}"
    );
    // Every compressed image is shown (served by the API's /files), as is its original.
    wait_until(
        &client,
        "return [...document.querySelectorAll('figure.image.ok img')].every(i => i.complete && i.naturalWidth > 0)",
        Duration::from_secs(20),
        "every image to load",
    )
    .await;

    // The output CSV, downloaded by the browser.
    client
        .find(Locator::Id("download"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let file = downloads.join(format!("{request_id}.csv"));
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no download in {}",
            downloads.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reader = csv::Reader::from_path(&file).unwrap();
    assert_eq!(reader.headers().unwrap().get(3), Some("Output Image Urls"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 6);
    assert!(
        rows[2][3].starts_with("http") && rows[2][3].ends_with(", "),
        "{:?}",
        &rows[2]
    );

    let screenshot = client.screenshot().await.unwrap();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-page.png");
    std::fs::write(&path, screenshot).unwrap();
    eprintln!("screenshot: {}", path.display());

    // Later in the same tab: the key is still set and the request is in the recent list.
    client.goto(&format!("{api}/")).await.unwrap();
    assert!(text(&client, "#key-state").await.contains("A key is set"));
    client
        .find(Locator::Css(&format!(
            "#recent button[data-request-id='{request_id}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &client,
        "return document.getElementById('status').textContent === 'COMPLETED_WITH_ERRORS' && document.querySelectorAll('#products tbody tr').length === 6",
        Duration::from_secs(20),
        "the reopened request",
    )
    .await;

    // Retry the failed image: a new request, linked both ways, fetches it again (still gone).
    assert_eq!(text(&client, "#retry").await, "Retry 1 failed image");
    client
        .find(Locator::Id("retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &client,
        &format!(
            "return document.getElementById('request-id').textContent !== '{request_id}' && document.getElementById('status').textContent === 'COMPLETED_WITH_ERRORS' && document.querySelectorAll('#products tbody tr').length === 6"
        ),
        Duration::from_secs(60),
        "the retry to finish",
    )
    .await;
    assert!(
        text(&client, "#lineage")
            .await
            .contains(&format!("A retry of request {request_id}"))
    );
    assert!(
        text(&client, "#counts")
            .await
            .contains("rows 6/6 · images 12/12 (1 failed)")
    );
    client.close().await.unwrap();
}

/// WebP and AVIF outputs, chosen on the page, are shown by Chromium (which decodes both), with
/// each image's SSIMULACRA2 score, and the output URLs carry the format's extension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_shows_webp_and_avif_outputs_with_their_scores() {
    let (api, key, _pump) = serve_with_a_key().await;
    let origin = serve_on_loopback(photo_router()).await.unwrap();
    let work = temp_dir("browser-formats");
    let downloads = work.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    // The two smallest bundled photos keep AVIF encoding quick in a debug build.
    let csv = format!(
        "S. No.,Product Name,Input Image Urls\r\n1,Rocket,\"http://{origin}/photos/j23_rocket_0.27mp.jpg, http://{origin}/photos/p08_path_1000sq.webp\"\r\n"
    );
    let input = work.join("formats.csv");
    std::fs::write(&input, &csv).unwrap();

    let driver = Driver::start().await;
    let client = driver.browser(&downloads).await;
    client.goto(&format!("{api}/")).await.unwrap();
    client
        .find(Locator::Id("api-key"))
        .await
        .unwrap()
        .send_keys(&key)
        .await
        .unwrap();
    client
        .find(Locator::Id("save-key"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for (format, extension) in [("webp", ".webp"), ("avif", ".avif")] {
        client.goto(&format!("{api}/")).await.unwrap();
        client
            .execute(
                "document.getElementById('format').value = arguments[0];",
                vec![json!(format)],
            )
            .await
            .unwrap();
        client
            .find(Locator::Id("file"))
            .await
            .unwrap()
            .send_keys(&input.display().to_string())
            .await
            .unwrap();
        client
            .find(Locator::Id("submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_until(
            &client,
            "return document.getElementById('status').textContent === 'COMPLETED' && document.querySelectorAll('figure.image.ok').length === 2",
            Duration::from_secs(180),
            &format!("the {format} request to finish"),
        )
        .await;
        let outputs = client
            .execute(
                "return [...document.querySelectorAll('figure.image.ok a')].map(a => a.href)",
                vec![],
            )
            .await
            .unwrap();
        let outputs = outputs.as_array().unwrap();
        assert_eq!(outputs.len(), 2);
        for url in outputs {
            assert!(
                url.as_str().unwrap().ends_with(extension),
                "{format}: {url}"
            );
        }
        // Chromium decodes every output: each image element has its natural size.
        wait_until(
            &client,
            "return [...document.querySelectorAll('figure.image.ok a img')].every(i => i.complete && i.naturalWidth > 0)",
            Duration::from_secs(20),
            &format!("every {format} image to be decoded"),
        )
        .await;
        let caption = text(&client, "tr[data-row='1'] figure.ok figcaption").await;
        assert!(caption.contains("SSIMULACRA2 "), "{format}: {caption}");
    }
    client.close().await.unwrap();
}
