//! In-memory [`OriginSlots`]: the shared record of each host ([`OriginSlotsRecord`]) behind one
//! lock, written only when it changes, as the DynamoDB adapter writes it. It counts its reads
//! and writes, so the cost of the bound in DynamoDB requests per image can be measured, and a
//! [`FaultInjector`] can throttle its calls like any DynamoDB call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::faults::{Call, FaultInjector, Faults, lock};
use pixpress_app::ports::{OriginSlots, PortError};
use pixpress_app::retry::{RetryPolicy, retry};
use pixpress_domain::origin_slots::{LeaseRequest, OriginLease, OriginSlotsRecord};

/// Reads and writes an [`InMemoryOriginSlots`] has served (each as one DynamoDB request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotCalls {
    /// Strongly consistent `GetItem`s.
    pub reads: u64,
    /// Conditional `PutItem`s.
    pub writes: u64,
}

/// Host records in memory. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct InMemoryOriginSlots {
    hosts: Arc<Mutex<HashMap<String, OriginSlotsRecord>>>,
    reads: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    faults: Faults,
}

impl InMemoryOriginSlots {
    /// The same store, meeting `faults` before each call.
    #[must_use]
    pub fn with_faults(mut self, faults: Arc<dyn FaultInjector>) -> Self {
        self.faults = Faults::new(faults);
        self
    }

    /// Reads and writes served so far.
    #[must_use]
    pub fn calls(&self) -> SlotCalls {
        SlotCalls {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    /// The record of `host`, if any.
    #[must_use]
    pub fn record(&self, host: &str) -> Option<OriginSlotsRecord> {
        self.hosts.lock().ok()?.get(host).cloned()
    }

    fn update<T>(
        &self,
        host: &str,
        change: impl FnOnce(&mut OriginSlotsRecord) -> (T, bool),
    ) -> Result<T, PortError> {
        self.faults.check(Call::Read)?;
        self.faults.check(Call::Write)?;
        let mut hosts = lock(&self.hosts, "origin slots")?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let record = hosts.entry(host.to_owned()).or_default();
        let (value, changed) = change(record);
        if changed {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(value)
    }
}

impl OriginSlots for InMemoryOriginSlots {
    async fn lease(
        &self,
        host: &str,
        request: LeaseRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<OriginLease, PortError> {
        // Throttling and conflicts are retried in process, as the DynamoDB adapter retries them.
        retry(&RetryPolicy::STORAGE, "leasing download slots", || async {
            self.update(host, |record| record.lease(request, now.timestamp_millis()))
        })
        .await
    }

    async fn back_off(&self, host: &str, until: DateTime<Utc>) -> Result<(), PortError> {
        retry(&RetryPolicy::STORAGE, "backing off a host", || async {
            self.update(host, |record| {
                ((), record.back_off(until.timestamp_millis()))
            })
        })
        .await
    }
}
