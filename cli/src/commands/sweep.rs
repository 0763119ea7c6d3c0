//! `pixpress sweep`.

use std::process::ExitCode;

use anyhow::Context as _;
use pixpress_app::config::Config;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{ObjectStore, RequestRepository, RowQueue};
use pixpress_aws::{
    AwsBackends, DynamoKeyStore, DynamoTable, key_store_from_env, load_sdk_config,
    webhooks_queue_from_env,
};
use pixpress_local::emulator::{EmulatorNames, emulator_sdk_config, provision};

#[derive(Debug, clap::Args)]
pub(crate) struct SweepArgs {
    /// Sweep the backends of the emulator at this endpoint (as `run --backend emulator` makes
    /// them; webhooks are delivered here, signed with the tenants' secrets in its table);
    /// without it, the deployment the environment names, as the `sweeper` function sees it
    /// (TABLE_NAME, ROWS_QUEUE_URL, BUCKET_NAME, WEBHOOKS_QUEUE_URL, WEBHOOK_SECRETS_KEY_ID,
    /// AWS credentials): webhooks go to the webhooks queue, whose sender holds the signing
    /// secret.
    #[arg(long)]
    endpoint: Option<String>,
    /// Name prefix of the emulator's table, queues and bucket.
    #[arg(long, default_value = "pixpress")]
    emulator_prefix: String,
    /// Repair requests idle this long (default: SWEEP_IDLE_SECONDS, 2 hours).
    #[arg(long)]
    idle_seconds: Option<u64>,
}

/// Runs `pixpress sweep`: one run of the sweeper, now; prints what it did as JSON.
pub(crate) async fn execute(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::from_env()?;
    if let Some(seconds) = args.idle_seconds {
        config.sweep.idle = chrono::Duration::seconds(i64::try_from(seconds)?);
    }
    let swept = match &args.endpoint {
        Some(endpoint) => {
            let sdk = emulator_sdk_config(endpoint).await;
            let names = EmulatorNames::with_prefix(&args.emulator_prefix);
            let aws = provision(&sdk, &names, config.max_receive_count, None).await?;
            let keys = DynamoKeyStore::from(DynamoTable::new(&sdk, &names.table));
            sweep(&config, keys, aws.repo, aws.queue, aws.store, None).await?
        }
        None => {
            let sdk = load_sdk_config().await;
            let aws = AwsBackends::from_env(&sdk)?;
            // Deployed, only the webhook sender can sign: a sweep that delivered itself would
            // send unsigned webhooks, so it hands them to the sender's queue or does not run.
            let webhooks = webhooks_queue_from_env(&sdk).context(
                "WEBHOOKS_QUEUE_URL is not set: a sweep of a deployment hands webhooks to its \
                 webhooks queue (the stack's WebhooksQueueUrl output)",
            )?;
            let keys = key_store_from_env(&sdk)?;
            sweep(
                &config,
                keys,
                aws.repo,
                aws.queue,
                aws.store,
                Some(webhooks),
            )
            .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&swept)?);
    Ok(ExitCode::SUCCESS)
}

/// One sweep over `repo`, `rows` and `store`; the notifier's work hands webhooks to
/// `webhooks` (deployments) or delivers them here, signed with the secrets in `keys`.
async fn sweep<R, Q, S>(
    config: &Config,
    keys: DynamoKeyStore,
    repo: R,
    rows: Q,
    store: S,
    webhooks: Option<pixpress_aws::SqsRowQueue>,
) -> anyhow::Result<serde_json::Value>
where
    R: RequestRepository,
    Q: RowQueue,
    S: ObjectStore,
{
    let notifier =
        pixpress_delivery::App::new(Some(keys), repo, store, config)?.with_webhooks(webhooks);
    let app = pixpress_sweeper::App::new(notifier, rows, config);
    let swept = pixpress_sweeper::run(&app, Deadline::NONE).await?;
    Ok(serde_json::json!({
        "examined": swept.examined,
        "settled": swept.settled,
        "repairs": swept
            .repairs
            .iter()
            .map(|(id, repair)| serde_json::json!({"request_id": id, "repair": repair.kind()}))
            .collect::<Vec<_>>(),
        "errors": swept.errors,
        "complete": swept.complete,
    }))
}
