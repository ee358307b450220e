//! The initial item table of a model (METHOD.md, component 1): one row per
//! token from a stored embedding (Rec-PCA or PCA output), unit length, as
//! the reference initialises it; an item the embedding does not cover
//! starts at a random direction.

use tfllmer_core::embedding_codec::StoredEmbedding;
use tfllmer_core::vocabulary::Vocabulary;

use crate::kernels::normalize_rows;
use crate::rng::SplitMix64;

/// The init rows and what the user should hear about them.
pub struct InitialTable {
    /// n_items × dim, row t − 1 for token t, each row of unit length (a
    /// zero embedding row stays zero)
    pub rows: Vec<f32>,
    /// items without a row in the embedding (they start random)
    pub missing: usize,
}

/// Rows of `embedding` in the token order of `items`, L2-normalised; an
/// item without a row gets `dim` standard normal draws from `rng` (then
/// normalised). The embedding's dimension must be `dim` (the caller checks
/// it against the model and says which embedding).
pub fn initial_item_table(items: &Vocabulary, embedding: &StoredEmbedding, rng: &mut SplitMix64) -> InitialTable {
    let dim = embedding.dim;
    let mut rows = Vec::with_capacity(items.len() * dim);
    let mut missing = 0usize;
    for &id in items.ids() {
        match embedding.ids.binary_search(&id) {
            Ok(r) => rows.extend_from_slice(embedding.row(r)),
            Err(_) => {
                missing += 1;
                rows.extend(rng.normals(dim, 1.0));
            }
        }
    }
    normalize_rows(&mut rows, dim);
    InitialTable { rows, missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_vocabulary_and_have_unit_length() {
        let embedding = StoredEmbedding::sorted(vec![30, 10, 20], 2, vec![3.0, 4.0, 0.0, 2.0, 0.0, 0.0]);
        let items = Vocabulary::new(vec![10, 20, 25, 30]);
        let table = initial_item_table(&items, &embedding, &mut SplitMix64::new(1));
        assert_eq!(table.missing, 1);
        assert_eq!(table.rows.len(), 8);
        // token 1 = item 10 = (0, 2) -> (0, 1); token 2 = item 20 = (0, 0) stays zero
        assert_eq!(&table.rows[0..2], &[0.0, 1.0]);
        assert_eq!(&table.rows[2..4], &[0.0, 0.0]);
        // token 3 = item 25: random, unit length
        let norm = (table.rows[4].powi(2) + table.rows[5].powi(2)).sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        // token 4 = item 30 = (3, 4) -> (0.6, 0.8)
        assert!((table.rows[6] - 0.6).abs() < 1e-7 && (table.rows[7] - 0.8).abs() < 1e-7);
        // the same seed draws the same random rows
        let again = initial_item_table(&items, &embedding, &mut SplitMix64::new(1));
        assert_eq!(again.rows, table.rows);
    }
}
