//! Embedded backends: an in-memory repository whose change log feeds a simulated DynamoDB
//! stream, an in-memory queue with SQS semantics, and a directory-backed object store. They
//! enforce AWS's documented limits and, through a [`FaultInjector`], meet its failure modes.

pub mod capacity;
mod dir_store;
pub mod faults;
mod file_keys;
mod memory_origin_slots;
mod memory_queue;
mod memory_repository;

pub use capacity::{CapacityModel, Consumed};
pub use dir_store::{DirObjectStore, UploadPolicy};
pub use faults::{Call, FaultInjector, Faults, InjectedFault};
pub use file_keys::FileKeyStore;
pub use memory_origin_slots::{InMemoryOriginSlots, SlotCalls};
pub use memory_queue::{InMemoryRowQueue, ReceivedMessage};
pub use memory_repository::{ChangeKind, ChangeRecord, InMemoryRequestRepository};
