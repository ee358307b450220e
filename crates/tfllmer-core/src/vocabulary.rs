//! A model's item vocabulary: which item id each token stands for, and its
//! stored byte format.
//!
//! Tokens are 1..=n (0 is padding); token t is the t-th smallest item id,
//! so the ids are strictly ascending and an id's token is found by binary
//! search. Stored as n little-endian `i64`s (`model_store.item_ids`).
//! A model serving cold-start items appends them after its trained items
//! (tokens n+1..=n+c, again in ascending id order): two sorted runs.

use std::fmt;

/// Item ids in token order: the trained items' ids strictly ascending,
/// then the cold items' ids strictly ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vocabulary {
    ids: Vec<i64>,
    /// how many of `ids` are trained items (the first run)
    trained: usize,
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
    /// a cold item that is already a trained item
    Duplicate(i64),
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
            VocabularyError::Duplicate(id) => write!(f, "item {id} is both a trained and a cold item"),
        }
    }
}

impl std::error::Error for VocabularyError {}

impl Vocabulary {
    /// The vocabulary of these distinct items: sorted, duplicates removed.
    pub fn new(mut ids: Vec<i64>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        let trained = ids.len();
        Self { ids, trained }
    }

    /// Ids already strictly ascending (checked).
    pub fn from_sorted(ids: Vec<i64>) -> Result<Self, VocabularyError> {
        if let Some(position) = ids.windows(2).position(|w| w[0] >= w[1]) {
            return Err(VocabularyError::Order { position: position + 1, id: ids[position + 1] });
        }
        let trained = ids.len();
        Ok(Self { ids, trained })
    }

    /// This vocabulary with cold items after its trained ones: `cold` must
    /// be strictly ascending and hold no id the vocabulary has. Any cold
    /// items it had are replaced.
    pub fn with_cold(mut self, cold: Vec<i64>) -> Result<Self, VocabularyError> {
        self.ids.truncate(self.trained);
        if let Some(position) = cold.windows(2).position(|w| w[0] >= w[1]) {
            return Err(VocabularyError::Order { position: self.trained + position + 1, id: cold[position + 1] });
        }
        if let Some(&id) = cold.iter().find(|&&id| self.ids.binary_search(&id).is_ok()) {
            return Err(VocabularyError::Duplicate(id));
        }
        self.ids.extend(cold);
        Ok(self)
    }

    /// Trained items: tokens 1..=n_trained.
    pub fn n_trained(&self) -> usize {
        self.trained
    }

    /// Cold items: tokens n_trained+1..=len.
    pub fn n_cold(&self) -> usize {
        self.ids.len() - self.trained
    }

    /// The cold items' ids, ascending.
    pub fn cold_ids(&self) -> &[i64] {
        &self.ids[self.trained..]
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
        let (trained, cold) = self.ids.split_at(self.trained);
        match trained.binary_search(&id) {
            Ok(i) => Some(i as u32 + 1),
            Err(_) => cold.binary_search(&id).ok().map(|i| (self.trained + i) as u32 + 1),
        }
    }

    /// The item id of token t (1..=len); None for padding or out of range.
    pub fn item_id(&self, token: u32) -> Option<i64> {
        (token as usize).checked_sub(1).and_then(|i| self.ids.get(i)).copied()
    }

    /// Bytes of memory the ids take.
    pub fn memory_bytes(&self) -> usize {
        self.ids.len() * std::mem::size_of::<i64>()
    }

    /// The stored form of the trained items: n_trained little-endian i64s
    /// (cold items are stored one row each, beside the model).
    pub fn encode(&self) -> Vec<u8> {
        self.ids[..self.trained].iter().flat_map(|id| id.to_le_bytes()).collect()
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

    #[test]
    fn cold_items_follow_the_trained_ones() {
        let v = Vocabulary::new(vec![10, 30, 50]).with_cold(vec![5, 20, 60]).unwrap();
        assert_eq!(v.ids(), &[10, 30, 50, 5, 20, 60]);
        assert_eq!((v.n_trained(), v.n_cold(), v.len()), (3, 3, 6));
        assert_eq!(v.cold_ids(), &[5, 20, 60]);
        for (i, &id) in v.ids().iter().enumerate() {
            assert_eq!(v.token(id), Some(i as u32 + 1));
            assert_eq!(v.item_id(i as u32 + 1), Some(id));
        }
        assert_eq!(v.token(40), None);
        // only the trained items are stored with the model
        assert_eq!(Vocabulary::decode(&v.encode(), 3), Ok(Vocabulary::new(vec![10, 30, 50])));
        // replacing the cold items; bad cold lists
        assert_eq!(v.clone().with_cold(vec![]).unwrap(), Vocabulary::new(vec![10, 30, 50]));
        assert_eq!(v.clone().with_cold(vec![7, 30]), Err(VocabularyError::Duplicate(30)));
        assert_eq!(v.with_cold(vec![7, 7]), Err(VocabularyError::Order { position: 4, id: 7 }));
    }
}
