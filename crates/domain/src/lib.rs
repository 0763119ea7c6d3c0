//! # pixpress-domain — the pure core
//!
//! The CSV contract ([`input_csv`], [`output_csv`]), the request/row model and status rules
//! ([`model`], [`counting`]), storage keys and the DynamoDB item schema ([`storage_keys`], [`item`]),
//! text bounds ([`text`]), decode limits ([`image_limits`]), per-host download leases
//! ([`origin_slots`]), the egress policy and the fetcher's failure vocabulary ([`egress`]), and
//! Standard Webhooks signing ([`webhook`]).
//!
//! Nothing here performs I/O, reads a clock or names an SDK: times and ids come in as
//! arguments. Every other crate of the workspace depends on this one.

pub mod counting;
pub mod egress;
pub mod image_limits;
pub mod input_csv;
pub mod item;
pub mod model;
pub mod origin_slots;
pub mod output_csv;
pub mod storage_keys;
pub mod text;
pub mod webhook;
