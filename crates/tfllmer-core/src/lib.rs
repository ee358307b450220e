//! The maths of tfllmer, free of PostgreSQL.
//!
//! Everything here is plain Rust tested with `cargo test -p tfllmer-core`;
//! the extension crate only moves data between SQL and these functions.

pub mod baselines;
pub mod cold;
pub mod embedding_codec;
pub mod graph;
pub mod graph_codec;
pub mod parallel;
pub mod ranking;
pub mod rec_pca;
pub mod sequences;
pub mod simd;
pub mod vocabulary;

pub use graph::{CooccurrenceGraph, Damping, Event, GraphError, GraphParams, Weighting};
