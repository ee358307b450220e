//! A small seeded generator (SplitMix64) for initialisation and dropout.

/// SplitMix64: fast, statistically sound for our purposes, and fully
/// determined by its seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
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
    fn permutations_are_permutations() {
        let mut p = SplitMix64::new(3).permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
