//! Scores of the non-learned rankers a cold-start evaluation reports beside
//! the model (evaluate(items => 'cold')), over tokens 0..=n_items like a
//! model's scores, for [`crate::ranking::Ranker`]:
//! - random: a seeded uniform draw per item and case;
//! - popularity: training interactions per item, ties (every cold item has
//!   none) broken by a seeded draw below one count, so they fall in random
//!   order rather than in the target's favour;
//! - nearest LLM embedding: the cold items by cosine similarity of their
//!   LLM embedding to the user's last item's, every other item behind them
//!   (in random order). It knows which items are cold, which the model
//!   does not: a strong baseline for cold targets.

/// splitmix64 draws in [0, 1).
pub struct Draws(u64);

impl Draws {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn draw(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Random scores for tokens 1..=n_items (index 0: padding).
pub fn random_scores(n_items: usize, draws: &mut Draws, out: &mut Vec<f32>) {
    out.clear();
    out.push(f32::NEG_INFINITY);
    out.extend((0..n_items).map(|_| draws.draw()));
}

/// Popularity scores: `counts[t]` (index 0 unused) plus a draw in [0, ½)
/// that orders equal counts at random. Counts are exact in f32 up to 2²⁴.
pub fn popularity_scores(counts: &[u64], draws: &mut Draws, out: &mut Vec<f32>) {
    out.clear();
    out.push(f32::NEG_INFINITY);
    out.extend(counts.iter().skip(1).map(|&c| c as f32 + 0.5 * draws.draw()));
}

/// Nearest-LLM-embedding scores: for each cold token t (given with its
/// unit-length LLM vector), 2 + cos(query, v_t); every other token a draw
/// in [0, 1) (behind all cold ones). `query` need not have unit length; a
/// zero query leaves the cold items in random order too.
pub fn nearest_scores(
    n_items: usize,
    cold: &[(u32, &[f32])],
    query: Option<&[f32]>,
    draws: &mut Draws,
    out: &mut Vec<f32>,
) {
    random_scores(n_items, draws, out);
    let norm = query.map(|q| q.iter().map(|v| v * v).sum::<f32>().sqrt()).unwrap_or(0.0);
    for &(t, v) in cold {
        let cos = match query {
            Some(q) if norm > 0.0 => q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>() / norm,
            _ => 0.5 * out[t as usize] - 0.25,
        };
        if let Some(s) = out.get_mut(t as usize) {
            *s = 2.0 + cos;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::{Ranker, RankingMetrics};

    #[test]
    fn random_hits_k_in_n() {
        // over many cases, HR@10 of a random ranker is 10 / eligible items
        let (n, k) = (200, 10);
        let mut draws = Draws::new(1);
        let mut ranker = Ranker::new(n);
        let mut metrics = RankingMetrics::new(k);
        let mut scores = Vec::new();
        for case in 0..20_000u32 {
            random_scores(n, &mut draws, &mut scores);
            metrics.add(ranker.rank_of_target(&scores, 1 + case % n as u32, &[]));
        }
        assert!((metrics.hr() - 0.05).abs() < 0.005, "{}", metrics.hr());
    }

    #[test]
    fn popularity_orders_by_count_and_ties_at_random() {
        let counts = [0u64, 5, 0, 9, 0, 0];
        let mut scores = Vec::new();
        popularity_scores(&counts, &mut Draws::new(3), &mut scores);
        let mut ranker = Ranker::new(5);
        // item 3 first, item 1 second; the unseen items 2, 4, 5 after them
        assert_eq!(ranker.rank_of_target(&scores, 3, &[]), 0);
        assert_eq!(ranker.rank_of_target(&scores, 1, &[]), 1);
        // a tied target is not ranked ahead of every item it ties with:
        // over many draws, each of the three is first of them a third of the time
        let mut firsts = [0usize; 6];
        let mut draws = Draws::new(4);
        for _ in 0..3000 {
            popularity_scores(&counts, &mut draws, &mut scores);
            let best = [2, 4, 5].into_iter().max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
            firsts[best] += 1;
        }
        for t in [2, 4, 5] {
            assert!((firsts[t] as f64 / 3000.0 - 1.0 / 3.0).abs() < 0.05, "{firsts:?}");
        }
    }

    #[test]
    fn nearest_ranks_cold_items_by_cosine_ahead_of_the_rest() {
        let (a, b, c) = ([1.0f32, 0.0], [0.6f32, 0.8], [0.0f32, 1.0]);
        let cold: Vec<(u32, &[f32])> = vec![(4, &a), (5, &b), (6, &c)];
        let mut scores = Vec::new();
        nearest_scores(6, &cold, Some(&[2.0, 0.1]), &mut Draws::new(5), &mut scores);
        let mut ranker = Ranker::new(6);
        let ranks: Vec<usize> = (1..=6).map(|t| ranker.rank_of_target(&scores, t, &[])).collect();
        // cold 4 (cos ≈ 1), cold 5, cold 6, then the warm items 1..3
        assert_eq!(&ranks[3..], &[0, 1, 2]);
        assert!(ranks[..3].iter().all(|&r| r >= 3));
    }
}
