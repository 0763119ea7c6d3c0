//! The bucket's event notifications for uploads, on this machine: a deployed bucket invokes
//! `s3-ingest` for every object created under `uploads/` ending in `.csv` (`template.yaml`,
//! the function's `S3` event with its prefix and suffix filter); [`BucketEvents`] records the
//! same keys as they are written through it, and the pump hands each to `s3-ingest`
//! ([`crate::pipeline::Pipeline::deliver_upload_events`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pixpress_app::ports::{
    ObjectReader, ObjectStore, PortError, PresignedPost, StoredObject, UploadedPart,
};
use pixpress_domain::storage_keys::UPLOADS_PREFIX;

/// `inner`, recording the uploads created through it (`PutObject` and
/// `CompleteMultipartUpload` of `uploads/….csv`) until they are taken.
#[derive(Debug, Clone)]
pub struct BucketEvents<S> {
    inner: S,
    created: Arc<Mutex<VecDeque<String>>>,
}

impl<S> BucketEvents<S> {
    /// `inner` with no upload recorded yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            created: Arc::default(),
        }
    }

    /// The store written through.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The keys of the uploads created since the last call, oldest first.
    #[must_use]
    pub fn take_created(&self) -> Vec<String> {
        self.created
            .lock()
            .map(|mut created| created.drain(..).collect())
            .unwrap_or_default()
    }

    /// Uploads created and not taken yet.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.created.lock().map(|c| c.len()).unwrap_or_default()
    }

    fn record(&self, key: &str) {
        let is_upload =
            key.starts_with(UPLOADS_PREFIX) && key.to_ascii_lowercase().ends_with(".csv");
        if is_upload && let Ok(mut created) = self.created.lock() {
            created.push_back(key.to_owned());
        }
    }
}

impl<S: ObjectStore> ObjectStore for BucketEvents<S> {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), PortError> {
        self.inner.put(key, bytes, content_type).await?;
        self.record(key);
        Ok(())
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<StoredObject>, PortError> {
        self.inner.get(key, max_bytes).await
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        self.inner.exists(key).await
    }

    async fn open(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<ObjectReader>, PortError> {
        self.inner.open(key, range).await
    }

    fn public_url(&self, key: &str) -> String {
        self.inner.public_url(key)
    }

    async fn presigned_get(
        &self,
        key: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<String>, PortError> {
        self.inner.presigned_get(key, expires_in).await
    }

    async fn presigned_post(
        &self,
        key: &str,
        content_type: &str,
        max_bytes: u64,
        expires_in: std::time::Duration,
    ) -> Result<Option<PresignedPost>, PortError> {
        self.inner
            .presigned_post(key, content_type, max_bytes, expires_in)
            .await
    }

    async fn create_multipart(&self, key: &str, content_type: &str) -> Result<String, PortError> {
        self.inner.create_multipart(key, content_type).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        bytes: Bytes,
    ) -> Result<UploadedPart, PortError> {
        self.inner.upload_part(key, upload_id, number, bytes).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<(), PortError> {
        self.inner.complete_multipart(key, upload_id, parts).await?;
        self.record(key);
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), PortError> {
        self.inner.abort_multipart(key, upload_id).await
    }
}
