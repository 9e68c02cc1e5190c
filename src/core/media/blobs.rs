//! The media store (CONTRACT §1 `CONFAB_MEDIA_URL`, §7): an `object_store` backend chosen by
//! URL — `file://` (default, under the data dir), `s3://` (AWS or any S3-compatible store),
//! `gs://`, `az://`, `memory://` — holding attachment bytes under `{company_id}/{object id}`.
//!
//! [`MediaStore::save_stream`] is the one way bytes get in: uploads (`POST /media/save`) use
//! it, and so should the inbound provider-media download (the `MediaFetcher` of ARCHITECTURE,
//! not built yet): it sniffs, enforces the size limit while streaming, hashes and writes in
//! parts, and leaves nothing behind when it fails.

use std::{
    fmt,
    ops::Range,
    path::{Path as FsPath, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart, local::LocalFileSystem, memory::InMemory,
    path::Path, prefix::PrefixStore,
};
use sha2::{Digest, Sha256};

use super::model::{self, MediaKind, Rejection, SNIFF_LEN};
use crate::core::error::{ApiError, ApiResult};

/// Size of each uploaded part: S3's (and GCS's) minimum for every part but the last, so a
/// large upload never needs more than this (times [`PARTS_IN_FLIGHT`]) in memory.
const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts uploaded concurrently; reading the request waits while this many are in flight.
const PARTS_IN_FLIGHT: usize = 2;

/// A cheap, cloneable handle on the configured object store.
#[derive(Clone)]
pub struct MediaStore {
    inner: Arc<dyn ObjectStore>,
    /// For `file://`: the folder, checked by [`MediaStore::ping`] (listing a missing folder
    /// is not an error for object_store).
    root: Option<PathBuf>,
    /// The URL without credentials or query, for logs.
    display: String,
}

impl fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaStore").field("url", &self.display).finish()
    }
}

/// What [`MediaStore::save_stream`] stored.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// The object's key in the store (`attachments.storage_key`).
    pub key: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes (`attachments.sha256`, the download's ETag).
    pub sha256: String,
    /// The sniffed type, one of [`model::ALLOWED`].
    pub content_type: &'static str,
    pub kind: MediaKind,
    /// The sanitised filename.
    pub filename: String,
}

