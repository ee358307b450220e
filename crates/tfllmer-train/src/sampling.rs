//! Negatives for the sampled softmax ([`crate::loss::sampled_cross_entropy`]),
//! and the item rows a batch uses ([`RowSubset`]).
//!
//! Negatives are drawn with replacement, K per step and shared by every
//! position of the batch, from our seeded generator (so a run is
//! reproducible for a seed), from a proposal Q:
//! - [`Sampler::Uniform`]: every item alike, Q(j) = 1/N;
//! - [`Sampler::Popularity`]: Q(j) ∝ count(j) + 1, count = the item's
//!   occurrences in the training sequences (+1 so that every item can be
//!   drawn).
//!
//! Either way each negative's logit is corrected by ln(K·Q(j)), the number
//! of times a draw is expected to hold it (the logQ correction, Yi et al.,
//! RecSys 2019, as importance sampling of the partition function: Bengio &
//! Senécal 2008): K negatives then stand for all N items, and the popular
//! items a popularity sampler favours are not pushed down for being drawn
//! often.

use crate::rng::SplitMix64;

/// How negatives are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    Uniform,
    Popularity,
}

impl Sampler {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Popularity => "popularity",
        }
    }
}

/// Draws negatives (item tokens 1..=n) and knows their ln Q.
pub struct NegativeSampler {
    n_items: usize,
    /// popularity: running sums of count + 1 over tokens 1..=n
    cumulative: Option<Vec<f64>>,
}

impl NegativeSampler {
    /// Uniform over tokens 1..=n_items.
    pub fn uniform(n_items: usize) -> Self {
        Self { n_items, cumulative: None }
    }

    /// By popularity: `counts[j − 1]` is how often token j occurs in the
    /// training sequences; Q(j) = (counts[j − 1] + 1) / Σ (count + 1).
    pub fn popularity(counts: &[u64]) -> Self {
        let mut total = 0.0;
        let cumulative = counts
            .iter()
            .map(|&c| {
                total += c as f64 + 1.0;
                total
            })
            .collect();
        Self { n_items: counts.len(), cumulative: Some(cumulative) }
    }

    /// Counts of each token (1..=n_items) over `sequences`.
    pub fn counts(sequences: &[&[u32]], n_items: usize) -> Vec<u64> {
        let mut counts = vec![0u64; n_items];
        for &t in sequences.iter().flat_map(|q| q.iter()) {
            if let Some(c) = (t as usize).checked_sub(1).and_then(|i| counts.get_mut(i)) {
                *c += 1;
            }
        }
        counts
    }

    /// `k` tokens in 1..=n_items, with replacement.
    pub fn draw(&self, k: usize, rng: &mut SplitMix64) -> Vec<u32> {
        let n = self.n_items.max(1);
        (0..k)
            .map(|_| match &self.cumulative {
                None => 1 + ((rng.uniform() * n as f64) as usize).min(n - 1) as u32,
                Some(cumulative) => {
                    let total = cumulative.last().copied().unwrap_or(1.0);
                    let u = rng.uniform() * total;
                    1 + cumulative.partition_point(|&c| c <= u).min(n - 1) as u32
                }
            })
            .collect()
    }

    /// ln Q(token), the chance that one draw is this token (for the logQ
    /// correction); None for a token outside 1..=n_items.
    pub fn log_q(&self, token: u32) -> Option<f64> {
        let i = (token as usize).checked_sub(1).filter(|&i| i < self.n_items)?;
        let Some(cumulative) = self.cumulative.as_ref() else {
            return Some(-(self.n_items as f64).ln());
        };
        let below = if i == 0 { 0.0 } else { *cumulative.get(i - 1)? };
        let total = *cumulative.last()?;
        Some(((*cumulative.get(i)? - below) / total).ln())
    }
}

