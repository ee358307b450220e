//! A model's item vocabulary: which item id each token stands for, and its
//! stored byte format.
//!
//! Tokens are 1..=n (0 is padding); token t is the t-th smallest item id,
//! so the ids are strictly ascending and an id's token is found by binary
//! search. Stored as n little-endian `i64`s (`model_store.item_ids`).

use std::fmt;

/// Item ids in token order (strictly ascending).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vocabulary {
    ids: Vec<i64>,
}

/// Why stored item ids cannot be read back.
#[derive(Debug, PartialEq, Eq)]
pub enum VocabularyError {
    /// the byte length is not a multiple of 8
    Length(usize),
    /// the model says n items, the ids are another count
    Count { expected: usize, found: usize },
    /// ids must be strictly ascending; this one is not after its predecessor
    Order { position: usize, id: i64 },
}

impl fmt::Display for VocabularyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VocabularyError::Length(n) => write!(f, "item ids take {n} bytes, not a multiple of 8"),
            VocabularyError::Count { expected, found } => {
                write!(f, "item ids hold {found} items, the model has {expected}")
            }
            VocabularyError::Order { position, id } => {
                write!(f, "item id {id} at position {position} is not above the one before it")
            }
        }
    }
}

impl std::error::Error for VocabularyError {}

impl Vocabulary {
    /// The vocabulary of these distinct items: sorted, duplicates removed.
    pub fn new(mut ids: Vec<i64>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        Self { ids }
    }

    /// Ids already strictly ascending (checked).
    pub fn from_sorted(ids: Vec<i64>) -> Result<Self, VocabularyError> {
        if let Some(position) = ids.windows(2).position(|w| w[0] >= w[1]) {
            return Err(VocabularyError::Order { position: position + 1, id: ids[position + 1] });
        }
        Ok(Self { ids })
    }

    /// Number of items (tokens 1..=len).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids in token order: `ids()[t - 1]` is token t's item.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The token of an item id; None for an item outside the vocabulary.
    pub fn token(&self, id: i64) -> Option<u32> {
        self.ids.binary_search(&id).ok().map(|i| i as u32 + 1)
    }

    /// The item id of token t (1..=len); None for padding or out of range.
    pub fn item_id(&self, token: u32) -> Option<i64> {
        (token as usize).checked_sub(1).and_then(|i| self.ids.get(i)).copied()
    }

    /// Bytes of memory the ids take.
    pub fn memory_bytes(&self) -> usize {
        self.ids.len() * std::mem::size_of::<i64>()
    }

    /// The stored form: len little-endian i64s.
    pub fn encode(&self) -> Vec<u8> {
        self.ids.iter().flat_map(|id| id.to_le_bytes()).collect()
    }

    /// Reads the stored form back, checking it holds `expected` ids in
    /// strictly ascending order.
    pub fn decode(bytes: &[u8], expected: usize) -> Result<Self, VocabularyError> {
        if !bytes.len().is_multiple_of(8) {
            return Err(VocabularyError::Length(bytes.len()));
        }
        let ids: Vec<i64> = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if ids.len() != expected {
            return Err(VocabularyError::Count { expected, found: ids.len() });
        }
        Self::from_sorted(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_ascending_ids() {
        let v = Vocabulary::new(vec![30, -5, 10, 30, 7]);
        assert_eq!(v.ids(), &[-5, 7, 10, 30]);
        assert_eq!(v.token(-5), Some(1));
        assert_eq!(v.token(30), Some(4));
        assert_eq!(v.token(8), None);
        assert_eq!(v.item_id(0), None);
        assert_eq!(v.item_id(2), Some(7));
        assert_eq!(v.item_id(5), None);
        for (i, &id) in v.ids().iter().enumerate() {
            assert_eq!(v.item_id(v.token(id).unwrap()), Some(id));
            assert_eq!(v.token(id), Some(i as u32 + 1));
        }
    }

    #[test]
    fn the_stored_form_round_trips_and_corruption_is_an_error() {
        let v = Vocabulary::new(vec![i64::MIN, -1, 0, 42, i64::MAX]);
        let bytes = v.encode();
        assert_eq!(bytes.len(), 40);
        assert_eq!(Vocabulary::decode(&bytes, 5), Ok(v.clone()));
        assert_eq!(Vocabulary::decode(&bytes[..39], 5), Err(VocabularyError::Length(39)));
        assert_eq!(Vocabulary::decode(&bytes, 4), Err(VocabularyError::Count { expected: 4, found: 5 }));
        // swap two ids: no longer ascending
        let mut swapped = bytes.clone();
        swapped[16..24].copy_from_slice(&42i64.to_le_bytes());
        swapped[24..32].copy_from_slice(&0i64.to_le_bytes());
        assert_eq!(Vocabulary::decode(&swapped, 5), Err(VocabularyError::Order { position: 3, id: 0 }));
        // a repeated id is not ascending either
        assert!(Vocabulary::from_sorted(vec![1, 2, 2]).is_err());
        assert_eq!(Vocabulary::decode(&[], 0), Ok(Vocabulary::default()));
    }
}
