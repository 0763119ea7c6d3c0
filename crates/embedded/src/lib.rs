//! Embedded backends: a repository whose change log feeds a simulated DynamoDB stream, a
//! queue with SQS semantics, and a directory-backed object store. They enforce AWS's
//! documented limits and, through a [`FaultInjector`], meet its failure modes. What grows with
//! a catalogue — row items, queued messages — is kept in memory or in a file
//! ([`TableStorage`]); the rest (requests, counter shards, the change log) in memory.

pub mod capacity;
mod dir_store;
pub mod faults;
mod file_keys;
mod memory_origin_slots;
mod queue;
mod repository;
mod row_table;
mod table_store;

pub use capacity::{CapacityModel, Consumed};
pub use dir_store::{DirObjectStore, UploadPolicy};
pub use faults::{Call, FaultInjector, Faults, InjectedFault};
pub use file_keys::FileKeyStore;
pub use memory_origin_slots::{InMemoryOriginSlots, SlotCalls};
pub use queue::{EmbeddedQueue, ReceivedMessage};
pub use repository::{ChangeKind, ChangeRecord, EmbeddedRequestRepository};
pub use table_store::{CACHE_BYTES, SYNC_EVERY, TableStorage};
