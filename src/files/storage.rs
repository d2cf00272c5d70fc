//! Where file bytes live: the local filesystem by default, S3-compatible object storage for
//! deployments with several nodes. Both go through `object_store`, so the rest of jobgraph
//! sees one interface: write a stream under a key, read (a range of) it back as a stream, copy,
//! and delete everything under a prefix.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt as _;

use crate::config::ServerConfig;

/// The storage backend.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// `local` or `s3`, for logs.
    pub backend: &'static str,
}

/// Bytes being read back, with the range they cover and the object's whole size.
pub struct Read {
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
    pub range: Range<u64>,
    pub size: u64,
}

impl Storage {
    /// The backend the configuration names; `local` stores under `data_dir/files`.
    pub fn from_config(config: &ServerConfig, data_dir: &FsPath) -> anyhow::Result<Self> {
        match config.storage.strip_prefix("s3://") {
            None => Self::local(&data_dir.join("files")),
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(&config.s3_region);
                if let Some(endpoint) = &config.s3_endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(key) = &config.s3_access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &config.s3_secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder.build().context("configuring S3 storage")?;
                let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(
                        store,
                        prefix.trim_matches('/'),
                    ))
                };
                Ok(Storage {
                    store,
                    backend: "s3",
                })
            }
        }
    }

    /// Files under `dir`, created if missing.
    pub fn local(dir: &FsPath) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the file storage folder {}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .context("opening the file storage folder")?
            .with_automatic_cleanup(true);
        Ok(Storage {
            store: Arc::new(store),
            backend: "local",
        })
    }

    /// A writer for a new object at `key`: small objects go in one request, large ones in
    /// parts. Nothing is visible under `key` until `Writer::finish`.
    pub fn writer(&self, key: &str) -> Writer {
        Writer(BufWriter::new(self.store.clone(), Path::from(key)))
    }

    /// Reads an object, or the given byte range of it, as a stream.
    pub async fn read(&self, key: &str, range: Option<Range<u64>>) -> anyhow::Result<Read> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = self
            .store
            .get_opts(&Path::from(key), options)
            .await
            .with_context(|| format!("reading the stored object {key}"))?;
        let range = result.range.clone();
        let size = result.meta.size;
        let stream = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok(Read {
            stream,
            range,
            size,
        })
    }

    /// Copies an object.
    pub async fn copy(&self, from: &str, to: &str) -> anyhow::Result<()> {
        self.store
            .copy(&Path::from(from), &Path::from(to))
            .await
            .with_context(|| format!("copying the stored object {from}"))
    }

    /// The keys under a prefix (a folder: `a/b` lists `a/b/...`).
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let prefix = Path::from(prefix);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .with_context(|| format!("listing stored objects under {prefix}"))?;
        let mut keys: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes one object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("deleting the stored object {key}")),
        }
    }

    /// Deletes every object under a prefix.
    pub async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<()> {
        for key in self.list(prefix).await? {
            self.delete(&key).await?;
        }
        Ok(())
    }
}

/// A new object being written.
pub struct Writer(BufWriter);

impl Writer {
    pub async fn write(&mut self, bytes: Bytes) -> anyhow::Result<()> {
        self.0.put(bytes).await.context("writing to storage")
    }

    /// Completes the object.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.0
            .shutdown()
            .await
            .context("completing a stored object")
    }

    /// Gives up: nothing is left under the key.
    pub async fn abort(mut self) {
        if let Err(err) = self.0.abort().await {
            tracing::warn!(error = %err, "aborting a stored object failed");
        }
    }
}
