//! [`ObjectStore`] on S3: put with content type, size-capped get, presigned GET and PUT,
//! multipart uploads.

use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use bytes::Bytes;

use super::sdk_error;
use crate::ports::{ObjectReader, ObjectStore, PortError, StoredObject, UploadedPart};

/// The S3 bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    public_base_url: Option<String>,
}

impl S3ObjectStore {
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
        Self::from_client(Client::from_conf(config), bucket, public_base_url)
    }

    /// A store on `bucket` through `client` (tests pass a mocked client).
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

    /// A presigned PUT URL for `key` with `content_type`, valid for `expires_in`.
    ///
    /// # Errors
    /// When the expiry is out of range or signing fails.
    pub async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        expires_in: Duration,
    ) -> Result<String, PortError> {
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| PortError::Unexpected(anyhow!("presigning: {e}")))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .presigned(config)
            .await
            .map_err(|e| sdk_error("presigning a PUT", &e))?;
        Ok(request.uri().to_owned())
    }
}

impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| sdk_error("putting an object", &e))?;
        Ok(())
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<StoredObject>, PortError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(sdk_error("getting an object", &e)),
        };
        let size = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0);
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
            Err(e) => return Err(sdk_error("opening an object", &e)),
        };
        let size = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0);
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

    async fn presigned_put(
        &self,
        key: &str,
        content_type: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, PortError> {
        self.presign_put(key, content_type, expires_in)
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
