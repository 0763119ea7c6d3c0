//! The one place the function apps are built for runs on this machine: the pipeline
//! ([`crate::pipeline::Pipeline`], behind `pixpress run`, `demo` and `serve`) and `pixpress
//! invoke` take their apps from [`compose`], so every app gets the same key store, resolver
//! and settings. (Deployed, each function's `main.rs` composes its own app from the
//! environment.)

use std::sync::Arc;

use crate::AnyKeyStore;
use pixpress_app::config::Config;
use pixpress_app::ports::{NoQueue, ObjectStore, OriginSlots, RequestRepository, RowQueue};
use pixpress_fetch::{Fetcher, HostResolver};

/// Every function's app over one set of backends.
#[derive(Debug, Clone)]
pub struct Apps<R, Q, S, O> {
    /// `api`.
    pub api: pixpress_api::App<R, Q, S, AnyKeyStore>,
    /// `s3-ingest`, expanding chunks in the invocation that validated the upload.
    pub s3_ingest: pixpress_s3_ingest::App<R, Q, S, NoQueue>,
    /// `row-worker`.
    pub worker: pixpress_row_worker::App<R, S, O, Q>,
    /// `row-dead-letter`.
    pub dead_letter: pixpress_row_dead_letter::App<R>,
    /// `completion-notifier`, delivering webhooks in its invocation.
    pub notifier: pixpress_delivery::App<R, S, NoQueue, AnyKeyStore>,
    /// `webhook-sender`: the notifier's app with `queue` as its webhooks queue.
    pub sender: pixpress_delivery::App<R, S, Q, AnyKeyStore>,
    /// `sweeper`, doing the notifier's work as the notifier does here (webhooks inline).
    pub sweeper: pixpress_sweeper::App<R, Q, S, NoQueue, AnyKeyStore>,
}

/// Builds every app for `config` over `repo`, `queue`, `store` and `slots`. `keys` (the
/// tenants' API keys and webhook secrets) goes to both the API and the notifier; `resolver`
/// resolves the names of both image and webhook URLs.
///
/// # Errors
/// When an HTTP client cannot be built.
pub fn compose<R, Q, S, O>(
    config: &Config,
    keys: Option<AnyKeyStore>,
    resolver: Arc<dyn HostResolver>,
    repo: R,
    queue: Q,
    store: S,
    slots: O,
) -> anyhow::Result<Apps<R, Q, S, O>>
where
    R: RequestRepository,
    Q: RowQueue + pixpress_app::ports::WebhookQueue,
    S: ObjectStore,
    O: OriginSlots,
{
    let fetcher = Fetcher::with_resolver(config.fetch.clone(), resolver.clone())?;
    let webhook_fetcher = Fetcher::with_resolver(config.webhook_fetch(), resolver)?;
    let notifier = pixpress_delivery::App {
        keys: keys.clone(),
        repo: repo.clone(),
        store: store.clone(),
        fetcher: webhook_fetcher,
        config: pixpress_delivery::NotifierConfig::from(config),
        webhooks: None,
    };
    Ok(Apps {
        api: pixpress_api::App {
            keys,
            webhooks: None,
            repo: repo.clone(),
            queue: queue.clone(),
            store: store.clone(),
            config: pixpress_api::ApiConfig::from(config),
        },
        s3_ingest: pixpress_s3_ingest::App {
            repo: repo.clone(),
            queue: queue.clone(),
            store: store.clone(),
            chunks: None,
            dead_letter_queue_arn: None,
            config: pixpress_s3_ingest::IngestConfig::from(config),
        },
        worker: pixpress_row_worker::App::with_fetcher(
            repo.clone(),
            store,
            slots,
            queue.clone(),
            fetcher,
            config,
        ),
        dead_letter: pixpress_row_dead_letter::App::new(repo, config),
        sender: notifier.clone().with_webhooks(Some(queue.clone())),
        sweeper: pixpress_sweeper::App::new(notifier.clone(), queue, config),
        notifier,
    })
}
