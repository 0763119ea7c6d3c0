//! Download slots of one origin host, shared by every worker invocation: the record behind
//! `ORIGIN_MAX_CONCURRENCY` (no more than that many downloads in flight per host across all
//! invocations) and behind a host-wide back-off after a 429 or 503.
//!
//! One record per host holds each holder's lease (a worker process: how many slots it may use,
//! until when) and the time before which nobody may start a download of the host. A holder
//! asks for the slots its own controller wants; it gets what the cap leaves after every other
//! unexpired lease. A lease expires by itself (a crashed invocation gives its slots back when
//! its lease runs out), and a holder renews it while it works. Writes are conditional on the
//! record's version (optimistic concurrency), so two holders never both take the last slot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One holder's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotLease {
    /// Slots held.
    pub n: u32,
    /// When the lease lapses, in milliseconds since the Unix epoch.
    pub exp: i64,
}

/// The shared record of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginSlotsRecord {
    /// Unexpired leases by holder id.
    #[serde(default)]
    pub leases: BTreeMap<String, SlotLease>,
    /// No download of the host may start before this (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_until: Option<i64>,
    /// Incremented by every write; writes are conditional on it.
    #[serde(default)]
    pub version: u64,
}

/// What a holder asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest<'a> {
    /// The asking holder (a worker process).
    pub holder: &'a str,
    /// Slots it wants; 0 gives its lease back.
    pub want: u32,
    /// Most slots of the host across every holder (`ORIGIN_MAX_CONCURRENCY`).
    pub cap: u32,
    /// How long the lease lasts unless renewed.
    pub ttl: Duration,
}

/// What a holder got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginLease {
    /// Slots it may use (at most what it asked for; 0 when others hold the whole cap).
    pub granted: u32,
    /// When its lease lapses (milliseconds since the Unix epoch); 0 for no lease.
    pub expires_at: i64,
    /// No download of the host may start before this (milliseconds since the Unix epoch).
    pub backoff_until: Option<i64>,
}

impl OriginSlotsRecord {
    /// Slots held by holders other than `holder` whose leases have not lapsed at `now_ms`.
    #[must_use]
    pub fn held_by_others(&self, holder: &str, now_ms: i64) -> u32 {
        self.leases
            .iter()
            .filter(|(h, l)| h.as_str() != holder && l.exp > now_ms)
            .map(|(_, l)| l.n)
            .sum()
    }

    /// Every slot held at `now_ms`.
    #[must_use]
    pub fn held(&self, now_ms: i64) -> u32 {
        self.leases
            .values()
            .filter(|l| l.exp > now_ms)
            .map(|l| l.n)
            .sum()
    }

    /// Applies `request` at `now_ms`: drops lapsed leases, grants the holder
    /// `min(want, cap − held by others)` and renews its lease when it is less than half its
    /// time-to-live from lapsing. Returns the lease and whether the record changed (and so must
    /// be written, conditional on the version it was read at).
    pub fn lease(&mut self, request: LeaseRequest<'_>, now_ms: i64) -> (OriginLease, bool) {
        let before = self.clone();
        self.leases.retain(|_, l| l.exp > now_ms);
        if self.backoff_until.is_some_and(|b| b <= now_ms) {
            self.backoff_until = None;
        }
        let ttl_ms = i64::try_from(request.ttl.as_millis()).unwrap_or(i64::MAX / 4);
        let available = request
            .cap
            .saturating_sub(self.held_by_others(request.holder, now_ms));
        let granted = request.want.min(available);
        if granted == 0 {
            self.leases.remove(request.holder);
        } else {
            let renew = now_ms + ttl_ms;
            let lease = self
                .leases
                .entry(request.holder.to_owned())
                .or_insert(SlotLease { n: 0, exp: 0 });
            if lease.n != granted || lease.exp - now_ms < ttl_ms / 2 {
                *lease = SlotLease {
                    n: granted,
                    exp: renew,
                };
            }
        }
        let changed = *self != before;
        if changed {
            self.version = before.version + 1;
        }
        let expires_at = self.leases.get(request.holder).map_or(0, |l| l.exp);
        (
            OriginLease {
                granted,
                expires_at,
                backoff_until: self.backoff_until,
            },
            changed,
        )
    }

    /// Sets the host's back-off to end no earlier than `until_ms`. Returns whether the record
    /// changed.
    pub fn back_off(&mut self, until_ms: i64) -> bool {
        if self.backoff_until.is_some_and(|b| b >= until_ms) {
            return false;
        }
        self.backoff_until = Some(until_ms);
        self.version += 1;
        true
    }

    /// When the record may be deleted (DynamoDB TTL, seconds since the Unix epoch): a day after
    /// its last lease or back-off ends.
    #[must_use]
    pub fn expires_at_secs(&self) -> i64 {
        let last = self
            .leases
            .values()
            .map(|l| l.exp)
            .chain(self.backoff_until)
            .max()
            .unwrap_or(0);
        last / 1000 + 86_400
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(holder: &str, want: u32) -> LeaseRequest<'_> {
        LeaseRequest {
            holder,
            want,
            cap: 32,
            ttl: Duration::from_secs(30),
        }
    }

    #[test]
    fn holders_share_the_cap_and_never_exceed_it() {
        let mut record = OriginSlotsRecord::default();
        let (a, changed) = record.lease(ask("a", 20), 0);
        assert_eq!((a.granted, changed), (20, true));
        let (b, _) = record.lease(ask("b", 20), 0);
        assert_eq!(b.granted, 12);
        assert_eq!(record.held(0), 32);
        // a gives some back; b grows into them.
        record.lease(ask("a", 4), 1);
        let (b, _) = record.lease(ask("b", 20), 2);
        assert_eq!(b.granted, 20);
        assert_eq!(record.held(2), 24);
    }

    #[test]
    fn a_lapsed_lease_frees_its_slots_and_an_unchanged_one_is_not_rewritten() {
        let mut record = OriginSlotsRecord::default();
        record.lease(ask("crashed", 32), 0);
        let (other, _) = record.lease(ask("b", 8), 1_000);
        assert_eq!(other.granted, 0);
        let (other, _) = record.lease(ask("b", 8), 30_001);
        assert_eq!(other.granted, 8);
        assert!(!record.leases.contains_key("crashed"));
        let version = record.version;
        let (_, changed) = record.lease(ask("b", 8), 31_000);
        assert!(!changed);
        assert_eq!(record.version, version);
        // Renewed once less than half its time is left.
        let (renewed, changed) = record.lease(ask("b", 8), 46_000);
        assert!(changed);
        assert_eq!(renewed.expires_at, 76_000);
    }

    #[test]
    fn giving_everything_back_removes_the_lease() {
        let mut record = OriginSlotsRecord::default();
        record.lease(ask("a", 5), 0);
        let (lease, changed) = record.lease(ask("a", 0), 1);
        assert_eq!((lease.granted, lease.expires_at, changed), (0, 0, true));
        assert!(record.leases.is_empty());
    }

    #[test]
    fn a_back_off_is_seen_by_every_holder_until_it_ends() {
        let mut record = OriginSlotsRecord::default();
        assert!(record.back_off(5_000));
        assert!(
            !record.back_off(4_000),
            "an earlier end does not shorten it"
        );
        let (lease, _) = record.lease(ask("a", 4), 1_000);
        assert_eq!(lease.backoff_until, Some(5_000));
        let (lease, _) = record.lease(ask("a", 4), 5_000);
        assert_eq!(lease.backoff_until, None);
        assert_eq!(record.expires_at_secs(), 31 + 86_400);
    }
}
