//! The hot loops of the fused ops ([`crate::ops`], [`crate::loss`]) and of
//! the inference [`crate::scorer`], each written once:
//! - [`reduce`]: lane reductions over a row (max, Σ f, Σ exp, exp in place,
//!   dot), in an order that depends on the row's length only;
//! - [`math`]: exp and erf for f32 (vectorisable polynomial fits), sigmoid,
//!   tanh, GELU;
//! - [`norm`]: the item rows' L2 normalisation and layer norm's row;
//! - [`gemm`](mod@gemm): block products on the calling thread;
//! - here: the element types ([`Real`]: f32, f64), their slices inside
//!   candle's storage, and sums of per-block results in order.
//!
//! Loops run through [`dispatch`] (tfllmer-core's one run-time choice of
//! instruction set: AVX-512, AVX2+FMA or the portable SSE2 build). None of
//! them uses fused multiply-adds, so every path computes the same bits (the
//! test below runs each path the CPU has against the scalar one).

mod gemm;
mod math;
mod norm;
mod reduce;

use candle_core::{CpuStorage, Layout, Result, WithDType};
use num_traits::Float;

pub(crate) use gemm::{gemm, Mat};
pub(crate) use math::{erf_f32, exp_f32, gelu, sigmoid, tanh};
pub use norm::normalize_rows;
pub(crate) use norm::{layer_norm_row, moments, normalize_row, row_norm};
pub(crate) use reduce::{dot_lanes, exp_in_place_lanes, max_lanes, sum_exp_lanes, sum_lanes, LANES};
pub(crate) use tfllmer_core::simd::dispatch;

/// A float type the fused ops compute in (f32 or f64).
pub(crate) trait Real: Float + WithDType + Send + Sync + std::iter::Sum + 'static {
    /// exp(x): f32 [`exp_f32`] (a vectorisable polynomial, within 3e-7
    /// relative), f64 the libm function
    fn fast_exp(self) -> Self;
    /// erf(x): f32 [`erf_f32`] (a vectorisable fit, within 2e-7 of libm's
    /// erff), f64 the exact one (candle's `erf_f64`, which `gelu_erf` uses)
    fn erf(self) -> Self;
    /// values as candle's CPU storage of this type
    fn storage(values: Vec<Self>) -> CpuStorage;
}

impl Real for f32 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn erf(self) -> Self {
        erf_f32(self)
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

/// The contiguous values of a tensor's storage.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{what} needs contiguous input") };
    Ok(&T::cpu_storage_as_slice(s)?[start..end])
}

/// The contiguous values of several inputs of one type (an op's operands).
pub(crate) fn slices<'a, T: WithDType, const N: usize>(
    inputs: [(&'a CpuStorage, &Layout); N],
    what: &str,
) -> Result<[&'a [T]; N]> {
    let mut out = [&[][..]; N];
    for (o, (s, l)) in out.iter_mut().zip(inputs) {
        *o = slice(s, l, what)?;
    }
    Ok(out)
}

/// Rows per block of a reduction over rows: blocks are summed in order, so
/// results do not depend on how many threads ran them.
pub(crate) const ROW_BLOCK: usize = 256;

/// dst += each of `partial` in turn (per-block sums, in block order).
pub(crate) fn add_in_order<T: Real>(dst: &mut [T], partial: Vec<Vec<T>>) {
    for p in partial {
        dst.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfllmer_core::simd::{paths, Path};

    /// Everything the kernels compute on one input, as bits.
    #[inline(always)]
    fn everything<T: Real>(a: &[T], b: &[T]) -> Vec<T> {
        let mut out = Vec::new();
        for n in [0, 1, 15, 16, 17, 40, a.len()] {
            let (a, b) = (&a[..n], &b[..n]);
            let max = max_lanes(a);
            out.extend([max, sum_lanes(a, |v| v * v), sum_exp_lanes(a, max), dot_lanes(a, b)]);
            let mut e = a.to_vec();
            let half = T::from(0.5).unwrap_or_else(T::one);
            out.push(exp_in_place_lanes(&mut e, half, max * half));
            out.extend(e);
            if n > 0 {
                let (mean, inv) = moments(a, half);
                let mut y = vec![T::zero(); n];
                layer_norm_row(a, b, b, half, &mut y);
                out.extend([mean, inv, row_norm(a)]);
                out.extend(y);
                let mut u = a.to_vec();
                normalize_row(&mut u);
                out.extend(u);
            }
        }
        out.extend(a.iter().map(|&v| gelu(v)));
        out.extend(a.iter().map(|&v| v.fast_exp()));
        out
    }

    #[inline(always)]
    fn elementwise_f32(x: &[f32]) -> Vec<f32> {
        let mut out: Vec<f32> = x.iter().map(|&v| exp_f32(v)).collect();
        out.extend(x.iter().map(|&v| erf_f32(v)));
        out.extend(x.iter().map(|&v| sigmoid(v)));
        out.extend(x.iter().map(|&v| tanh(v)));
        let mut rows = x[..x.len() / 7 * 7].to_vec();
        normalize_rows(&mut rows, 7);
        out.extend(rows);
        out
    }

    fn bits<T: Real>(v: &[T]) -> Vec<u64> {
        v.iter().map(|x| x.to_f64().unwrap_or(f64::NAN).to_bits()).collect()
    }

    #[test]
    fn every_instruction_set_path_computes_the_scalar_paths_bits() {
        let x: Vec<f64> = (0..1001).map(|i| (i as f64 * 0.618_034).sin() * 9.0 - (i % 7) as f64).collect();
        let y: Vec<f64> = (0..1001).map(|i| (i as f64 * 1.37).cos() * 2.0).collect();
        let (x32, y32): (Vec<f32>, Vec<f32>) =
            (x.iter().map(|&v| v as f32).collect(), y.iter().map(|&v| v as f32).collect());
        // also beyond exp's and erf's ranges
        let wide: Vec<f32> = (0..20_000).map(|i| (i as f32 - 10_000.0) * 0.0123).collect();
        let run = |p: &Path| {
            let a = p.run(
                #[inline(always)]
                || bits(&everything(&x, &y)),
            );
            let b = p.run(
                #[inline(always)]
                || bits(&everything(&x32, &y32)),
            );
            let c = p.run(
                #[inline(always)]
                || bits(&elementwise_f32(&wide)),
            );
            (a, b, c)
        };
        let paths = paths();
        assert_eq!(paths[0].name(), "scalar");
        let scalar = run(&paths[0]);
        // the check can fail: a different summation order changes bits
        let sequential: f32 = x32.iter().map(|v| v * v).sum();
        assert_ne!(sequential.to_bits(), sum_lanes(&x32, |v| v * v).to_bits());
        for p in &paths[1..] {
            let ours = run(p);
            assert!(ours.0 == scalar.0, "{}: f64 kernels differ from the scalar path", p.name());
            assert!(ours.1 == scalar.1, "{}: f32 kernels differ from the scalar path", p.name());
            assert!(ours.2 == scalar.2, "{}: f32 functions differ from the scalar path", p.name());
        }
    }
}
