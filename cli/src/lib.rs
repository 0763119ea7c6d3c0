//! # pixpress CLI — the whole pipeline in one process, and tools around it
//!
//! The pipeline itself (the function apps, the pump, fault injection) lives in
//! `pixpress-local`; this crate adds the commands: `run` ([`run`]), `demo` ([`demo`]), `serve`
//! ([`serve`]), `invoke` ([`invoke`]), and `submit`, `status` and `download`, a client of a
//! deployed API ([`client`]).

pub mod client;
pub mod demo;
pub mod invoke;
pub mod run;
pub mod serve;

pub use pixpress_local::{emulator, events, faults, pipeline};
