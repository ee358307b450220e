//! Full ranking over all items: the rank of a held-out target with the
//! user's history masked (evaluation), HR@K and NDCG@K, and top-k selection
//! (recommendation). Scores are indexed by item token (index 0 = padding,
//! never ranked); NaN scores rank below everything.

use std::cmp::Ordering;

/// Reusable state for ranking many users against the same catalogue.
pub struct Ranker {
    masked: Vec<bool>,
}

fn key(score: f32) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score
    }
}

impl Ranker {
    /// For scores over tokens 0..=n_items.
    pub fn new(n_items: usize) -> Self {
        Self { masked: vec![false; n_items + 1] }
    }

    /// 0-based rank of `target`: the number of unmasked items scoring
    /// strictly higher. History items are masked; a target that is itself in
    /// the history is masked too and ranks behind every unmasked item (it
    /// cannot be recommended), as in the reference protocol.
    pub fn rank_of_target(&mut self, scores: &[f32], target: u32, history: &[u32]) -> usize {
        for &t in history {
            if let Some(m) = self.masked.get_mut(t as usize) {
                *m = true;
            }
        }
        let unmasked = || scores.iter().zip(&self.masked).skip(1).filter(|&(_, &m)| !m);
        let rank = match (self.masked.get(target as usize), scores.get(target as usize)) {
            (Some(false), Some(&t)) => {
                let target_score = key(t);
                unmasked().filter(|&(&s, _)| key(s) > target_score).count()
            }
            // masked (or out of range): every unmasked item is ahead of it
            _ => unmasked().count(),
        };
        for &t in history {
            if let Some(m) = self.masked.get_mut(t as usize) {
                *m = false;
            }
        }
        rank
    }

    /// The `k` best tokens (best first; equal scores: smaller token first),
    /// skipping `excluded`, by partial selection rather than a full sort.
    pub fn top_k(&mut self, scores: &[f32], k: usize, excluded: &[u32]) -> Vec<(u32, f32)> {
        for &t in excluded {
            if let Some(m) = self.masked.get_mut(t as usize) {
                *m = true;
            }
        }
        let candidates: Vec<(u32, f32)> = scores
            .iter()
            .zip(&self.masked)
            .enumerate()
            .skip(1)
            .filter(|(_, (_, &m))| !m)
            .map(|(t, (&s, _))| (t as u32, s))
            .collect();
        for &t in excluded {
            if let Some(m) = self.masked.get_mut(t as usize) {
                *m = false;
            }
        }
        best_of(candidates, k)
    }
}

/// The `k` best of `(token, score)` pairs, best first (equal scores: the
/// smaller token first; NaN last), by partial selection: the order
/// [`Ranker::top_k`] gives, for callers that score only some items.
pub fn best_of<T: Ord + Copy>(mut candidates: Vec<(T, f32)>, k: usize) -> Vec<(T, f32)> {
    let better = |a: &(T, f32), b: &(T, f32)| -> Ordering { key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0)) };
    if k < candidates.len() && k > 0 {
        candidates.select_nth_unstable_by(k - 1, better);
    }
    candidates.truncate(k);
    candidates.sort_unstable_by(better);
    candidates
}

/// HR@K and NDCG@K accumulated over users.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RankingMetrics {
    pub k: usize,
    pub users: u64,
    hits: f64,
    gain: f64,
}

impl RankingMetrics {
    pub fn new(k: usize) -> Self {
        Self { k, ..Self::default() }
    }

    pub fn add(&mut self, rank: usize) {
        self.users += 1;
        if rank < self.k {
            self.hits += 1.0;
            self.gain += 1.0 / ((rank + 2) as f64).log2();
        }
    }

    /// Hit ratio (= recall with one target): share of targets in the top K.
    pub fn hr(&self) -> f64 {
        if self.users == 0 {
            0.0
        } else {
            self.hits / self.users as f64
        }
    }