/// The distinct item rows a batch uses (padding row 0 first, then the
/// others ascending) and each token's place among them: the batch then
/// works on a rows.len() × dim slice of the item table instead of all of
/// it. The token-to-place map is a dense array over the catalogue, made
/// once and reset after each batch (4 bytes an item).
pub struct RowSubset {
    place: Vec<u32>,
    rows: Vec<u32>,
}

impl RowSubset {
    /// For tokens 0..=n_items.
    pub fn new(n_items: usize) -> Self {
        Self { place: vec![u32::MAX; n_items + 1], rows: Vec::new() }
    }

    /// Collects the tokens of `lists` (and 0); returns the rows, ascending.
    pub fn collect<'a>(&mut self, lists: impl IntoIterator<Item = &'a [u32]>) -> &[u32] {
        for &r in &self.rows {
            self.place[r as usize] = u32::MAX;
        }
        self.rows.clear();
        self.rows.push(0);
        for list in lists {
            self.rows.extend_from_slice(list);
        }
        self.rows.sort_unstable();
        self.rows.dedup();
        for (i, &r) in self.rows.iter().enumerate() {
            self.place[r as usize] = i as u32;
        }
        &self.rows
    }

    /// The tokens renumbered to their places among the collected rows.
    pub fn local(&self, tokens: &[u32]) -> Vec<u32> {
        tokens.iter().map(|&t| self.place[t as usize]).collect()
    }

    pub fn rows(&self) -> &[u32] {
        &self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_draws_cover_the_items_evenly_and_are_seeded() {
        let s = NegativeSampler::uniform(10);
        let draws = s.draw(100_000, &mut SplitMix64::new(1));
        assert_eq!(draws, s.draw(100_000, &mut SplitMix64::new(1)));
        let mut counts = [0usize; 11];
        draws.iter().for_each(|&t| counts[t as usize] += 1);
        assert_eq!(counts[0], 0, "padding is never drawn");
        assert!(counts[1..].iter().all(|&c| (9_400..10_600).contains(&c)), "{counts:?}");
        assert!((s.log_q(3).unwrap() - f64::ln(0.1)).abs() < 1e-12);
        assert_eq!((s.log_q(0), s.log_q(11)), (None, None), "padding and beyond are never drawn");
    }

    #[test]
    fn popularity_draws_follow_count_plus_one_and_log_q_is_their_log() {
        let counts = NegativeSampler::counts(&[&[1, 1, 1, 3], &[1, 3, 3, 3, 1, 1]], 4);
        assert_eq!(counts, vec![6, 0, 4, 0]);
        let s = NegativeSampler::popularity(&counts);
        // Q = (7, 1, 5, 1) / 14
        for (token, q) in [(1, 7.0 / 14.0), (2, 1.0 / 14.0), (3, 5.0 / 14.0), (4, 1.0 / 14.0)] {
            assert!((s.log_q(token).unwrap() - f64::ln(q)).abs() < 1e-12);
        }
        let draws = s.draw(140_000, &mut SplitMix64::new(2));
        let share = |t: u32| draws.iter().filter(|&&d| d == t).count() as f64 / 140_000.0;
        for (token, q) in [(1, 0.5), (2, 1.0 / 14.0), (3, 5.0 / 14.0), (4, 1.0 / 14.0)] {
            assert!((share(token) - q).abs() < 0.005, "token {token}: {} vs {q}", share(token));
        }
    }

    #[test]
    fn a_row_subset_renumbers_tokens_and_resets_between_batches() {
        let mut s = RowSubset::new(9);
        assert_eq!(s.collect([&[5u32, 2, 5][..], &[9, 0]]), &[0, 2, 5, 9]);
        assert_eq!(s.local(&[0, 5, 9, 2]), vec![0, 2, 3, 1]);
        assert_eq!(s.collect([&[3u32][..]]), &[0, 3]);
        assert_eq!(s.local(&[3, 0]), vec![1, 0]);
        assert_eq!(s.place.iter().filter(|&&p| p != u32::MAX).count(), 2, "the last batch's places only");
    }
}
