//! Pure domain code: the CSV contract, the request/row model, status rules and storage keys.
//! Nothing here performs I/O, reads a clock or names an SDK: times and ids come in as arguments.

pub mod counting;
pub mod image_limits;
pub mod input_csv;
pub mod item;
pub mod keys;
pub mod model;
pub mod origin_slots;
pub mod output_csv;
pub mod text;