    /// Mean NDCG@K with one relevant item: 1 / log2(rank + 2) inside the top K.
    pub fn ndcg(&self) -> f64 {
        if self.users == 0 {
            0.0
        } else {
            self.gain / self.users as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_strictly_better_unmasked_items() {
        let mut r = Ranker::new(5);
        //            pad   1    2    3    4    5
        let scores = [9.0, 0.5, 0.9, 0.1, 0.7, 0.5];
        assert_eq!(r.rank_of_target(&scores, 2, &[]), 0);
        assert_eq!(r.rank_of_target(&scores, 4, &[]), 1);
        // ties do not count against the target (strictly higher only)
        assert_eq!(r.rank_of_target(&scores, 1, &[]), 2);
        assert_eq!(r.rank_of_target(&scores, 5, &[]), 2);
        // history items above it are masked
        assert_eq!(r.rank_of_target(&scores, 1, &[2, 4]), 0);
        // the padding score (9.0) never counts
        assert_eq!(r.rank_of_target(&scores, 3, &[]), 4);
        // the mask does not leak into the next call
        assert_eq!(r.rank_of_target(&scores, 1, &[]), 2);
    }

    #[test]
    fn a_target_in_the_history_ranks_behind_every_unmasked_item() {
        let mut r = Ranker::new(4);
        let scores = [0.0, 5.0, 1.0, 2.0, 3.0];
        assert_eq!(r.rank_of_target(&scores, 1, &[1, 2]), 2);
    }

    #[test]
    fn nan_scores_rank_last() {
        let mut r = Ranker::new(3);
        let scores = [0.0, f32::NAN, 0.2, 0.1];
        assert_eq!(r.rank_of_target(&scores, 3, &[]), 1);
        assert_eq!(r.rank_of_target(&scores, 1, &[]), 2);
    }

    #[test]
    fn metrics_against_hand_computed_values() {
        let mut m = RankingMetrics::new(10);
        for rank in [0, 1, 9, 10, 50] {
            m.add(rank);
        }
        assert_eq!(m.users, 5);
        assert!((m.hr() - 3.0 / 5.0).abs() < 1e-15);
        let want = (1.0 + 1.0 / 3f64.log2() + 1.0 / 11f64.log2()) / 5.0;
        assert!((m.ndcg() - want).abs() < 1e-15);
        assert_eq!(RankingMetrics::new(10).hr(), 0.0);
    }

    #[test]
    fn top_k_is_best_first_with_deterministic_ties_and_exclusions() {
        let mut r = Ranker::new(6);
        let scores = [100.0, 0.3, 0.9, 0.3, f32::NAN, 0.9, 0.1];
        assert_eq!(r.top_k(&scores, 3, &[]), vec![(2, 0.9), (5, 0.9), (1, 0.3)]);
        assert_eq!(r.top_k(&scores, 2, &[2]), vec![(5, 0.9), (1, 0.3)]);
        // k beyond the catalogue returns what exists, NaN last
        let all = r.top_k(&scores, 50, &[]);
        assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), vec![2, 5, 1, 3, 6, 4]);
        assert!(r.top_k(&scores, 0, &[]).is_empty());
    }

    #[test]
    fn top_k_agrees_with_a_full_sort() {
        let n = 1000;
        let scores: Vec<f32> = (0..=n).map(|i| ((i * 7919) % 1009) as f32 / 17.0).collect();
        let mut r = Ranker::new(n);
        let mut full: Vec<(u32, f32)> = (1..=n as u32).map(|t| (t, scores[t as usize])).collect();
        full.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(r.top_k(&scores, 25, &[]), full[..25].to_vec());
        // a subset scored on its own ranks as in the full ranking
        let some: Vec<(u32, f32)> = (1..=n as u32).filter(|t| t % 3 == 0).map(|t| (t, scores[t as usize])).collect();
        let want: Vec<(u32, f32)> = full.iter().copied().filter(|(t, _)| t % 3 == 0).take(10).collect();
        assert_eq!(best_of(some.clone(), 10), want);
        assert_eq!(best_of(some, 0), vec![]);
    }
}
