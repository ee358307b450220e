//! Reductions over a row by lanes: LANES independent partial results the
//! compiler keeps in vector registers (a sequential sum of a row is one
//! long dependency chain), combined pairwise in a fixed order
//! (log2(LANES) vector steps), then the tail (the last len % LANES values,
//! in order) is added. The order depends on the row's length only, never
//! on the instruction set or the thread, so every path gives the same bits.

use num_traits::Float;

use super::Real;

/// Lanes of the row reductions (a power of two).
pub(crate) const LANES: usize = 16;

/// Combines lanes pairwise: lane k with lane k + w for w = LANES/2, …, 1.
#[inline(always)]
pub(crate) fn tree<T: Copy>(mut s: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            s[k] = f(s[k], s[k + w]);
        }
    }
    s[0]
}

/// Σ f(v) over a row.
#[inline(always)]
pub(crate) fn sum_lanes<T: Real>(row: &[T], f: impl Fn(T) -> T) -> T {
    let mut s = [T::zero(); LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            s[k] += f(c[k]);
        }
    }
    let tail = chunks.remainder().iter().fold(T::zero(), |a, &v| a + f(v));
    tree(s, |a, b| a + b) + tail
}

/// The largest value of a row (−∞ when empty).
#[inline(always)]
pub(crate) fn max_lanes<T: Real>(row: &[T]) -> T {
    let mut m = [T::neg_infinity(); LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            m[k] = if c[k] > m[k] { c[k] } else { m[k] };
        }
    }
    let tail = chunks.remainder().iter().copied().fold(T::neg_infinity(), Float::max);
    Float::max(tree(m, Float::max), tail)
}

/// Σ exp(v − shift) over a row.
#[inline(always)]
pub(crate) fn sum_exp_lanes<T: Real>(row: &[T], shift: T) -> T {
    sum_lanes(row, |v| (v - shift).fast_exp())
}

/// Replaces each v of a row by exp(scale·v − shift); returns their sum
/// (softmax's denominator when shift is scale times the row's maximum).
#[inline(always)]
pub(crate) fn exp_in_place_lanes<T: Real>(row: &mut [T], scale: T, shift: T) -> T {
    let mut s = [T::zero(); LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            c[k] = (c[k] * scale - shift).fast_exp();
            s[k] += c[k];
        }
    }
    let mut tail = T::zero();
    for v in chunks.into_remainder() {
        *v = (*v * scale - shift).fast_exp();
        tail += *v;
    }
    tree(s, |a, b| a + b) + tail
}

/// Σ a ⊙ b over the shorter of the two rows.
#[inline(always)]
pub(crate) fn dot_lanes<T: Real>(a: &[T], b: &[T]) -> T {
    let mut s = [T::zero(); LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..LANES {
            s[k] += x[k] * y[k];
        }
    }
    let tail = ca.remainder().iter().zip(cb.remainder()).fold(T::zero(), |acc, (&x, &y)| acc + x * y);
    tree(s, |a, b| a + b) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_match_plain_ones() {
        for n in [0usize, 3, 16, 37, 100] {
            let a: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64 - 3.0) / 2.0).collect();
            let b: Vec<f64> = (0..n).map(|i| ((i * 5 % 11) as f64 - 5.0) / 3.0).collect();
            let max = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max_lanes(&a), max);
            assert!((sum_lanes(&a, |v| v * v) - a.iter().map(|v| v * v).sum::<f64>()).abs() < 1e-12);
            let sum: f64 = a.iter().map(|v| (v - 1.0).exp()).sum();
            assert!((sum_exp_lanes(&a, 1.0) - sum).abs() < 1e-12 * (1.0 + sum));
            let mut e = a.clone();
            assert!((exp_in_place_lanes(&mut e, 1.0, 1.0) - sum).abs() < 1e-12 * (1.0 + sum));
            assert!(e.iter().zip(&a).all(|(x, v)| (x - (v - 1.0).exp()).abs() < 1e-15));
            let mut e = a.clone();
            let scaled: f64 = a.iter().map(|v| (0.5 * v - 1.0).exp()).sum();
            assert!((exp_in_place_lanes(&mut e, 0.5, 1.0) - scaled).abs() < 1e-12 * (1.0 + scaled));
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_lanes(&a, &b) - dot).abs() < 1e-12);
        }
        assert_eq!(tree([1u32; LANES], |a, b| a + b), LANES as u32);
    }
}
