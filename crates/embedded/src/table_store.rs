//! Where the embedded backends keep what grows with a catalogue — a request's row items, a
//! queue's messages: a [redb](https://docs.rs/redb) database, in memory or in a file.
//!
//! A file keeps the process's memory bounded whatever the row count: redb holds at most its
//! page cache ([`CACHE_BYTES`]) of it in memory. The file is created under the directory given
//! and unlinked at once, so it lives exactly as long as the process and is never served or left
//! behind; its contents are scratch, like everything else the embedded backends hold.
//!
//! Commits are not made durable one by one (`Durability::None`: nothing here must survive the
//! process), but every [`SYNC_EVERY`] commits one is, because redb frees the pages earlier
//! commits released only on a durable commit.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::anyhow;
use redb::backends::{FileBackend, InMemoryBackend};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};

use pixpress_app::ports::PortError;

/// Bytes of the file redb keeps cached in memory (its page cache and write buffer).
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Every this many commits, one is made durable so that the pages freed since are reused.
pub const SYNC_EVERY: u64 = 4_096;

/// Where an embedded backend keeps its large tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TableStorage {
    /// In the process's memory (tests, small runs).
    #[default]
    Memory,
    /// In an unlinked file under this directory (`pixpress run` and `serve`: memory bounded
    /// whatever the catalogue's size).
    Dir(std::path::PathBuf),
}

/// A redb database (or why it could not be created, reported by every call) and its commit
/// count.
pub(crate) struct TableStore {
    db: Result<Database, String>,
    commits: AtomicU64,
}

impl fmt::Debug for TableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableStore")
            .field("commits", &self.commits)
            .finish_non_exhaustive()
    }
}

impl Default for TableStore {
    fn default() -> Self {
        Self::in_memory()
    }
}

pub(crate) fn store_error(e: impl fmt::Display) -> PortError {
    PortError::Unexpected(anyhow!("embedded table: {e}"))
}

impl TableStore {
    /// An empty store in memory (creating it fails only if redb cannot allocate; then every
    /// call reports it).
    pub(crate) fn in_memory() -> Self {
        let db = redb::Builder::new()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|e| e.to_string());
        Self {
            db,
            commits: AtomicU64::new(0),
        }
    }

    fn db(&self) -> Result<&Database, PortError> {
        self.db
            .as_ref()
            .map_err(|e| store_error(format!("the in-memory database could not be created: {e}")))
    }

    /// An empty store as `storage` says; `name` tells the file apart (`rows`, `queue`).
    ///
    /// # Errors
    /// When the file cannot be created in the directory.
    pub(crate) fn open(storage: &TableStorage, name: &str) -> Result<Self, PortError> {
        let TableStorage::Dir(dir) = storage else {
            return Ok(Self::in_memory());
        };
        Self::in_dir(dir, name)
    }

    fn in_dir(dir: &Path, name: &str) -> Result<Self, PortError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir)
            .map_err(|e| store_error(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(format!(
            ".pixpress-{name}-{}-{}.redb",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| store_error(format!("creating {}: {e}", path.display())))?;
        // The open file outlives its name: nothing is left behind, whatever ends the process.
        std::fs::remove_file(&path)
            .map_err(|e| store_error(format!("unlinking {}: {e}", path.display())))?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(FileBackend::new(file))
            .map_err(store_error)?;
        Ok(Self {
            db: Ok(db),
            commits: AtomicU64::new(0),
        })
    }

    /// Runs `f` in a read transaction.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, PortError> {
        let txn = self.db()?.begin_read().map_err(store_error)?;
        f(&txn).map_err(store_error)
    }

    /// Runs `f` in a write transaction and commits it (durably every [`SYNC_EVERY`] commits).
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, PortError> {
        let mut txn = self.db()?.begin_write().map_err(store_error)?;
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(SYNC_EVERY) {
            txn.set_durability(Durability::None).map_err(store_error)?;
        }
        let out = f(&txn).map_err(store_error)?;
        txn.commit().map_err(store_error)?;
        Ok(out)
    }
}
