//! [`ObjectStore`] on S3: put with content type, size-capped get, presigned GET, presigned POST
//! forms (with a size range S3 enforces), multipart uploads.

use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::presigning::PresigningConfig;
use bytes::Bytes;

use super::sdk_error;
use pixpress_app::ports::{
    ObjectReader, ObjectStore, PortError, PresignedPost, StoredObject, UploadedPart,
};

/// The S3 bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    public_base_url: Option<String>,
    /// The credentials presigned POST forms are signed with (the SDK's own signer does not
    /// sign forms).
    credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
}

impl S3ObjectStore {
    /// One `GetObject` of `key` (bytes `range`, half-open, when given) and its length in
    /// bytes; `None` when there is no such key (`NoSuchKey`). `context` names the call in
    /// errors.
    async fn get_object(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
        context: &str,
    ) -> Result<Option<(GetObjectOutput, u64)>, PortError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(sdk_error(context, &e)),
        };
        let size = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0);
        Ok(Some((out, size)))
    }

    /// A store on `bucket`. `public_base_url` (the CloudFront domain) publishes `images/…`;
    /// `force_path_style` addresses the bucket in the path, as emulators need.
    #[must_use]
    pub fn new(
        sdk: &aws_config::SdkConfig,
        bucket: impl Into<String>,
        public_base_url: Option<String>,
        force_path_style: bool,
    ) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(force_path_style)
            .build();
        Self {
            credentials: sdk.credentials_provider(),
            ..Self::from_client(Client::from_conf(config), bucket, public_base_url)
        }
    }

    /// A store on `bucket` through `client` (tests pass a mocked client); it cannot sign POST
    /// forms.
    #[must_use]
    pub fn from_client(
        client: Client,
        bucket: impl Into<String>,
        public_base_url: Option<String>,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            public_base_url: public_base_url.map(|u| u.trim_end_matches('/').to_owned()),
            credentials: None,
        }
    }

    /// The underlying client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A presigned GET URL for `key`, valid for `expires_in` (at most 7 days, a SigV4 limit).
    ///
    /// # Errors
    /// When the expiry is out of range or signing fails.
    pub async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, PortError> {
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| PortError::Unexpected(anyhow!("presigning: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| sdk_error("presigning a GET", &e))?;
        Ok(request.uri().to_owned())
    }

    /// A signed POST form for `key` (see [`ObjectStore::presigned_post`]): the policy names the
    /// bucket, the key, the content type and `["content-length-range", 1, max_bytes]`, and is
    /// signed with SigV4 (string to sign: the base64 policy; key: the `s3` signing key of the
    /// credentials' date and region). The form goes to the bucket's URL as the SDK addresses it
    /// (virtual-hosted, or path-style on an emulator).
    ///
    /// # Errors
    /// When the expiry is out of range (SigV4: at most 7 days), there is no region or no
    /// credentials, or the bucket URL cannot be worked out.
    pub async fn presign_post(
        &self,
        key: &str,
        content_type: &str,
        max_bytes: u64,
        expires_in: Duration,
    ) -> Result<PresignedPost, PortError> {
        use aws_sdk_s3::config::ProvideCredentials as _;
        use base64::Engine as _;
        let unexpected = |what: String| PortError::Unexpected(anyhow!("presigning a POST: {what}"));
        if expires_in > Duration::from_secs(7 * 24 * 3600) {
            return Err(unexpected("expiry over 7 days".into()));
        }
        let config = self.client.config();
        let region = config
            .region()
            .ok_or_else(|| unexpected("no region".into()))?
            .to_string();
        let credentials = self
            .credentials
            .as_ref()
            .ok_or_else(|| unexpected("no credentials provider".into()))?
            .provide_credentials()
            .await
            .map_err(|e| unexpected(format!("no credentials: {e}")))?;
        // The bucket's URL as the SDK addresses it: a presigned GET of the key, less the key.
        let get = url::Url::parse(&self.presign_get(key, expires_in).await?)
            .map_err(|e| unexpected(e.to_string()))?;
        let base = get
            .path()
            .strip_suffix(key)
            .ok_or_else(|| unexpected(format!("unexpected URL shape {}", get.path())))?;
        let url = format!("{}{base}", &get[..url::Position::BeforePath]);
        let now = std::time::SystemTime::now();
        let signed_at = chrono::DateTime::<chrono::Utc>::from(now);
        let date = signed_at.format("%Y%m%d").to_string();
        let amz_date = signed_at.format("%Y%m%dT%H%M%SZ").to_string();
        let expiration = (signed_at
            + chrono::Duration::from_std(expires_in).map_err(|e| unexpected(e.to_string()))?)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let credential = format!(
            "{}/{date}/{region}/s3/aws4_request",
            credentials.access_key_id()
        );
        let mut fields = vec![
            ("key".to_owned(), key.to_owned()),
            ("Content-Type".to_owned(), content_type.to_owned()),
            ("x-amz-algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
            ("x-amz-credential".to_owned(), credential),
            ("x-amz-date".to_owned(), amz_date),
        ];
        if let Some(token) = credentials.session_token() {
            fields.push(("x-amz-security-token".to_owned(), token.to_owned()));
        }
        let mut conditions = vec![
            serde_json::json!({ "bucket": self.bucket }),
            serde_json::json!(["content-length-range", 1, max_bytes]),
        ];
        conditions.extend(
            fields
                .iter()
                .map(|(name, value)| serde_json::json!({ name.as_str(): value })),
        );
        let policy = serde_json::json!({ "expiration": expiration, "conditions": conditions });
        let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        let signing_key = aws_sigv4::sign::v4::generate_signing_key(
            credentials.secret_access_key(),
            now,
            &region,
            "s3",
        );
        let signature = aws_sigv4::sign::v4::calculate_signature(signing_key, policy.as_bytes());
        fields.push(("policy".to_owned(), policy));
        fields.push(("x-amz-signature".to_owned(), signature));
        Ok(PresignedPost { url, fields })
    }
}

impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_cache_control(
                content_type
                    .starts_with("image/")
                    .then(|| pixpress_domain::storage_keys::IMAGE_CACHE_CONTROL.to_owned()),
            )
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| sdk_error("putting an object", &e))?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            // A HEAD answer has no body, so no error code: the status says it.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
                Err(PortError::Denied(format!(
                    "looking up {key}: 403 (s3:GetObject, s3:ListBucket)"
                )))
            }
            Err(e) => Err(sdk_error("looking up an object", &e)),
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<StoredObject>, PortError> {
        let Some((out, size)) = self.get_object(key, None, "getting an object").await? else {
            return Ok(None);
        };
        if size > max_bytes {
            return Err(PortError::TooLarge {
                key: key.to_owned(),
                size,
                limit: max_bytes,
            });
        }
        let content_type = out
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| PortError::Unexpected(anyhow!("reading object {key}: {e}")))?
            .into_bytes();
        Ok(Some(StoredObject {
            bytes: body,
            content_type,
        }))
    }

    async fn open(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<ObjectReader>, PortError> {
        // An empty range cannot be asked for (`bytes=a-b` is inclusive); it reads nothing.
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            return Ok(Some(ObjectReader {
                size: 0,
                etag: None,
                body: Box::pin(futures::stream::empty()),
            }));
        }
        let Some((out, size)) = self.get_object(key, range, "opening an object").await? else {
            return Ok(None);
        };
        let etag = out.e_tag().map(str::to_owned);
        let key = key.to_owned();
        let body = futures::stream::unfold(Some(out.body), move |body| {
            let key = key.clone();
            async move {
                let mut body = body?;
                match body.next().await {
                    None => None,
                    Some(Ok(bytes)) => Some((Ok(bytes), Some(body))),
                    Some(Err(e)) => Some((
                        Err(PortError::Unexpected(anyhow!("reading object {key}: {e}"))),
                        None,
                    )),
                }
            }
        });
        Ok(Some(ObjectReader {
            size,
            etag,
            body: Box::pin(body),
        }))
    }

    fn public_url(&self, key: &str) -> String {
        match &self.public_base_url {
            Some(base) => format!("{base}/{key}"),
            None => format!("s3://{}/{key}", self.bucket),
        }
    }

    async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, PortError> {
        self.presign_get(key, expires_in).await.map(Some)
    }

    async fn presigned_post(
        &self,
        key: &str,
        content_type: &str,
        max_bytes: u64,
        expires_in: Duration,
    ) -> Result<Option<PresignedPost>, PortError> {
        self.presign_post(key, content_type, max_bytes, expires_in)
            .await
            .map(Some)
    }

    async fn create_multipart(&self, key: &str, content_type: &str) -> Result<String, PortError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| sdk_error("starting a multipart upload", &e))?;
        out.upload_id
            .ok_or_else(|| PortError::Unexpected(anyhow!("S3 returned no upload id for {key}")))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        bytes: Bytes,
    ) -> Result<UploadedPart, PortError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(i32::try_from(number).unwrap_or(i32::MAX))
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| sdk_error("uploading a part", &e))?;
        Ok(UploadedPart {
            number,
            tag: out.e_tag.unwrap_or_default(),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<(), PortError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(i32::try_from(p.number).unwrap_or(i32::MAX))
                            .e_tag(&p.tag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(|e| sdk_error("completing a multipart upload", &e))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), PortError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| sdk_error("aborting a multipart upload", &e))?;
        Ok(())
    }
}
