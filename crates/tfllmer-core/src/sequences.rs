//! Users' interaction sequences and the leave-one-out split (METHOD.md,
//! "Evaluation protocol"): the same order as the co-occurrence graph, so the
//! items the graph holds out are exactly the validation and test targets.

use crate::graph::Event;
use crate::vocabulary::Vocabulary;

/// Reorders `events` so that each user's events are contiguous and in
/// history order: by time, equal times by item id. Returns each user's
/// [start, end), users in ascending id order when they had to be regrouped,
/// in input order when the input was already grouped by user.
pub fn order_histories(events: &mut Vec<Event>) -> Vec<(usize, usize)> {
    let segments = group_by_user(events);
    for &(start, end) in &segments {
        let history = &mut events[start..end];
        if !history.is_sorted_by_key(|e| (e.time, e.item)) {
            history.sort_unstable_by_key(|e| (e.time, e.item));
        }
    }
    segments
}

/// Groups each user's events contiguously (stable). Tables are often stored
/// grouped by user already: then nothing moves.
fn group_by_user(events: &mut Vec<Event>) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=events.len() {
        if i == events.len() || events[i].user != events[start].user {
            runs.push((start, i));
            start = i;
        }
    }
    let users = IdIndex::new(runs.iter().map(|&(s, _)| events[s].user));
    if runs.len() == users.len() {
        return runs;
    }
    let keys: Vec<u32> = events.iter().map(|e| users.get(e.user).unwrap_or(0)).collect();
    let mut begin = vec![0usize; users.len() + 1];
    for &k in &keys {
        begin[k as usize + 1] += 1;
    }
    for k in 0..users.len() {
        begin[k + 1] += begin[k];
    }
    let mut fill = begin.clone();
    let mut grouped = vec![Event { user: 0, time: 0, item: 0 }; events.len()];
    for (e, &k) in events.iter().zip(&keys) {
        grouped[fill[k as usize]] = *e;
        fill[k as usize] += 1;
    }
    *events = grouped;
    begin.windows(2).filter(|w| w[0] < w[1]).map(|w| (w[0], w[1])).collect()
}

/// Dense indices 0..len for a set of ids, in ascending id order.
pub enum IdIndex {
    /// ids within a small range: a direct lookup table (u32::MAX = absent)
    Direct { min: i64, slot: Vec<u32>, ids: Vec<i64> },
    /// sparse ids: binary search in the sorted distinct ids
    Sorted(Vec<i64>),
}

impl IdIndex {
    pub fn new(ids: impl Iterator<Item = i64> + Clone) -> Self {
        let (mut min, mut max, mut count) = (i64::MAX, i64::MIN, 0usize);
        for id in ids.clone() {
            min = min.min(id);
            max = max.max(id);
            count += 1;
        }
        let range = (max as i128 - min as i128 + 1).max(0) as u128;
        if count > 0 && range <= 4 * count as u128 + 1024 {
            let mut slot = vec![u32::MAX; range as usize];
            for id in ids {
                slot[(id - min) as usize] = 0;
            }
            let mut distinct = Vec::new();
            for (offset, s) in slot.iter_mut().enumerate() {
                if *s == 0 {
                    *s = distinct.len() as u32;
                    distinct.push(min + offset as i64);
                }
            }
            IdIndex::Direct { min, slot, ids: distinct }
        } else {
            let mut distinct: Vec<i64> = ids.collect();
            distinct.sort_unstable();
            distinct.dedup();
            IdIndex::Sorted(distinct)
        }
    }

    pub fn len(&self) -> usize {
        self.ids().len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids().is_empty()
    }

    pub fn ids(&self) -> &[i64] {
        match self {
            IdIndex::Direct { ids, .. } | IdIndex::Sorted(ids) => ids,
        }
    }

    pub fn get(&self, id: i64) -> Option<u32> {
        match self {
            IdIndex::Direct { min, slot, .. } => {
                let offset = usize::try_from(id.checked_sub(*min)?).ok()?;
                slot.get(offset).copied().filter(|&s| s != u32::MAX)
            }
            IdIndex::Sorted(ids) => ids.binary_search(&id).ok().map(|i| i as u32),
        }
    }

    pub fn into_ids(self) -> Vec<i64> {
        match self {
            IdIndex::Direct { ids, .. } | IdIndex::Sorted(ids) => ids,
        }
    }
}

/// Every user's history as item tokens: token t ≥ 1 is item `items[t - 1]`,
/// token 0 is padding (never an item).
/// The vocabulary of an index's ids (ascending and distinct by
/// construction).
fn vocabulary(index: IdIndex) -> Vocabulary {
    Vocabulary::new(index.into_ids())
}

pub struct Histories {
    /// the items that occur, in token order
    pub items: Vocabulary,
    pub users: Vec<i64>,
    pub sequences: Vec<Vec<u32>>,
}

impl Histories {
    /// Histories over every item that occurs in `events`.
    pub fn from_events(mut events: Vec<Event>) -> Self {
        let segments = order_histories(&mut events);
        let index = IdIndex::new(events.iter().map(|e| e.item));
        let (users, sequences) = Self::tokens(&events, &segments, |id| index.get(id).map(|i| i + 1));
        Histories { items: vocabulary(index), users, sequences }
    }

