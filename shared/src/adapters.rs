//! Port implementations. `local`: embedded backends for the CLI and tests.

pub mod local;
