//! The SQL-facing functions, one module per capability. Each checks its
//! arguments, moves data through SPI, calls `tfllmer_core`, and reports.

pub mod cold_items;
pub mod embeddings;
pub mod evaluation;
pub mod graphs;
pub mod item_index;
pub mod recommend;
pub mod training;
