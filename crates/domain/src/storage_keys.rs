//! Storage keys: DynamoDB `pk`/`sk` values and S3 object keys. One place, so every adapter and
//! function agrees on the layout.

/// `Cache-Control` of every stored output image: a year, immutable (RFC 9111 §5.2.2.1
/// `max-age`, RFC 8246 `immutable`). An image key names one request's row and position and is
/// only ever written with the same image again (a redelivery), so a cached copy never goes
/// stale.
pub const IMAGE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Prefix the S3 trigger listens on; a CSV put under it is ingested: `uploads/<tenant>/<name>.csv`
/// for a tenant's upload (the tenant comes from the key), `uploads/<name>.csv` for the
/// deployment's own drops (the default tenant).
pub const UPLOADS_PREFIX: &str = "uploads/";
/// Prefix of compressed images (`images/<tenant>/<request_id>/<row>-<position>.jpg`).
pub const IMAGES_PREFIX: &str = "images/";
/// Prefix of output CSVs (`results/<tenant>/<request_id>/output.csv`).
pub const RESULTS_PREFIX: &str = "results/";
/// Sort key of the request item.
pub const META_SK: &str = "META";
/// Sort-key prefix of row items.
pub const ROW_SK_PREFIX: &str = "ROW#";
/// Sort-key prefix of counter shard items (`COUNT#<shard, 2 digits>`); sorts before `META`.
pub const COUNTER_SK_PREFIX: &str = "COUNT#";

/// Partition key of the request item, and of every item of a request whose rows fit one
/// partition key: `REQ#<request_id>`.
#[must_use]
pub fn request_pk(request_id: &str) -> String {
    format!("REQ#{request_id}")
}

/// Partition key of partition `partition` of a request spread over `partitions` keys
/// ([`super::counting::partitions_for`]): `REQ#<request_id>` when there is one (requests
/// stored before rows were spread have one), `REQ#<request_id>#<partition, 2 digits>`
/// otherwise. The request item always stays under [`request_pk`].
#[must_use]
pub fn partition_pk(request_id: &str, partitions: u32, partition: u32) -> String {
    if partitions <= 1 {
        request_pk(request_id)
    } else {
        format!("REQ#{request_id}#{partition:02}")
    }
}

/// Partition key of row `row_index` of a request spread over `partitions` keys.
#[must_use]
pub fn row_pk(request_id: &str, partitions: u32, row_index: u32) -> String {
    partition_pk(
        request_id,
        partitions,
        super::counting::partition_of_row(row_index, partitions),
    )
}

/// Partition key of counter shard `shard` of a request spread over `partitions` keys: the
/// partition of the rows it counts.
#[must_use]
pub fn counter_pk(request_id: &str, partitions: u32, shard: u32) -> String {
    partition_pk(
        request_id,
        partitions,
        super::counting::partition_of_shard(shard, partitions),
    )
}

/// The request id inside a `REQ#<id>` or `REQ#<id>#<partition>` partition key (request ids
/// hold no `#`: [`is_valid_request_id`]).
#[must_use]
pub fn request_id_from_pk(pk: &str) -> Option<&str> {
    let rest = pk.strip_prefix("REQ#")?;
    Some(rest.split_once('#').map_or(rest, |(id, _)| id))
}

/// Rows whose sort keys keep the first, 6-digit form ([`row_sk`]).
const SHORT_ROW_KEYS: u32 = 1_000_000;

/// Sort key of row `index`, in input order: `ROW#` and 6 digits below row 1,000,000 (the form
/// every stored request has), `ROW#:` and 10 digits from there to `u32::MAX` (`:` sorts after
/// every digit, so the long keys follow the short ones and keep their order).
#[must_use]
pub fn row_sk(index: u32) -> String {
    if index < SHORT_ROW_KEYS {
        format!("{ROW_SK_PREFIX}{index:06}")
    } else {
        format!("{ROW_SK_PREFIX}:{index:010}")
    }
}

