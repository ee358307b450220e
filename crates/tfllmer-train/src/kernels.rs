//! Shared pieces of the fused CPU ops: the element types (f32, f64), their
//! slices inside candle's storage, a vectorisable exp for f32, a gemm
//! wrapper and sums over rows whose order does not depend on the threads.

use candle_core::{CpuStorage, Layout, Result, WithDType};
use num_traits::Float;

/// A float type the fused ops compute in (f32 or f64).
pub(crate) trait Real: Float + WithDType + Send + Sync + std::iter::Sum + 'static {
    /// exp(x) to within a few ulps (f32: a polynomial the compiler can
    /// vectorise; f64: the libm function)
    fn fast_exp(self) -> Self;
    /// erf(x), the same function candle's `gelu_erf` uses
    fn erf(self) -> Self;
    fn storage(values: Vec<Self>) -> CpuStorage;
}

impl Real for f32 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        exp_f32(self)
    }
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f32(self)
    }
    fn storage(values: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(values)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        self.exp()
    }
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
    fn storage(values: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(values)
    }
}

/// exp(x) for f32 with a relative error below 3e-7 (Cephes' polynomial on
/// [−ln2/2, ln2/2], scaled by 2ⁿ through the exponent bits); 0 below −87.3
/// (where expf turns subnormal), +∞ above 88 (where it is above 1.6e38).
/// Branch-free and without fma calls, so loops over slices vectorise.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    let bits = (t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23;
    let e = poly * f32::from_bits(bits as u32);
    if x < -87.3 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else {
        e
    }
}

/// Runs `f` compiled for the widest vector instructions this CPU has
/// (AVX-512, else AVX2; `f` is inlined into a function built for them), so
/// the loops in it vectorise beyond SSE2. The arithmetic is the same on
/// every path (no fused multiply-adds are introduced), so results do not
/// depend on which one runs.
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for
            return unsafe { with_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Lanes of the row reductions: independent partial results the compiler
/// keeps in vector registers; they are combined in a fixed order.
const LANES: usize = 16;

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
    m.iter().copied().fold(tail, Float::max)
}

/// Σ exp(v − shift) over a row.
#[inline(always)]
pub(crate) fn sum_exp_lanes<T: Real>(row: &[T], shift: T) -> T {
    let mut s = [T::zero(); LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            s[k] += (c[k] - shift).fast_exp();
        }
    }
    let tail = chunks.remainder().iter().fold(T::zero(), |a, &v| a + (v - shift).fast_exp());
    s.iter().fold(tail, |a, &b| a + b)
}

/// Replaces each v of a row by exp(v − shift); returns their sum.
#[inline(always)]
pub(crate) fn exp_in_place_lanes<T: Real>(row: &mut [T], shift: T) -> T {
    let mut s = [T::zero(); LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            c[k] = (c[k] - shift).fast_exp();
            s[k] += c[k];
        }
    }
    let mut tail = T::zero();
    for v in chunks.into_remainder() {
        *v = (*v - shift).fast_exp();
        tail += *v;
    }
    s.iter().fold(tail, |a, &b| a + b)
}

/// Σ a ⊙ b.
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
    s.iter().fold(tail, |acc, &v| acc + v)
}

/// The contiguous values of a tensor's storage.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{what} needs contiguous input") };
    Ok(&T::cpu_storage_as_slice(s)?[start..end])
}

/// A row-major matrix view: element (i, j) at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// rows × cols stored row by row
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }
    /// the transpose of a rows × cols matrix stored row by row
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }
}

/// dst (m × n, row i at `i * dst_rs`) = a (m × k) · b (k × n), or += when
/// `accumulate`; on the calling thread (callers parallelise over blocks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let end = |mat: &Mat<T>, rows: usize, cols: usize| (rows - 1) * mat.rs + (cols - 1) * mat.cs + 1;
    assert!(dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n, "gemm destination too small");
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs).take(m).for_each(|row| row[..n].iter_mut().for_each(|v| *v = T::zero()));
        }
        return;
    }
    assert!(a.data.len() >= end(&a, m, k) && b.data.len() >= end(&b, k, n), "gemm operand too small");
    // SAFETY: the asserts above keep every element gemm touches inside the slices
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Scales each `dim`-wide row to unit length, e / sqrt(‖e‖² + 1e-24), the
/// item table's normalisation (zero rows stay zero).
pub fn normalize_rows(rows: &mut [f32], dim: usize) {
    for row in rows.chunks_exact_mut(dim.max(1)) {
        let n = (row.iter().map(|&v| v * v).sum::<f32>() + 1e-24).sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// Rows per block of a reduction over rows: blocks are summed in order, so
/// results do not depend on how many threads ran them.
pub(crate) const ROW_BLOCK: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_close_to_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, exact) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - exact) / exact).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(1e9), f32::INFINITY);
    }

    #[test]
    fn lane_reductions_match_plain_ones() {
        for n in [0usize, 3, 16, 37, 100] {
            let a: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64 - 3.0) / 2.0).collect();
            let b: Vec<f64> = (0..n).map(|i| ((i * 5 % 11) as f64 - 5.0) / 3.0).collect();
            let max = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max_lanes(&a), max);
            let sum: f64 = a.iter().map(|v| (v - 1.0).exp()).sum();
            assert!((sum_exp_lanes(&a, 1.0) - sum).abs() < 1e-12 * (1.0 + sum));
            let mut e = a.clone();
            assert!((exp_in_place_lanes(&mut e, 1.0) - sum).abs() < 1e-12 * (1.0 + sum));
            assert!(e.iter().zip(&a).all(|(x, v)| (x - (v - 1.0).exp()).abs() < 1e-15));
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_lanes(&a, &b) - dot).abs() < 1e-12);
        }
    }

    #[test]
    fn gemm_matches_a_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 3.0).collect();
        let b: Vec<f64> = (0..n * k).map(|i| (i % 5) as f64 - 2.0).collect();
        // a · bᵀ with b stored n × k
        let mut c = vec![1.0; m * n];
        gemm(&mut c, n, m, n, k, Mat::rows(&a, k), Mat::transposed(&b, k), true);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 1.0 + (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum::<f64>();
                assert!((c[i * n + j] - want).abs() < 1e-12);
            }
        }
    }
}
