//! The embedded repository's row items, keyed as DynamoDB sorts them within a request: by
//! request, then row index. Held in a [`TableStore`] (memory or an unlinked file), so a
//! catalogue's million rows need not fit in memory.

use redb::{ReadableTable, TableDefinition};

use super::table_store::{TableStorage, TableStore, store_error};
use pixpress_app::ports::PortError;
use pixpress_domain::model::RowRecord;

/// `(request id, row index)` → the row as JSON.
const ROWS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("rows");

/// Row items of every request.
#[derive(Debug, Default)]
pub(crate) struct RowTable {
    store: TableStore,
}

fn encode(row: &RowRecord) -> Result<Vec<u8>, PortError> {
    serde_json::to_vec(row).map_err(store_error)
}

fn decode(bytes: &[u8]) -> Result<RowRecord, redb::Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| redb::Error::Corrupted(format!("a stored row does not decode: {e}")))
}

impl RowTable {
    /// An empty table kept as `storage` says.
    pub(crate) fn open(storage: &TableStorage) -> Result<Self, PortError> {
        Ok(Self {
            store: TableStore::open(storage, "rows")?,
        })
    }

    /// Row `index` of `request_id`, if written.
    pub(crate) fn get(&self, request_id: &str, index: u32) -> Result<Option<RowRecord>, PortError> {
        self.store.read(|txn| {
            let table = match txn.open_table(ROWS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            table
                .get((request_id, index))?
                .map(|value| decode(value.value()))
                .transpose()
        })
    }

    /// Writes `row` of `request_id`, replacing what was there.
    pub(crate) fn put(&self, request_id: &str, row: &RowRecord) -> Result<(), PortError> {
        let bytes = encode(row)?;
        self.store.write(|txn| {
            txn.open_table(ROWS)?
                .insert((request_id, row.index), bytes.as_slice())?;
            Ok(())
        })
    }

    /// Writes those of `rows` that `request_id` does not have yet (one commit).
    pub(crate) fn put_new(&self, request_id: &str, rows: &[RowRecord]) -> Result<(), PortError> {
        let encoded = rows
            .iter()
            .map(|row| Ok((row.index, encode(row)?)))
            .collect::<Result<Vec<_>, PortError>>()?;
        self.store.write(|txn| {
            let mut table = txn.open_table(ROWS)?;
            for (index, bytes) in &encoded {
                if table.get((request_id, *index))?.is_none() {
                    table.insert((request_id, *index), bytes.as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// Rows of `request_id` with indices in `start..end`, in index order, at most `limit`.
    pub(crate) fn range(
        &self,
        request_id: &str,
        start: u32,
        end: Option<u32>,
        limit: usize,
    ) -> Result<Vec<RowRecord>, PortError> {
        self.store.read(|txn| {
            let table = match txn.open_table(ROWS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            let range = match end {
                Some(end) if end <= start => return Ok(rows),
                Some(end) => table.range((request_id, start)..(request_id, end))?,
                None => table.range((request_id, start)..=(request_id, u32::MAX))?,
            };
            for entry in range.take(limit) {
                let (_, value) = entry?;
                rows.push(decode(value.value())?);
            }
            Ok(rows)
        })
    }

    /// Calls `f` on every row of `request_id` in index order (a `Query` of its partition
    /// reads them all; memory holds one at a time).
    pub(crate) fn for_each(
        &self,
        request_id: &str,
        mut f: impl FnMut(&RowRecord) -> Result<(), PortError>,
    ) -> Result<(), PortError> {
        let mut start = 0;
        loop {
            let page = self.range(request_id, start, None, 1_000)?;
            let Some(last) = page.last().map(|r| r.index) else {
                return Ok(());
            };
            for row in &page {
                f(row)?;
            }
            match last.checked_add(1) {
                Some(next) => start = next,
                None => return Ok(()),
            }
        }
    }
}
