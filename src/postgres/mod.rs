//! PostgreSQL glue shared by the SQL-facing functions: errors, argument
//! types, relation checks, SPI input and the catalog tables.

pub mod errors;
pub mod graph_store;
pub mod interactions;
pub mod relation;
pub mod sql_types;
