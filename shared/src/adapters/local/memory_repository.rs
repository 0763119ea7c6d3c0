//! In-memory [`RequestRepository`] with a change log shaped like a DynamoDB stream
//! (`NEW_AND_OLD_IMAGES`): every write appends one record per changed item, in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::item::{MetaItem, RowItem};
use crate::domain::keys::{META_SK, request_pk, row_sk};
use crate::domain::model::{
    DeliveryState, Failure, ImageOutcome, RequestMeta, RequestStatus, RowRecord, RowState,
    WebhookAttempt,
};
use crate::ports::{Created, PortError, RequestRepository, RowPage, RowRecorded, Transition};

/// Kind of change, as in a DynamoDB stream record's `eventName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `INSERT`.
    Insert,
    /// `MODIFY`.
    Modify,
}

impl ChangeKind {
    /// The stream's `eventName`.
    #[must_use]
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Modify => "MODIFY",
        }
    }
}

/// One change of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// The stream's `SequenceNumber`: decimal digits, increasing within a shard.
    pub sequence: String,
    /// Insert or modify.
    pub kind: ChangeKind,
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
    /// Item before the change (modify only).
    pub old_image: Option<serde_dynamo::Item>,
    /// Item after the change.
    pub new_image: serde_dynamo::Item,
}

#[derive(Debug, Default)]
struct State {
    requests: HashMap<String, RequestMeta>,
    rows: HashMap<String, BTreeMap<u32, RowRecord>>,
    log: Vec<ChangeRecord>,
    sequence: u64,
}

fn to_item<T: Serialize>(value: &T) -> Result<serde_dynamo::Item, PortError> {
    serde_dynamo::to_item(value).map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))
}

impl State {
    fn log(
        &mut self,
        pk: String,
        sk: String,
        old: Option<serde_dynamo::Item>,
        new: serde_dynamo::Item,
    ) {
        self.sequence += 1;
        self.log.push(ChangeRecord {
            sequence: format!("{:021}", self.sequence),
            kind: if old.is_some() {
                ChangeKind::Modify
            } else {
                ChangeKind::Insert
            },
            pk,
            sk,
            old_image: old,
            new_image: new,
        });
    }

    /// Applies `change` to a request record and logs old/new images; a no-op if `change`
    /// returns `false`.
    fn update_meta(
        &mut self,
        request_id: &str,
        change: impl FnOnce(&mut RequestMeta) -> bool,
    ) -> Result<bool, PortError> {
        let Some(meta) = self.requests.get_mut(request_id) else {
            return Ok(false);
        };
        let old = meta.clone();
        if !change(meta) {
            return Ok(false);
        }
        let new = meta.clone();
        let old_item = to_item(&MetaItem::new(old, None))?;
        let new_item = to_item(&MetaItem::new(new, None))?;
        self.log(
            request_pk(request_id),
            META_SK.to_owned(),
            Some(old_item),
            new_item,
        );
        Ok(true)
    }
}

/// The in-memory repository. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct InMemoryRequestRepository {
    state: Arc<Mutex<State>>,
}

impl InMemoryRequestRepository {
    /// An empty repository.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, PortError> {
        self.state
            .lock()
            .map_err(|_| PortError::Unexpected(anyhow!("repository lock poisoned")))
    }

    /// Removes and returns every change recorded since the last call, oldest first.
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn drain_changes(&self) -> Result<Vec<ChangeRecord>, PortError> {
        Ok(std::mem::take(&mut self.lock()?.log))
    }
}

impl RequestRepository for InMemoryRequestRepository {
    async fn create_request(
        &self,
        meta: &RequestMeta,
        rows: &[RowRecord],
    ) -> Result<Created, PortError> {
        let mut state = self.lock()?;
        if let Some(existing) = state.requests.get(&meta.request_id) {
            return Ok(Created::AlreadyExists(Box::new(existing.clone())));
        }
        let id = meta.request_id.clone();
        let meta_item = to_item(&MetaItem::new(meta.clone(), None))?;
        let row_items = rows
            .iter()
            .map(|r| to_item(&RowItem::new(&id, r.clone(), None)).map(|item| (r.index, item)))
            .collect::<Result<Vec<_>, _>>()?;
        state.requests.insert(id.clone(), meta.clone());
        state.rows.insert(
            id.clone(),
            rows.iter().map(|r| (r.index, r.clone())).collect(),
        );
        state.log(request_pk(&id), META_SK.to_owned(), None, meta_item);
        for (index, item) in row_items {
            state.log(request_pk(&id), row_sk(index), None, item);
        }
        Ok(Created::Inserted)
    }

