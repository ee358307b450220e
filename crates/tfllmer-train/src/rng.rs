//! A small seeded generator (SplitMix64) for initialisation and dropout.

use rayon::prelude::*;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A draw as a uniform in [0, 1).
#[inline(always)]
fn to_unit(z: u64) -> f64 {
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: fast, statistically sound for our purposes, and fully
/// determined by its seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        to_unit(self.next_u64())
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * std) as f32).collect()
    }

    pub fn uniforms(&mut self, n: usize, low: f64, high: f64) -> Vec<f32> {
        (0..n).map(|_| (low + (high - low) * self.uniform()) as f32).collect()
    }

    /// Inverted-dropout mask: 0 with probability p, else 1/(1-p).
    pub fn dropout_mask(&mut self, n: usize, p: f64) -> Vec<f32> {
        let keep = (1.0 / (1.0 - p)) as f32;
        (0..n).map(|_| if self.uniform() < p { 0.0 } else { keep }).collect()
    }

    /// The keep flags (1 = kept) of `dropout_mask(n, p)`, the same draws,
    /// leaving the generator where `dropout_mask` would. The k-th draw from
    /// state s is mix(s + k·γ), so blocks of the stream are drawn in
    /// parallel (and the result does not depend on the threads).
    pub fn dropout_keep(&mut self, n: usize, p: f64) -> Vec<u8> {
        const BLOCK: usize = 1 << 14;
        let start = self.0;
        let mut keep = vec![0u8; n];
        keep.par_chunks_mut(BLOCK).enumerate().for_each(|(b, chunk)| {
            let mut state = start.wrapping_add(((b * BLOCK) as u64).wrapping_mul(GAMMA));
            for k in chunk {
                state = state.wrapping_add(GAMMA);
                *k = u8::from(to_unit(mix(state)) >= p);
            }
        });
        self.0 = start.wrapping_add((n as u64).wrapping_mul(GAMMA));
        keep
    }

    /// A permutation of 0..n (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_sane_moments() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        let xs = a.normals(20_000, 1.0);
        assert_eq!(xs, b.normals(20_000, 1.0));
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        assert_ne!(SplitMix64::new(8).next_u64(), SplitMix64::new(7).next_u64());
    }

    #[test]
    fn dropout_masks_keep_the_expected_share() {
        let m = SplitMix64::new(1).dropout_mask(10_000, 0.2);
        let zeros = m.iter().filter(|&&v| v == 0.0).count();
        assert!((1_800..2_200).contains(&zeros));
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
    }

    #[test]
    fn parallel_keep_flags_are_the_dropout_mask_stream() {
        for (n, p) in [(0, 0.2), (7, 0.5), (100_003, 0.2)] {
            let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
            let mask = a.dropout_mask(n, p);
            let keep = b.dropout_keep(n, p);
            assert!(mask.iter().zip(&keep).all(|(&m, &k)| (m != 0.0) == (k == 1)));
            assert_eq!(mask.len(), keep.len());
            assert_eq!(a.next_u64(), b.next_u64(), "the generators end in the same state");
        }
    }

    #[test]
    fn permutations_are_permutations() {
        let mut p = SplitMix64::new(3).permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
