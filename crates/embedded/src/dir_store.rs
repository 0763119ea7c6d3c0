//! Directory-backed [`ObjectStore`]: key `a/b.jpg` is file `<root>/a/b.jpg`. Writes go to a
//! temporary file renamed into place, so a reader never sees a partial object.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow};
use bytes::Bytes;

use pixpress_app::limits::{S3_MAX_KEY_BYTES, S3_MAX_PARTS, S3_MIN_PART_BYTES};
use pixpress_app::ports::{ObjectReader, ObjectStore, PortError, StoredObject, UploadedPart};

/// Where unfinished multipart uploads keep their parts: `<root>/.multipart/<upload id>/`.
const MULTIPART_DIR: &str = ".multipart";

/// The directory store. Clones share the directory.
#[derive(Debug, Clone)]
pub struct DirObjectStore {
    root: PathBuf,
    public_base_url: Option<String>,
    upload_form: Option<UploadForms>,
}

/// Issues and checks the upload forms a local server takes in place of S3's presigned POST:
/// the same fields a client sends as they are (`key`, `Content-Type`, `policy`, `signature`),
/// the policy (expiry, key, content type, largest size) signed with HMAC-SHA256 under a key
/// made for this process.
#[derive(Clone)]
struct UploadForms {
    url: String,
    key: [u8; 32],
}

impl std::fmt::Debug for UploadForms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadForms")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What a checked upload form allows: one object under `key`, of `content_type`, of 1 to
/// `max_bytes` bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadPolicy {
    /// When the form stops working (RFC 3339).
    pub expiration: String,
    /// The object's key.
    pub key: String,
    /// The `Content-Type` the form was signed for.
    pub content_type: String,
    /// Largest object, in bytes.
    pub max_bytes: u64,
}

type FormMac = hmac::Hmac<sha2::Sha256>;

impl UploadForms {
    fn mac(&self) -> FormMac {
        use hmac::Mac as _;
        // HMAC takes a key of any length: this cannot fail.
        FormMac::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC key length"))
    }
}

impl DirObjectStore {
    /// A store rooted at `root` (created on first put). Public URLs are `file://` paths unless
    /// `public_base_url` is given (then `<base>/<key>`).
    ///
    /// # Errors
    /// When `root` cannot be made absolute.
    pub fn new(root: impl AsRef<Path>, public_base_url: Option<String>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root.as_ref())
            .with_context(|| format!("creating {}", root.as_ref().display()))?;
        let root = std::fs::canonicalize(root.as_ref())
            .with_context(|| format!("resolving {}", root.as_ref().display()))?;
        Ok(Self {
            root,
            public_base_url: public_base_url.map(|u| u.trim_end_matches('/').to_owned()),
            upload_form: None,
        })
    }

    /// The same store issuing upload forms (its [`ObjectStore::presigned_post`]) that `url`
    /// takes — a local server's stand-in for S3 POST Object, which checks them with
    /// [`DirObjectStore::check_upload_form`].
    #[must_use]
    pub fn with_upload_form(mut self, url: impl Into<String>) -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        self.upload_form = Some(UploadForms {
            url: url.into(),
            key,
        });
        self
    }

    /// Checks the fields of an upload form this store issued: the signature over the policy,
    /// the policy's expiry, and that `key` and `Content-Type` are the ones it was signed for.
    ///
    /// # Errors
    /// What is wrong, in words (the server answers it with 403).
    pub fn check_upload_form(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
    ) -> Result<UploadPolicy, String> {
        use base64::Engine as _;
        use hmac::Mac as _;
        let forms = self
            .upload_form
            .as_ref()
            .ok_or("this server issues no upload forms")?;
        let field = |name: &str| {
            fields
                .get(name)
                .ok_or_else(|| format!("the form has no `{name}` field"))
        };
        let policy = field("policy")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(field("signature")?)
            .map_err(|_| "the signature is not base64".to_owned())?;
        let mut mac = forms.mac();
        mac.update(policy.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| "the signature does not match the policy".to_owned())?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(policy)
            .map_err(|_| "the policy is not base64".to_owned())?;
        let policy: UploadPolicy = serde_json::from_slice(&decoded)
            .map_err(|e| format!("the policy is not one this server signs: {e}"))?;
        let expiration = chrono::DateTime::parse_from_rfc3339(&policy.expiration)
            .map_err(|e| format!("the policy's expiration: {e}"))?;
        if expiration < chrono::Utc::now() {
            return Err("the form has expired".to_owned());
        }
        if field("key")? != &policy.key {
            return Err("the key is not the one the form was signed for".to_owned());
        }
        if field("Content-Type")? != &policy.content_type {
            return Err(format!("the Content-Type must be {}", policy.content_type));
        }
        Ok(policy)
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf, PortError> {
        let valid = uuid::Uuid::try_parse(upload_id).is_ok();
        if !valid {
            return Err(PortError::Unexpected(anyhow!(
                "unknown upload `{upload_id}`"
            )));
        }
        Ok(self.root.join(MULTIPART_DIR).join(upload_id))
    }

    /// The file of `key`.
    ///
    /// # Errors
    /// [`PortError::LimitExceeded`] for a key over S3's 1,024 bytes
    /// ([`pixpress_app::limits::S3_MAX_KEY_BYTES`]); [`PortError::Unexpected`] when the key
    /// is empty, absolute, or contains `..`.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, PortError> {
        if key.len() > S3_MAX_KEY_BYTES {
            return Err(PortError::LimitExceeded(format!(
                "object key of {} bytes; S3 keys hold at most {S3_MAX_KEY_BYTES} bytes",
                key.len()
            )));
        }
        let relative = Path::new(key);
        let safe = !key.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(PortError::Unexpected(anyhow!("invalid object key `{key}`")));
        }
        Ok(self.root.join(relative))
    }
}