/// A sort key above every row's ([`row_sk`]): the upper bound of a query of all rows.
pub const ROW_SK_END: &str = "ROW#;";

/// Sort key of counter shard `shard` ([`super::counting`]).
#[must_use]
pub fn counter_sk(shard: u32) -> String {
    format!("{COUNTER_SK_PREFIX}{shard:02}")
}

/// The prefix under which every compressed image of a request is stored:
/// `images/<tenant>/<request_id>/`.
#[must_use]
pub fn images_prefix(tenant: &str, request_id: &str) -> String {
    format!("{IMAGES_PREFIX}{tenant}/{request_id}/")
}

/// Object key of the compressed image at `position` (zero-based) of row `row_index`, under
/// [`images_prefix`].
#[must_use]
pub fn image_key(
    tenant: &str,
    request_id: &str,
    row_index: u32,
    position: usize,
    extension: &str,
) -> String {
    format!(
        "{}{row_index:06}-{position:02}.{extension}",
        images_prefix(tenant, request_id)
    )
}

/// Object key of the output CSV of a request.
#[must_use]
pub fn output_csv_key(tenant: &str, request_id: &str) -> String {
    format!("{RESULTS_PREFIX}{tenant}/{request_id}/output.csv")
}

/// The key a presigned upload for `request_id` is written to:
/// `uploads/<tenant>/<request_id>.csv`.
#[must_use]
pub fn presigned_upload_key(tenant: &str, request_id: &str) -> String {
    format!("{UPLOADS_PREFIX}{tenant}/{request_id}.csv")
}

/// Prefix of the options of presigned uploads not ingested yet
/// (`pending/<tenant>/<request_id>.json`); outside `uploads/`, so writing one triggers nothing.
pub const PENDING_PREFIX: &str = "pending/";

/// The key of the options (`webhook_url`, output spec) given with `POST /upload-urls`.
#[must_use]
pub fn pending_upload_key(tenant: &str, request_id: &str) -> String {
    format!("{PENDING_PREFIX}{tenant}/{request_id}.json")
}

/// The tenant an upload key belongs to: the first path segment of `uploads/<tenant>/…` when it
/// is a valid tenant name, `None` for a key directly under `uploads/`.
#[must_use]
pub fn tenant_of_upload(key: &str) -> Option<&str> {
    let (tenant, _) = key.strip_prefix(UPLOADS_PREFIX)?.split_once('/')?;
    is_valid_tenant(tenant).then_some(tenant)
}

/// The tenant and request id named by a presigned-upload key (`uploads/<tenant>/<uuid>.csv`,
/// the UUID in its lower-case hyphenated form, as `POST /upload-urls` issues it), or `None` for
/// any other key.
#[must_use]
pub fn presigned_upload_of(key: &str) -> Option<(&str, &str)> {
    let tenant = tenant_of_upload(key)?;
    let id = key
        .strip_prefix(UPLOADS_PREFIX)?
        .strip_prefix(tenant)?
        .strip_prefix('/')?
        .strip_suffix(".csv")?;
    let parsed = uuid::Uuid::try_parse(id).ok()?;
    (parsed.hyphenated().to_string() == id).then_some((tenant, id))
}

/// `true` when `id` is a syntactically valid request id: 1–64 ASCII letters, digits, `-` or `_`.
/// Checked before any lookup so a path can never smuggle a key separator.
#[must_use]
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A request id derived from `parts` (SHA-256, first 128 bits as a UUID-shaped hex string), so
/// the same upload — the same idempotency key, the same S3 object version — always maps to the
/// same request and a replay finds it instead of creating a second one.
#[must_use]
pub fn derived_request_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.len().to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Longest tenant name in bytes; names go into S3 keys and DynamoDB keys.
pub const MAX_TENANT_BYTES: usize = 64;