    /// Histories over a fixed item vocabulary (a trained model's): events of
    /// other items are left out of the sequences. Returns how many were.
    /// (Cold items of the vocabulary count as its items.)
    pub fn with_items(mut events: Vec<Event>, items: &Vocabulary) -> (Self, usize) {
        let segments = order_histories(&mut events);
        let (users, sequences) = if items.n_cold() == 0 {
            let index = IdIndex::new(items.ids().iter().copied());
            Self::tokens(&events, &segments, |id| index.get(id).map(|i| i + 1))
        } else {
            Self::tokens(&events, &segments, |id| items.token(id))
        };
        let unknown = events.len() - sequences.iter().map(Vec::len).sum::<usize>();
        (Histories { items: items.clone(), users, sequences }, unknown)
    }

    fn tokens(
        events: &[Event],
        segments: &[(usize, usize)],
        token: impl Fn(i64) -> Option<u32>,
    ) -> (Vec<i64>, Vec<Vec<u32>>) {
        let users = segments.iter().map(|&(s, _)| events[s].user).collect();
        let sequences =
            segments.iter().map(|&(s, e)| events[s..e].iter().filter_map(|ev| token(ev.item)).collect()).collect();
        (users, sequences)
    }

    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// The token of an item id.
    pub fn token(&self, item: i64) -> Option<u32> {
        self.items.token(item)
    }
}

/// Leave-one-out: per user, the last item is the test target, the one
/// before it the validation target, the rest is training. Users with fewer
/// than 3 interactions have no training part and are left out of all three.
pub struct LeaveOneOut<'a> {
    /// (user row in `Histories`, training sequence)
    pub train: Vec<(usize, &'a [u32])>,
    /// (user row, history = training part, target)
    pub valid: Vec<(usize, &'a [u32], u32)>,
    /// (user row, history = training part + validation item, target)
    pub test: Vec<(usize, &'a [u32], u32)>,
}

pub fn leave_one_out(h: &Histories) -> LeaveOneOut<'_> {
    let mut split = LeaveOneOut { train: Vec::new(), valid: Vec::new(), test: Vec::new() };
    for (row, seq) in h.sequences.iter().enumerate() {
        if seq.len() < 3 {
            continue;
        }
        let n = seq.len();
        split.train.push((row, &seq[..n - 2]));
        split.valid.push((row, &seq[..n - 2], seq[n - 2]));
        split.test.push((row, &seq[..n - 1], seq[n - 1]));
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(user: i64, time: i64, item: i64) -> Event {
        Event { user, time, item }
    }

    #[test]
    fn histories_follow_time_then_item_order() {
        let h = Histories::from_events(vec![ev(2, 5, 30), ev(1, 2, 10), ev(2, 1, 20), ev(1, 2, 5), ev(2, 5, 7)]);
        assert_eq!(h.items.ids(), &[5, 7, 10, 20, 30]);
        assert_eq!(h.users, vec![1, 2]);
        // user 1: 5 and 10 at the same time -> 5 first; user 2: 20, then 7 and 30 tied
        assert_eq!(h.sequences, vec![vec![1, 3], vec![4, 2, 5]]);
        assert_eq!(h.token(20), Some(4));
        assert_eq!(h.token(21), None);
    }

    #[test]
    fn a_fixed_vocabulary_drops_unknown_items() {
        let events = vec![ev(1, 1, 10), ev(1, 2, 99), ev(1, 3, 30), ev(2, 1, 20)];
        let (h, unknown) = Histories::with_items(events, &Vocabulary::new(vec![30, 10, 20]));
        assert_eq!(unknown, 1);
        assert_eq!(h.items.ids(), &[10, 20, 30]);
        assert_eq!(h.sequences, vec![vec![1, 3], vec![2]]);
    }

    #[test]
    fn leave_one_out_splits_each_user() {
        let h = Histories {
            items: Vocabulary::new((1..=9).collect()),
            users: vec![1, 2, 3],
            sequences: vec![vec![1, 2, 3, 4, 5], vec![6, 7], vec![8, 9, 1]],
        };
        let s = leave_one_out(&h);
        assert_eq!(s.train, vec![(0, &[1, 2, 3][..]), (2, &[8][..])]);
        assert_eq!(s.valid, vec![(0, &[1, 2, 3][..], 4), (2, &[8][..], 9)]);
        assert_eq!(s.test, vec![(0, &[1, 2, 3, 4][..], 5), (2, &[8, 9][..], 1)]);
    }

    #[test]
    fn grouping_is_stable_and_skipped_when_already_grouped() {
        let mut grouped = vec![ev(3, 1, 1), ev(3, 0, 2), ev(1, 5, 3)];
        assert_eq!(order_histories(&mut grouped), vec![(0, 2), (2, 3)]);
        assert_eq!(grouped, vec![ev(3, 0, 2), ev(3, 1, 1), ev(1, 5, 3)]);
        let mut interleaved = vec![ev(3, 1, 1), ev(1, 5, 3), ev(3, 0, 2)];
        assert_eq!(order_histories(&mut interleaved), vec![(0, 1), (1, 3)]);
        assert_eq!(interleaved, vec![ev(1, 5, 3), ev(3, 0, 2), ev(3, 1, 1)]);
    }

    #[test]
    fn id_index_handles_dense_and_sparse_ids() {
        let dense = IdIndex::new([5i64, 3, 5, 9].into_iter());
        assert!(matches!(dense, IdIndex::Direct { .. }));
        assert_eq!(dense.ids(), &[3, 5, 9]);
        assert_eq!((dense.get(5), dense.get(4), dense.get(-100), dense.get(i64::MAX)), (Some(1), None, None, None));
        let sparse = IdIndex::new([i64::MIN, 0, i64::MAX].into_iter());
        assert!(matches!(sparse, IdIndex::Sorted(_)));
        assert_eq!((sparse.get(i64::MAX), sparse.get(1)), (Some(2), None));
    }
}