fn content_type_of(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("csv") => "text/csv; charset=utf-8",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("avif") => "image/avif",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

impl ObjectStore for DirObjectStore {
    async fn put(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<(), PortError> {
        let path = self.path_of(key)?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            key.replace('/', "_"),
            uuid::Uuid::new_v4()
        ));
        let result = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow!(e)
                .context(format!("reading {}", path.display()))
                .into()),
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<StoredObject>, PortError> {
        let path = self.path_of(key)?;
        let size = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow!(e)
                    .context(format!("reading {}", path.display()))
                    .into());
            }
        };
        if size > max_bytes {
            return Err(PortError::TooLarge {
                key: key.to_owned(),
                size,
                limit: max_bytes,
            });
        }
        let bytes = tokio::fs::read(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(StoredObject {
            bytes: Bytes::from(bytes),
            content_type: content_type_of(key).to_owned(),
        }))
    }

    async fn open(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<ObjectReader>, PortError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        /// Bytes per piece read.
        const PIECE: u64 = 256 * 1024;
        let path = self.path_of(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow!(e)
                    .context(format!("opening {}", path.display()))
                    .into());
            }
        };
        let metadata = file
            .metadata()
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let len = metadata.len();
        // Size and modification time stand in for S3's entity tag: a replaced file differs.
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let etag = Some(format!("\"{len:x}-{modified:x}\""));
        let (start, end) = range.map_or((0, len), |r| (r.start.min(len), r.end.min(len)));
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let body = futures::stream::unfold(
            (file, end.saturating_sub(start), path),
            |(mut file, left, path)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf = vec![0; usize::try_from(left.min(PIECE)).unwrap_or(0)];
                match file.read(&mut buf).await {
                    Ok(0) => Some((
                        Err(PortError::Unexpected(anyhow!(
                            "{} ended early",
                            path.display()
                        ))),
                        (file, 0, path),
                    )),
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), (file, left - n as u64, path)))
                    }
                    Err(e) => Some((
                        Err(anyhow!(e)
                            .context(format!("reading {}", path.display()))
                            .into()),
                        (file, 0, path),
                    )),
                }
            },
        );
        Ok(Some(ObjectReader {
            size: end.saturating_sub(start),
            etag,
            body: Box::pin(body),
        }))
    }

    fn public_url(&self, key: &str) -> String {
        match &self.public_base_url {
            Some(base) => format!("{base}/{key}"),
            None => format!("file://{}", self.root.join(key).display()),
        }
    }

    async fn presigned_get(
        &self,
        _key: &str,
        _expires_in: std::time::Duration,
    ) -> Result<Option<String>, PortError> {
        Ok(None)
    }

    async fn presigned_post(
        &self,
        key: &str,
        content_type: &str,
        max_bytes: u64,
        expires_in: std::time::Duration,
    ) -> Result<Option<pixpress_app::ports::PresignedPost>, PortError> {
        use base64::Engine as _;
        use hmac::Mac as _;
        let Some(forms) = &self.upload_form else {
            return Ok(None);
        };
        self.path_of(key)?;
        let expires = chrono::Duration::from_std(expires_in)
            .map_err(|e| PortError::Unexpected(anyhow!("expiry: {e}")))?;
        let policy = UploadPolicy {
            expiration: (chrono::Utc::now() + expires).to_rfc3339(),
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            max_bytes,
        };
        let policy = serde_json::to_vec(&policy)
            .map_err(|e| PortError::Unexpected(anyhow!("policy: {e}")))?;
        let policy = base64::engine::general_purpose::STANDARD.encode(policy);
        let mut mac = forms.mac();
        mac.update(policy.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        Ok(Some(pixpress_app::ports::PresignedPost {
            url: forms.url.clone(),
            fields: vec![
                ("key".to_owned(), key.to_owned()),
                ("Content-Type".to_owned(), content_type.to_owned()),
                ("policy".to_owned(), policy),
                ("signature".to_owned(), signature),
            ],
        }))
    }

    async fn create_multipart(&self, key: &str, _content_type: &str) -> Result<String, PortError> {
        self.path_of(key)?;
        let upload_id = uuid::Uuid::new_v4().to_string();
        let dir = self.upload_dir(&upload_id)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(upload_id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        number: u32,
        bytes: Bytes,
    ) -> Result<UploadedPart, PortError> {
        if !(1..=S3_MAX_PARTS).contains(&number) {
            return Err(PortError::LimitExceeded(format!(
                "part number {number}; S3 numbers parts 1 to {S3_MAX_PARTS}"
            )));
        }
        let dir = self.upload_dir(upload_id)?;
        if tokio::fs::metadata(&dir).await.is_err() {
            return Err(PortError::Unexpected(anyhow!(
                "unknown upload `{upload_id}`"
            )));
        }
        let path = dir.join(format!("{number:05}"));
        tokio::fs::write(&path, &bytes)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(UploadedPart {
            number,
            tag: format!("{number}-{}", bytes.len()),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<(), PortError> {
        let dir = self.upload_dir(upload_id)?;
        let mut sizes = Vec::with_capacity(parts.len());
        for part in parts {
            let path = dir.join(format!("{:05}", part.number));
            let size = tokio::fs::metadata(&path)
                .await
                .with_context(|| format!("part {} of {upload_id}", part.number))?
                .len();
            sizes.push(size);
        }
        if let Some((_, but_last)) = sizes.split_last()
            && let Some(small) = but_last.iter().find(|&&s| (s as usize) < S3_MIN_PART_BYTES)
        {
            return Err(PortError::LimitExceeded(format!(
                "a part of {small} bytes before the last; S3 parts hold at least {S3_MIN_PART_BYTES} bytes (EntityTooSmall)"
            )));
        }
        let path = self.path_of(key)?;
        let parent = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let tmp = parent.join(format!(".{}.tmp-{upload_id}", key.replace('/', "_")));
        let result = async {
            tokio::fs::create_dir_all(&parent).await?;
            let mut out = tokio::fs::File::create(&tmp).await?;
            for part in parts {
                let mut input =
                    tokio::fs::File::open(dir.join(format!("{:05}", part.number))).await?;
                tokio::io::copy(&mut input, &mut out).await?;
            }
            tokio::io::AsyncWriteExt::flush(&mut out).await?;
            drop(out);
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.with_context(|| format!("writing {}", path.display()))?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(())
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<(), PortError> {
        let dir = self.upload_dir(upload_id)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow!(e)
                .context(format!("removing {}", dir.display()))
                .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_round_trip_and_keys_cannot_escape_the_root() {
        let dir = std::env::temp_dir().join(format!("pixpress-store-{}", uuid::Uuid::new_v4()));
        let store = DirObjectStore::new(&dir, Some("http://127.0.0.1:1/files".into())).unwrap();
        store
            .put("images/r/1.jpg", Bytes::from_static(b"jpeg"), "image/jpeg")
            .await
            .unwrap();
        let got = store.get("images/r/1.jpg", 100).await.unwrap().unwrap();
        assert_eq!(&got.bytes[..], b"jpeg");
        assert!(matches!(
            store.get("images/r/1.jpg", 2).await,
            Err(PortError::TooLarge { .. })
        ));
        assert!(store.get("images/r/none.jpg", 100).await.unwrap().is_none());
        assert!(store.get("../etc/passwd", 100).await.is_err());
        let long_key = format!("images/{}.jpg", "k".repeat(1100));
        assert!(matches!(
            store
                .put(&long_key, Bytes::from_static(b"x"), "image/jpeg")
                .await,
            Err(PortError::LimitExceeded(_))
        ));
        assert_eq!(
            store.public_url("images/r/1.jpg"),
            "http://127.0.0.1:1/files/images/r/1.jpg"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