impl MediaStore {
    /// Opens the store named by `url`:
    /// - `file://<path>` (relative paths are relative to the working directory): the folder is
    ///   created; writes are fsynced like the database's (`synchronous=FULL`).
    /// - `memory://`: in-process, lost on exit (tests).
    /// - `s3://bucket[/prefix]`, `gs://…`, `az://…`: configured from the usual environment
    ///   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for
    ///   S3-compatible stores, `AWS_ALLOW_HTTP=true` for plain-HTTP endpoints; `GOOGLE_*`,
    ///   `AZURE_*`), then from the URL's query string, whose keys are object_store's
    ///   configuration keys (`s3://b?aws_endpoint=http://127.0.0.1:9000&aws_allow_http=true`).
    pub fn open(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("file://") {
            let root = PathBuf::from(path);
            std::fs::create_dir_all(&root).with_context(|| format!("creating media folder {}", root.display()))?;
            let fs = LocalFileSystem::new_with_prefix(&root)
                .with_context(|| format!("opening media folder {}", root.display()))?
                .with_automatic_cleanup(true)
                .with_fsync(true);
            return Ok(Self { inner: Arc::new(fs), root: Some(root), display: url.to_owned() });
        }
        if url == "memory://" || url == "memory:///" {
            return Ok(Self { inner: Arc::new(InMemory::new()), root: None, display: url.to_owned() });
        }
        let mut parsed = url::Url::parse(url).context("CONFAB_MEDIA_URL is not a URL")?;
        let query: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        parsed.set_query(None);
        let _ = parsed.set_password(None);
        let display = parsed.to_string();
        if !matches!(parsed.scheme(), "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss") {
            bail!("unsupported CONFAB_MEDIA_URL scheme `{}` (file, memory, s3, gs, az)", parsed.scheme());
        }
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v));
        let (store, prefix) = object_store::parse_url_opts(&parsed, env.chain(query))
            .map_err(|e| anyhow!("opening media store {display}: {e}"))?;
        let inner: Arc<dyn ObjectStore> =
            if prefix.as_ref().is_empty() { Arc::from(store) } else { Arc::new(PrefixStore::new(store, prefix)) };
        Ok(Self { inner, root: None, display })
    }

    /// The underlying store (tests list it to prove nothing was left behind).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// A fresh key for a company's object: `{company_id}/{uuid v7}` (time-ordered, unguessable
    /// enough; access is checked on the attachment row anyway).
    pub fn new_key(company_id: i64) -> String {
        format!("{company_id}/{}", uuid::Uuid::now_v7().simple())
    }

    /// Stores a byte stream as a new object of `company_id` and returns what was stored.
    ///
    /// Guarantees, in order:
    /// - the type is sniffed from the first [`SNIFF_LEN`] bytes and checked against
    ///   `filename`'s extension ([`model::sniff`]): unknown, disallowed or mismatched → 415
    ///   `UnsupportedMediaType` before anything is written; an empty stream → 400;
    /// - the WhatsApp size limit of the sniffed kind is enforced while streaming: the moment
    ///   it is passed, the upload is aborted and 413 `PayloadTooLarge` is returned;
    /// - bytes go to the store in [`PART_SIZE`] parts (multipart upload), never whole in
    ///   memory; the size and SHA-256 are computed on the way;
    /// - on any error, and if the returned future is dropped before finishing, the upload is
    ///   aborted so no object or staged part is left behind.
    ///
    /// Errors of `body` are returned as they are (the caller maps its transport errors:
    /// a client's broken multipart is a 400, a provider's failed download something to retry).
    pub async fn save_stream<S>(&self, company_id: i64, filename: Option<&str>, body: S) -> ApiResult<StoredObject>
    where
        S: Stream<Item = ApiResult<Bytes>> + Unpin,
    {
        // Fused: the sniffing loop may already have seen the end of a short file.
        let mut body = body.fuse();
        let mut head = Vec::with_capacity(SNIFF_LEN);
        while head.len() < SNIFF_LEN {
            match body.try_next().await? {
                Some(chunk) => head.extend_from_slice(&chunk),
                None => break,
            }
        }
        if head.is_empty() {
            return Err(ApiError::field("file", "must not be empty"));
        }
        let allowed = model::sniff(&head, filename.unwrap_or_default()).map_err(|e: Rejection| {
            ApiError::UnsupportedMediaType(format!("{e}; accepted: images (JPEG, PNG, WebP), audio (AAC, MP4, MP3, AMR, OGG), video (MP4, 3GPP), documents (PDF, Word, Excel, PowerPoint, plain text)"))
        })?;
        let limit = allowed.kind.max_bytes();
        if head.len() as u64 > limit {
            return Err(ApiError::PayloadTooLarge);
        }

        let key = Self::new_key(company_id);
        let location = Path::from(key.as_str());
        let upload = self.inner.put_multipart(&location).await.context("starting media upload")?;
        let mut writer = Upload(Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)));
        let mut hasher = Sha256::new();
        let mut size = head.len() as u64;
        hasher.update(&head);
        writer.put(Bytes::from(head)).await?;

        let outcome: ApiResult<()> = async {
            while let Some(chunk) = body.try_next().await? {
                size += chunk.len() as u64;
                if size > limit {
                    return Err(ApiError::PayloadTooLarge);
                }
                hasher.update(&chunk);
                writer.put(chunk).await?;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => writer.finish().await?,
            Err(e) => {
                writer.abort(&key).await;
                return Err(e);
            }
        }
        Ok(StoredObject {
            key,
            size,
            sha256: hex::encode(hasher.finalize()),
            content_type: allowed.mime,
            kind: allowed.kind,
            filename: model::sanitize_filename(filename, allowed),
        })
    }

    /// The object's bytes, or the given byte range of them, as a stream.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> ApiResult<BoxStream<'static, Result<Bytes, object_store::Error>>> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        match self.inner.get_opts(&Path::from(key), options).await {
            Ok(res) => Ok(res.into_stream()),
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!(key, "attachment row without its object");
                Err(ApiError::NotFound)
            }
            Err(e) => Err(anyhow::Error::new(e).context("reading media").into()),
        }
    }

    /// Deletes an object; a missing one is not an error (deletes are retried by housekeeping).
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("deleting media")),
        }
    }

    /// Readiness (CONTRACT §1 `/readyz`): the store answers a listing within `timeout` (a
    /// missing bucket or bad credentials fail it); a local folder must exist.
    pub async fn ping(&self, timeout: Duration) -> anyhow::Result<()> {
        if let Some(root) = &self.root
            && !FsPath::new(root).is_dir()
        {
            bail!("media folder {} is missing", root.display());
        }
        let probe = Path::from("readyz-probe");
        tokio::time::timeout(timeout, self.inner.list_with_delimiter(Some(&probe)))
            .await
            .map_err(|_| anyhow!("media store did not answer within {timeout:?}"))?
            .map_err(|e| anyhow!("media store: {e}"))?;
        Ok(())
    }

    /// Every key under `{company_id}/` (tests and operators' checks).
    pub async fn list_company(&self, company_id: i64) -> anyhow::Result<Vec<String>> {
        let prefix = Path::from(company_id.to_string());
        let metas: Vec<_> = self.inner.list(Some(&prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }
}

/// A multipart upload in progress that aborts itself when dropped unfinished, so a request
/// cancelled mid-upload (the client went away) leaves no staged parts behind in S3 (the local
/// store removes its staging file on drop by itself).
struct Upload(Option<WriteMultipart>);

impl Upload {
    fn writer(&mut self) -> anyhow::Result<&mut WriteMultipart> {
        self.0.as_mut().ok_or_else(|| anyhow!("media upload already closed"))
    }

    /// Queues `chunk`, first waiting while [`PARTS_IN_FLIGHT`] parts are uploading
    /// (backpressure on the request body).
    async fn put(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        let w = self.writer()?;
        w.wait_for_capacity(PARTS_IN_FLIGHT).await.context("uploading media part")?;
        w.put(chunk);
        Ok(())
    }

    /// Uploads the last part and completes the upload (object_store aborts it when completing
    /// fails).
    async fn finish(mut self) -> anyhow::Result<()> {
        let w = self.0.take().ok_or_else(|| anyhow!("media upload already closed"))?;
        w.finish().await.context("completing media upload")?;
        Ok(())
    }

    async fn abort(mut self, key: &str) {
        if let Some(w) = self.0.take()
            && let Err(e) = w.abort().await
        {
            tracing::warn!(error = %e, key, "aborting a refused media upload failed");
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(w) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = w.abort().await {
                    tracing::warn!(error = %e, "aborting a cancelled media upload failed");
                }
            });
        }
    }
}