    async fn get_request(&self, request_id: &str) -> Result<Option<RequestMeta>, PortError> {
        Ok(self.lock()?.requests.get(request_id).cloned())
    }

    async fn list_rows(
        &self,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<RowPage, PortError> {
        let state = self.lock()?;
        let Some(rows) = state.rows.get(request_id) else {
            return Ok(RowPage::default());
        };
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut page: Vec<RowRecord> = rows
            .range(start..)
            .take(limit.max(1) as usize + 1)
            .map(|(_, r)| r.clone())
            .collect();
        let next = if page.len() > limit.max(1) as usize {
            page.pop();
            page.last().map(|r| r.index)
        } else {
            None
        };
        Ok(RowPage { rows: page, next })
    }

    async fn mark_processing(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let applied = self.lock()?.update_meta(request_id, |meta| {
            if meta.status != RequestStatus::Pending {
                return false;
            }
            meta.status = RequestStatus::Processing;
            meta.updated_at = now;
            true
        })?;
        Ok(if applied {
            Transition::Applied(RequestStatus::Processing)
        } else {
            Transition::NotApplied
        })
    }

    async fn mark_failed(
        &self,
        request_id: &str,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let applied = self.lock()?.update_meta(request_id, |meta| {
            if meta.status.is_terminal() {
                return false;
            }
            meta.status = RequestStatus::Failed;
            meta.failure = Some(failure.clone());
            meta.updated_at = now;
            meta.completed_at = Some(now);
            true
        })?;
        Ok(if applied {
            Transition::Applied(RequestStatus::Failed)
        } else {
            Transition::NotApplied
        })
    }

    async fn record_row_outcome(
        &self,
        request_id: &str,
        row_index: u32,
        images: &[ImageOutcome],
        now: DateTime<Utc>,
    ) -> Result<RowRecorded, PortError> {
        let mut state = self.lock()?;
        let Some(row) = state
            .rows
            .get_mut(request_id)
            .and_then(|rows| rows.get_mut(&row_index))
        else {
            return Err(PortError::Unexpected(anyhow!(
                "row {row_index} of request {request_id} does not exist"
            )));
        };
        if row.state == RowState::Done {
            return Ok(RowRecorded::AlreadyRecorded);
        }
        let old_row = row.clone();
        row.state = RowState::Done;
        row.images = images.to_vec();
        let new_row = row.clone();
        let old_item = to_item(&RowItem::new(request_id, old_row, None))?;
        let new_item = to_item(&RowItem::new(request_id, new_row, None))?;
        state.log(
            request_pk(request_id),
            row_sk(row_index),
            Some(old_item),
            new_item,
        );
        let mut counters = None;
        state.update_meta(request_id, |meta| {
            meta.counters.add_row(images);
            meta.updated_at = now;
            counters = Some(meta.counters);
            true
        })?;
        counters
            .map(RowRecorded::Recorded)
            .ok_or_else(|| PortError::Unexpected(anyhow!("request {request_id} does not exist")))
    }

    async fn complete(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let mut status = None;
        self.lock()?.update_meta(request_id, |meta| {
            if meta.status.is_terminal() {
                return false;
            }
            let Some(terminal) = meta.counters.terminal_status() else {
                return false;
            };
            meta.status = terminal;
            meta.updated_at = now;
            meta.completed_at = Some(now);
            status = Some(terminal);
            true
        })?;
        Ok(status.map_or(Transition::NotApplied, Transition::Applied))
    }

    async fn record_output_csv(
        &self,
        request_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.lock()?.update_meta(request_id, |meta| {
            meta.output_csv_key = Some(key.to_owned());
            meta.updated_at = now;
            true
        })?;
        Ok(())
    }

    async fn record_webhook_attempt(
        &self,
        request_id: &str,
        attempt: &WebhookAttempt,
        state: DeliveryState,
    ) -> Result<(), PortError> {
        self.lock()?.update_meta(request_id, |meta| {
            let Some(webhook) = meta.webhook.as_mut() else {
                return false;
            };
            webhook.attempts.push(attempt.clone());
            webhook.state = state;
            true
        })?;
        Ok(())
    }
}
