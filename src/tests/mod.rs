//! `#[pg_test]`s: SQL behaviour checked from Rust inside a real backend.
//! Bad-input cases with their SQLSTATEs live in tests/pg_regress.

mod graphs;
