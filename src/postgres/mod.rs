//! PostgreSQL glue shared by the SQL-facing functions: errors, argument
//! types, relation checks, SPI input and the catalog tables.

pub mod backend;
pub mod catalog;
pub mod cold_items;
pub mod errors;
pub mod interactions;
pub mod item_index;
pub mod item_vectors;
pub mod jobs;
pub mod model_cache;
pub mod models;
pub mod relation;
pub mod row_stream;
pub mod spi;
pub mod sql_types;
pub mod user_history;
pub mod xact;
