//! tfllmer's sequential recommenders, free of PostgreSQL: SASRec and
//! GRU4Rec with TF-LLMER's item-embedding normalisation (METHOD.md,
//! component 1), and the reference training scheme.
//!
//! Everything random (initialisation, dropout masks) comes from a seeded
//! generator of our own ([`rng::SplitMix64`]): candle's CPU RNG cannot be
//! seeded, and runs must be reproducible for a given seed.

pub mod init;
mod kernels;
pub mod loss;
pub mod model;
pub mod model_file;
pub mod ops;
mod optim;
pub mod options;
pub mod plot;
pub mod rng;
pub mod sampling;
pub mod scorer;
pub mod threads;
pub mod train;

/// L2 normalisation of item rows as the model's item table does it
/// (e / sqrt(‖e‖² + 1e-24), zero rows stay zero).
pub use kernels::normalize_rows;

/// The tensor element type of a [`model::ModelConfig`].
pub use candle_core::DType;
pub use candle_core::Error;

/// A candle error as a message for a user: without the backtrace candle
/// attaches when RUST_BACKTRACE is set in the server's environment.
pub fn error_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => error_message(inner),
        candle_core::Error::Context { inner, context } => format!("{context}: {}", error_message(inner)),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_messages_leave_backtraces_out() {
        let inner = candle_core::Error::Msg("the model file lacks item".into());
        let wrapped = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(super::error_message(&wrapped), "the model file lacks item");
    }
}