/// `true` for a valid tenant name: 1–64 bytes of lower-case ASCII letters, digits, `-` and
/// `_`, starting with a letter or digit (it becomes part of S3 object keys).
#[must_use]
pub fn is_valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_BYTES
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    #[test]
    fn presigned_upload_keys_name_their_tenant_and_request_and_nothing_else_does() {
        let id = "0b8f2a7e-5a5c-4a53-9a49-2f8f0c1b6e3d";
        let key = super::presigned_upload_key("acme", id);
        assert_eq!(key, format!("uploads/acme/{id}.csv"));
        assert_eq!(super::presigned_upload_of(&key), Some(("acme", id)));
        assert_eq!(
            super::tenant_of_upload("uploads/acme/catalogue.csv"),
            Some("acme")
        );
        assert_eq!(super::tenant_of_upload("uploads/catalogue.csv"), None);
        assert_eq!(super::tenant_of_upload("uploads/Acme/catalogue.csv"), None);
        for other in [
            "uploads/catalogue.csv",
            "uploads/acme/catalogue.csv",
            "uploads/0b8f2a7e-5a5c-4a53-9a49-2f8f0c1b6e3d.csv",
            "uploads/acme/0B8F2A7E-5A5C-4A53-9A49-2F8F0C1B6E3D.csv",
            "uploads/acme/0b8f2a7e5a5c4a539a492f8f0c1b6e3d.csv",
            "uploads/acme/nested/0b8f2a7e-5a5c-4a53-9a49-2f8f0c1b6e3d.csv",
            "results/acme/0b8f2a7e-5a5c-4a53-9a49-2f8f0c1b6e3d.csv",
            "uploads/acme/0b8f2a7e-5a5c-4a53-9a49-2f8f0c1b6e3d.csv.gz",
        ] {
            assert_eq!(super::presigned_upload_of(other), None, "{other}");
        }
    }

    #[test]
    fn derived_ids_are_stable_valid_and_distinct() {
        let a = derived_request_id(&["tenant", "key-1"]);
        assert_eq!(a, derived_request_id(&["tenant", "key-1"]));
        assert_ne!(a, derived_request_id(&["tenant", "key-2"]));
        assert_ne!(
            derived_request_id(&["ab", "c"]),
            derived_request_id(&["a", "bc"])
        );
        assert!(is_valid_request_id(&a));
    }

    use super::*;

    #[test]
    fn row_keys_sort_in_input_order_past_ten_million_rows() {
        let indices = [
            0u32,
            2,
            10,
            100,
            999_999,
            1_000_000,
            1_000_001,
            9_999_999,
            10_000_000,
            12_345_678,
            u32::MAX,
        ];
        let mut keys: Vec<String> = indices.iter().rev().map(|&i| row_sk(i)).collect();
        keys.sort();
        assert_eq!(keys, indices.iter().map(|&i| row_sk(i)).collect::<Vec<_>>());
        assert_eq!(row_sk(42), "ROW#000042", "stored requests keep their keys");
        assert!(
            keys.iter()
                .all(|k| k.as_str() < ROW_SK_END && k.as_str() > COUNTER_SK_PREFIX)
        );
    }

    #[test]
    fn partition_keys_name_their_request() {
        assert_eq!(partition_pk("r-1", 1, 0), "REQ#r-1");
        assert_eq!(partition_pk("r-1", 8, 3), "REQ#r-1#03");
        assert_eq!(row_pk("r-1", 8, 11), "REQ#r-1#03");
        assert_eq!(counter_pk("r-1", 8, 19), "REQ#r-1#03");
        for pk in ["REQ#r-1", "REQ#r-1#03", "REQ#r-1#31"] {
            assert_eq!(request_id_from_pk(pk), Some("r-1"));
        }
        assert_eq!(request_id_from_pk("KEY#x"), None);
    }

    #[test]
    fn request_ids_with_separators_are_invalid() {
        assert!(is_valid_request_id("3f2a-9c"));
        assert!(!is_valid_request_id("a#b"));
        assert!(!is_valid_request_id("../etc"));
        assert!(!is_valid_request_id(""));
    }
}
