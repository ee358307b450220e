//! tfllmer's sequential recommenders, free of PostgreSQL: SASRec and
//! GRU4Rec with TF-LLMER's item-embedding normalisation (METHOD.md,
//! component 1), and the reference training scheme.
//!
//! Everything random (initialisation, dropout masks) comes from a seeded
//! generator of our own ([`rng::SplitMix64`]): candle's CPU RNG cannot be
//! seeded, and runs must be reproducible for a given seed.

mod kernels;
pub mod loss;
pub mod model;
pub mod ops;
pub mod options;
pub mod plot;
pub mod rng;
pub mod scorer;
pub mod softmax;
pub mod threads;
pub mod train;

/// The tensor element type of a [`model::ModelConfig`].
pub use candle_core::DType;
