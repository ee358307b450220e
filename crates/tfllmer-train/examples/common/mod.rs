//! Setup shared by the timing examples: a model configuration of
//! MovieLens-1M's shape and random histories.

use tfllmer_train::model::{Backbone, ModelConfig};
use tfllmer_train::rng::SplitMix64;
use tfllmer_train::DType;

/// The backbone named by command-line argument `i` ("gru4rec"; SASRec otherwise).
pub fn backbone_arg(i: usize) -> Backbone {
    if std::env::args().nth(i).as_deref() == Some("gru4rec") {
        Backbone::Gru4Rec
    } else {
        Backbone::SasRec
    }
}

/// An f32 model of dim 64 and one head, normalised items, dropout 0.2.
pub fn config(backbone: Backbone, n_items: usize, max_len: usize, layers: usize) -> ModelConfig {
    ModelConfig {
        backbone,
        n_items,
        dim: 64,
        max_len,
        layers,
        heads: 1,
        dropout: 0.2,
        normalize: true,
        dtype: DType::F32,
        temperature: None,
    }
}

/// `count` sequences of `len` uniform random tokens in 1..=n_items.
pub fn random_sequences(rng: &mut SplitMix64, count: usize, len: usize, n_items: usize) -> Vec<Vec<u32>> {
    (0..count).map(|_| (0..len).map(|_| 1 + (rng.next_u64() % n_items as u64) as u32).collect()).collect()
}
