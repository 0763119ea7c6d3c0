//! `pixpress keys`.

use std::path::PathBuf;
use std::process::ExitCode;

use pixpress_app::auth::KeyStore as _;
use pixpress_aws::load_sdk_config;
use pixpress_embedded::FileKeyStore;
use pixpress_local::AnyKeyStore;

use clap::Subcommand;

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

/// Runs `pixpress keys`.
pub(crate) async fn execute(args: KeysArgs) -> anyhow::Result<ExitCode> {
    keys_command(args.command).await
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key for a tenant and print it (shown only this once).
    Create {
        /// Tenant name: lower-case letters, digits, `-`, `_` (at most 64).
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// List keys (ids, tenants, dates; never the keys).
    List {
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// Give a tenant a new webhook signing secret; the old one keeps signing beside it for
    /// 24 hours, so receivers can switch without missing a delivery.
    RotateWebhookSecret {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// Revoke a key by its id; it stops working at once.
    Revoke {
        /// The key id (the 16 hex characters after `pk_`).
        key_id: String,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
}

/// Where `keys` keeps keys.
#[derive(Debug, Clone, clap::Args)]
struct KeyStoreArgs {
    /// `local`: `keys.json` in --data-dir (what `pixpress serve` reads); `aws`: the requests
    /// table named by TABLE_NAME, with the SDK's usual credentials and region.
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
    /// The data directory of `pixpress serve`.
    #[arg(long, default_value = "pixpress-data")]
    data_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

async fn key_store(args: &KeyStoreArgs) -> anyhow::Result<AnyKeyStore> {
    Ok(match args.backend {
        Backend::Local => AnyKeyStore::File(FileKeyStore::in_dir(&args.data_dir)),
        Backend::Aws => {
            let sdk = load_sdk_config().await;
            AnyKeyStore::Dynamo(pixpress_aws::key_store_from_env(&sdk)?)
        }
    })
}

/// `pixpress keys …`.
async fn keys_command(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match command {
        KeysCommand::Create {
            tenant,
            store: args,
        } => {
            if !pixpress_app::auth::is_valid_tenant(&tenant) {
                anyhow::bail!(
                    "tenant `{tenant}` must be 1–64 lower-case letters, digits, `-` or `_`, starting with a letter or digit"
                );
            }
            let store = key_store(&args).await?;
            let (issued, tenant) = pixpress_app::auth::create_key(&store, &tenant, now).await?;
            if args.json {
                let doc = serde_json::json!({
                    "tenant": tenant.tenant,
                    "key_id": issued.record.key_id,
                    "api_key": issued.api_key,
                    "webhook_secret": tenant.webhook_secret,
                    "created_at": issued.record.created_at,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("tenant:         {}", tenant.tenant);
                println!("key id:         {}", issued.record.key_id);
                println!("API key:        {}", issued.api_key);
                println!("webhook secret: {}", tenant.webhook_secret);
                println!();
                println!("The API key is shown only now; pixpress keeps only its hash.");
                println!(
                    "Send it as `Authorization: Bearer <key>`; verify webhooks with the secret."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { store: args } => {
            let keys = key_store(&args).await?.list_keys().await?;
            if args.json {
                let doc: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "key_id": k.key_id,
                            "tenant": k.tenant,
                            "created_at": k.created_at,
                            "revoked_at": k.revoked_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "{:<18} {:<24} {:<22} revoked",
                    "key id", "tenant", "created"
                );
                for k in &keys {
                    println!(
                        "{:<18} {:<24} {:<22} {}",
                        k.key_id,
                        k.tenant,
                        k.created_at.format("%Y-%m-%d %H:%M:%SZ"),
                        k.revoked_at.map_or_else(
                            || "-".to_owned(),
                            |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()
                        )
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::RotateWebhookSecret {
            tenant,
            store: args,
        } => {
            let store = key_store(&args).await?;
            let rotated = pixpress_app::auth::rotate_webhook_secret(&store, &tenant, now).await?;
            let until = rotated.previous_valid_until.unwrap_or(now);
            if args.json {
                let doc = serde_json::json!({
                    "tenant": rotated.tenant,
                    "webhook_secret": rotated.webhook_secret,
                    "previous_valid_until": until,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("tenant:         {}", rotated.tenant);
                println!("webhook secret: {}", rotated.webhook_secret);
                println!(
                    "The previous secret signs beside it until {}.",
                    until.format("%Y-%m-%d %H:%M:%SZ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke {
            key_id,
            store: args,
        } => {
            if key_store(&args).await?.revoke_key(&key_id, now).await? {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({ "key_id": key_id, "revoked": true })
                    );
                } else {
                    println!("revoked {key_id}");
                }
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: no key with id {key_id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
