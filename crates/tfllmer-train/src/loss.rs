//! The output layer and its loss as fused candle ops, the logits h·wᵀ
//! made a block of rows at a time and never stored:
//! - [`linear_cross_entropy`]: the mean softmax cross-entropy over all
//!   items (the full softmax);
//! - [`sampled_cross_entropy`]: the sampled softmax, the target against K
//!   negatives shared by every row of the batch, with an optional logQ
//!   correction (Jean et al., ACL 2015; Yi et al., RecSys 2019).
//!
//! candle's composite `cross_entropy` (log_softmax + gather) materialises
//! several logits-sized tensors and is slow in backward; shared/CANDLE.md
//! measured 4.5x PyTorch's time for the output layer with it, 1.5x with a
//! fused op. Forward: the mean of logsumexp(x_i) − x_i[t_i], keeping each
//! row's logsumexp; backward: (softmax(x_i) − onehot(t_i)) · g / N, the
//! upstream gradient g folded in.
//!
//! The logits are made a block of rows at a time (a block fits in the
//! cache) and never stored; backward makes each block again and turns it
//! into its share of ∂h and ∂w at once. This saves writing and reading two
//! N × C matrices (0.4 GB each on an ML-1M batch) per step. The row loops
//! are the lane reductions of [`crate::kernels`].

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::kernels::{
    add_in_order, dispatch, dot_lanes, exp_in_place_lanes, gemm, max_lanes, slices, sum_exp_lanes, Mat, Real,
};
use crate::ops::by_dtype;

/// Rows of logits made at once (a block of 64 × 3,706 f32 logits is 0.9 MB).
const LOGIT_ROWS: usize = 64;
/// Blocks whose ∂w share one partial sum; the partial sums are added in
/// order, so ∂w does not depend on the thread count.
const BLOCKS_PER_GROUP: usize = 16;

/// Mean cross-entropy of the logits `h`·`w`ᵀ (h: N × D, w: C × D) against
/// `targets` (N class indices below C), without storing the logits; the
/// same value and gradients as candle's
/// `cross_entropy(&h.matmul(&w.t()?)?, ..)`.
pub fn linear_cross_entropy(h: &Tensor, w: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (n, d) = h.dims2()?;
    let (c, dw) = w.dims2()?;
    if d != dw {
        candle_core::bail!("hidden states of width {d} against item vectors of width {dw}");
    }
    if targets.len() != n || targets.iter().any(|&t| t as usize >= c) {
        candle_core::bail!("targets must be {n} class indices below {c}");
    }
    let op = LinearCrossEntropy { targets: Arc::new(targets.to_vec()), row_lse: Arc::new(Mutex::new(Vec::new())) };
    h.contiguous()?.apply_op2(&w.contiguous()?, op)
}

struct LinearCrossEntropy {
    targets: Arc<Vec<u32>>,
    row_lse: Arc<Mutex<Vec<f64>>>,
}

/// ∂h (N rows) and ∂w (C rows) stacked in one (N + C) × D tensor.
struct LinearCrossEntropyGrad {
    targets: Arc<Vec<u32>>,
    row_lse: Vec<f64>,
    scale: f64,
}

/// logsumexp of a row: max + ln Σ exp(v − max)
#[inline(always)]
fn row_log_sum_exp<T: Real>(row: &[T]) -> T {
    let max = max_lanes(row);
    max + sum_exp_lanes(row, max).ln()
}

/// One block of logits: rows of `h` (D wide) against every row of `w`.
fn logits_block<T: Real>(out: &mut [T], h_rows: &[T], w: &[T], c: usize, d: usize) {
    let rows = h_rows.len() / d;
    gemm(out, c, rows, c, d, Mat::rows(h_rows, d), Mat::transposed(w, d), false);
}

/// (mean loss, each row's logsumexp)
fn linear_ce_forward<T: Real>(h: &[T], w: &[T], t: &[u32], c: usize, d: usize) -> (f64, Vec<f64>) {
    let n = t.len();
    let mut lse = vec![0.0f64; n];
    let mut loss = vec![0.0f64; n];
    lse.par_chunks_mut(LOGIT_ROWS).zip(loss.par_chunks_mut(LOGIT_ROWS)).enumerate().for_each_init(
        || vec![T::zero(); LOGIT_ROWS * c],
        |logits, (block, (lse, loss))| {
            let first = block * LOGIT_ROWS;
            let rows = lse.len();
            logits_block(logits, &h[first * d..(first + rows) * d], w, c, d);
            dispatch(
                #[inline(always)]
                || {
                    for (i, row) in logits[..rows * c].chunks(c).enumerate() {
                        let l = row_log_sum_exp(row);
                        lse[i] = l.to_f64();
                        loss[i] = (l - row[t[first + i] as usize]).to_f64();
                    }
                },
            );
        },
    );
    (loss.iter().sum::<f64>() / n.max(1) as f64, lse)
}

/// ∂h and ∂w of `scale` × the mean loss, stacked: (N + C) × D
fn linear_ce_backward<T: Real>(h: &[T], w: &[T], t: &[u32], row_lse: &[f64], scale: f64, c: usize, d: usize) -> Vec<T> {
    let n = t.len();
    let weight = T::from(scale / n.max(1) as f64).unwrap_or_else(T::zero);
    let mut out = vec![T::zero(); (n + c) * d];
    let (dh, dw) = out.split_at_mut(n * d);
    let group_rows = LOGIT_ROWS * BLOCKS_PER_GROUP;
    let partial: Vec<Vec<T>> = dh
        .par_chunks_mut(group_rows * d)
        .enumerate()
        .map(|(group, dh)| {
            let mut dw = vec![T::zero(); c * d];
            let mut g = vec![T::zero(); LOGIT_ROWS * c];
            for (b, dh) in dh.chunks_mut(LOGIT_ROWS * d).enumerate() {
                let first = group * group_rows + b * LOGIT_ROWS;
                let rows = dh.len() / d;
                let h_rows = &h[first * d..(first + rows) * d];
                logits_block(&mut g, h_rows, w, c, d);
                // (softmax − onehot) · weight
                dispatch(
                    #[inline(always)]
                    || {
                        for (i, row) in g[..rows * c].chunks_mut(c).enumerate() {
                            let lse = T::from(row_lse[first + i]).unwrap_or_else(T::zero);
                            exp_in_place_lanes(row, T::one(), lse);
                            row.iter_mut().for_each(|v| *v *= weight);
                            let k = t[first + i] as usize;
                            row[k] -= weight;
                        }
                    },
                );
                let g = &g[..rows * c];
                gemm(dh, d, rows, d, c, Mat::rows(g, c), Mat::rows(w, d), false);
                gemm(&mut dw, d, c, d, rows, Mat::transposed(g, c), Mat::rows(h_rows, d), true);
            }
            dw
        })
        .collect();
    add_in_order(dw, partial);
    out
}

impl CustomOp2 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        "linear-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, d) = l2.shape().dims2()?;
        let (storage, lse) = by_dtype!(s1, "the fused output layer", |T| {
            let [h, w] = slices::<T, 2>([(s1, l1), (s2, l2)], "the output layer")?;
            let (loss, lse) = linear_ce_forward(h, w, &self.targets, c, d);
            (T::storage(vec![<T as WithDType>::from_f64(loss)]), lse)
        });
        *self.row_lse.lock().map_err(|_| candle_core::Error::Msg("loss state poisoned".into()))? = lse;
        Ok((storage, Shape::from(())))
    }

    fn bwd(&self, h: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let row_lse = self.row_lse.lock().map_err(|_| candle_core::Error::Msg("loss state poisoned".into()))?.clone();
        let scale = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let op = LinearCrossEntropyGrad { targets: self.targets.clone(), row_lse, scale };
        let both = h.apply_op2_no_bwd(w, &op)?;
        let n = h.dim(0)?;
        Ok((Some(both.narrow(0, 0, n)?), Some(both.narrow(0, n, w.dim(0)?)?)))
    }
}

impl CustomOp2 for LinearCrossEntropyGrad {
    fn name(&self) -> &'static str {
        "linear-cross-entropy-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, d) = l1.shape().dims2()?;
        let (c, _) = l2.shape().dims2()?;
        by_dtype!(s1, "the fused output layer", |T| {
            let [h, w] = slices::<T, 2>([(s1, l1), (s2, l2)], "the output layer")?;
            let grad = linear_ce_backward(h, w, &self.targets, &self.row_lse, self.scale, c, d);
            Ok((T::storage(grad), Shape::from((n + c, d))))
        })
    }
}

/// The sampled softmax's negatives and correction, shared by the batch.
#[derive(Clone, Debug)]
pub struct Negatives {
    /// K row indices of `w`, drawn with replacement (a row drawn twice
    /// counts twice, as the estimator expects)
    pub rows: Vec<u32>,
    /// ln Q(row) for every row of `w` (the logQ correction, subtracted from
    /// each logit, the target's included), or None for uniform sampling,
    /// where it is the same for every row and cancels
    pub log_q: Option<Vec<f64>>,
}

/// Mean sampled-softmax cross-entropy of the logits `h`·`w`ᵀ (h: N × D,
/// w: M × D): row i's candidates are its target `targets[i]` and the K
/// shared `negatives.rows`, each logit minus ln Q of its row when
/// `negatives.log_q` is given; a negative equal to row i's target is left
/// out of row i (the positive is never its own negative). Never stores the
/// N × K logits; gradients flow to `h` and to the rows of `w` that were
/// used (the others get zero). With every row of `w` as the negatives and
/// no correction it is [`linear_cross_entropy`].
pub fn sampled_cross_entropy(h: &Tensor, w: &Tensor, targets: &[u32], negatives: &Negatives) -> Result<Tensor> {
    let (n, d) = h.dims2()?;
    let (m, dw) = w.dims2()?;
    if d != dw {
        candle_core::bail!("hidden states of width {d} against item vectors of width {dw}");
    }
    if targets.len() != n || targets.iter().any(|&t| t as usize >= m) {
        candle_core::bail!("targets must be {n} row indices below {m}");
    }
    if negatives.rows.is_empty() || negatives.rows.iter().any(|&k| k as usize >= m) {
        candle_core::bail!("negatives must be at least one row index below {m}");
    }
    if let Some(q) = &negatives.log_q {
        if q.len() != m || q.iter().any(|v| !v.is_finite()) {
            candle_core::bail!("the logQ correction must be {m} finite values");
        }
    }
    let op = SampledCrossEntropy {
        targets: Arc::new(targets.to_vec()),
        negatives: Arc::new(negatives.clone()),
        row_lse: Arc::new(Mutex::new(Vec::new())),
    };
    h.contiguous()?.apply_op2(&w.contiguous()?, op)
}

struct SampledCrossEntropy {
    targets: Arc<Vec<u32>>,
    negatives: Arc<Negatives>,
    row_lse: Arc<Mutex<Vec<f64>>>,
}

/// ∂h (N rows) and ∂w (M rows) stacked in one (N + M) × D tensor.
struct SampledCrossEntropyGrad {
    targets: Arc<Vec<u32>>,
    negatives: Arc<Negatives>,
    row_lse: Vec<f64>,
    scale: f64,
}

/// What the sampled loss's forward and backward share: the negatives' rows
/// of w gathered (K × D), their corrections, and the targets' corrections.
struct SampledRows<'a, T> {
    neg: Vec<T>,
    neg_rows: &'a [u32],
    neg_shift: Vec<T>,
    log_q: Option<&'a [f64]>,
    k: usize,
}

impl<'a, T: Real> SampledRows<'a, T> {
    fn new(w: &[T], d: usize, negatives: &'a Negatives) -> Self {
        let rows = &negatives.rows;
        let mut neg = Vec::with_capacity(rows.len() * d);
        for &r in rows {
            neg.extend_from_slice(&w[r as usize * d..(r as usize + 1) * d]);
        }
        let log_q = negatives.log_q.as_deref();
        let neg_shift =
            rows.iter().map(|&r| T::from(log_q.map_or(0.0, |q| q[r as usize])).unwrap_or_else(T::zero)).collect();
        Self { neg, neg_rows: rows, neg_shift, log_q, k: rows.len() }
    }

    /// Row i's logits against the negatives (corrected, its target masked
    /// to −∞) in `row`, and its target's corrected logit.
    #[inline(always)]
    fn finish_row(&self, row: &mut [T], h_i: &[T], w: &[T], d: usize, target: u32) -> T {
        for ((v, &r), &c) in row.iter_mut().zip(self.neg_rows).zip(&self.neg_shift) {
            *v = if r == target { T::neg_infinity() } else { *v - c };
        }
        let t = target as usize;
        let shift = T::from(self.log_q.map_or(0.0, |q| q[t])).unwrap_or_else(T::zero);
        dot_lanes(h_i, &w[t * d..(t + 1) * d]) - shift
    }
}

/// (mean loss, each row's logsumexp)
fn sampled_ce_forward<T: Real>(h: &[T], w: &[T], t: &[u32], negatives: &Negatives, d: usize) -> (f64, Vec<f64>) {
    let n = t.len();
    let s = SampledRows::new(w, d, negatives);
    let k = s.k;
    let mut lse = vec![0.0f64; n];
    let mut loss = vec![0.0f64; n];
    lse.par_chunks_mut(LOGIT_ROWS).zip(loss.par_chunks_mut(LOGIT_ROWS)).enumerate().for_each_init(
        || vec![T::zero(); LOGIT_ROWS * k],
        |logits, (block, (lse, loss))| {
            let first = block * LOGIT_ROWS;
            let rows = lse.len();
            let h_rows = &h[first * d..(first + rows) * d];
            logits_block(logits, h_rows, &s.neg, k, d);
            dispatch(
                #[inline(always)]
                || {
                    for (i, row) in logits[..rows * k].chunks_mut(k).enumerate() {
                        let p = s.finish_row(row, &h_rows[i * d..(i + 1) * d], w, d, t[first + i]);
                        let max = num_traits::Float::max(max_lanes(row), p);
                        let l = max + (sum_exp_lanes(row, max) + (p - max).fast_exp()).ln();
                        lse[i] = l.to_f64();
                        loss[i] = (l - p).to_f64();
                    }
                },
            );
        },
    );
    (loss.iter().sum::<f64>() / n.max(1) as f64, lse)
}

/// ∂h and ∂w of `scale` × the mean sampled loss, stacked: (N + M) × D
fn sampled_ce_backward<T: Real>(
    h: &[T],
    w: &[T],
    t: &[u32],
    negatives: &Negatives,
    row_lse: &[f64],
    scale: f64,
    d: usize,
) -> Vec<T> {
    let (n, m) = (t.len(), w.len() / d.max(1));
    let s = SampledRows::new(w, d, negatives);
    let k = s.k;
    let weight = T::from(scale / n.max(1) as f64).unwrap_or_else(T::zero);
    let mut out = vec![T::zero(); (n + m) * d];
    let (dh, dw) = out.split_at_mut(n * d);
    // each row's gradient on its target's logit, (softmax − 1) · weight
    let mut target_coef = vec![T::zero(); n];
    let group_rows = LOGIT_ROWS * BLOCKS_PER_GROUP;
    let partial: Vec<Vec<T>> = dh
        .par_chunks_mut(group_rows * d)
        .zip(target_coef.par_chunks_mut(group_rows))
        .enumerate()
        .map(|(group, (dh, coef))| {
            let mut dneg = vec![T::zero(); k * d];
            let mut g = vec![T::zero(); LOGIT_ROWS * k];
            for (b, (dh, coef)) in dh.chunks_mut(LOGIT_ROWS * d).zip(coef.chunks_mut(LOGIT_ROWS)).enumerate() {
                let first = group * group_rows + b * LOGIT_ROWS;
                let rows = coef.len();
                let h_rows = &h[first * d..(first + rows) * d];
                logits_block(&mut g, h_rows, &s.neg, k, d);
                dispatch(
                    #[inline(always)]
                    || {
                        for (i, row) in g[..rows * k].chunks_mut(k).enumerate() {
                            let p = s.finish_row(row, &h_rows[i * d..(i + 1) * d], w, d, t[first + i]);
                            let lse = T::from(row_lse[first + i]).unwrap_or_else(T::zero);
                            exp_in_place_lanes(row, T::one(), lse);
                            row.iter_mut().for_each(|v| *v *= weight);
                            coef[i] = ((p - lse).fast_exp() - T::one()) * weight;
                        }
                    },
                );
                let g = &g[..rows * k];
                gemm(dh, d, rows, d, k, Mat::rows(g, k), Mat::rows(&s.neg, d), false);
                gemm(&mut dneg, d, k, d, rows, Mat::transposed(g, k), Mat::rows(h_rows, d), true);
                for (i, dh_i) in dh.chunks_mut(d).enumerate() {
                    let target = t[first + i] as usize;
                    for (a, &b) in dh_i.iter_mut().zip(&w[target * d..(target + 1) * d]) {
                        *a += coef[i] * b;
                    }
                }
            }
            dneg
        })
        .collect();
    let mut dneg = vec![T::zero(); k * d];
    add_in_order(&mut dneg, partial);
    // scatter onto the rows of w, in order (a row drawn twice gets both)
    for (&r, g) in s.neg_rows.iter().zip(dneg.chunks(d)) {
        dw[r as usize * d..(r as usize + 1) * d].iter_mut().zip(g).for_each(|(a, &b)| *a += b);
    }
    for ((&target, &c), h_i) in t.iter().zip(&target_coef).zip(h.chunks(d)) {
        dw[target as usize * d..(target as usize + 1) * d].iter_mut().zip(h_i).for_each(|(a, &b)| *a += c * b);
    }
    out
}

impl CustomOp2 for SampledCrossEntropy {
    fn name(&self) -> &'static str {
        "sampled-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, d) = l2.shape().dims2()?;
        let (storage, lse) = by_dtype!(s1, "the sampled output layer", |T| {
            let [h, w] = slices::<T, 2>([(s1, l1), (s2, l2)], "the output layer")?;
            let (loss, lse) = sampled_ce_forward(h, w, &self.targets, &self.negatives, d);
            (T::storage(vec![<T as WithDType>::from_f64(loss)]), lse)
        });
        *self.row_lse.lock().map_err(|_| candle_core::Error::Msg("loss state poisoned".into()))? = lse;
        Ok((storage, Shape::from(())))
    }

    fn bwd(&self, h: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let row_lse = self.row_lse.lock().map_err(|_| candle_core::Error::Msg("loss state poisoned".into()))?.clone();
        let scale = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let op = SampledCrossEntropyGrad {
            targets: self.targets.clone(),
            negatives: self.negatives.clone(),
            row_lse,
            scale,
        };
        let both = h.apply_op2_no_bwd(w, &op)?;
        let n = h.dim(0)?;
        Ok((Some(both.narrow(0, 0, n)?), Some(both.narrow(0, n, w.dim(0)?)?)))
    }
}

impl CustomOp2 for SampledCrossEntropyGrad {
    fn name(&self) -> &'static str {
        "sampled-cross-entropy-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, d) = l1.shape().dims2()?;
        let (m, _) = l2.shape().dims2()?;
        by_dtype!(s1, "the sampled output layer", |T| {
            let [h, w] = slices::<T, 2>([(s1, l1), (s2, l2)], "the output layer")?;
            let grad = sampled_ce_backward(h, w, &self.targets, &self.negatives, &self.row_lse, self.scale, d);
            Ok((T::storage(grad), Shape::from((n + m, d))))
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::ops::testing::flat;

    /// The c × c identity, so that h·wᵀ = h: the fused op on plain logits.
    fn identity(c: usize, dtype: DType) -> Tensor {
        Tensor::eye(c, dtype, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_candles_composite_loss_and_gradient() {
        let dev = Device::Cpu;
        let values: Vec<f64> = (0..6 * 9).map(|i| ((i * 37 % 23) as f64 - 11.0) / 3.0).collect();
        let targets = vec![0u32, 8, 3, 3, 5, 1];
        let t = Tensor::from_vec(targets.clone(), 6, &dev).unwrap();
        for dtype in [DType::F64, DType::F32] {
            let x = Var::from_tensor(&Tensor::from_vec(values.clone(), (6, 9), &dev).unwrap().to_dtype(dtype).unwrap())
                .unwrap();
            let ours = linear_cross_entropy(x.as_tensor(), &identity(9, dtype), &targets).unwrap();
            let theirs = candle_nn::loss::cross_entropy(x.as_tensor(), &t).unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let (a, b) = (flat(&ours)[0], flat(&theirs)[0]);
            assert!((a - b).abs() < tol, "{a} vs {b}");
            let gradient = |loss: &Tensor| flat(loss.backward().unwrap().get(&x).unwrap());
            for (p, q) in gradient(&ours).iter().zip(&gradient(&theirs)) {
                assert!((p - q).abs() < tol, "gradient {p} vs {q}");
            }
        }
    }

    #[test]
    fn the_fused_output_layer_matches_matmul_then_cross_entropy() {
        let dev = Device::Cpu;
        // more rows than one group of blocks, so partial sums are added up
        let (n, c, d) = (2 * LOGIT_ROWS * BLOCKS_PER_GROUP + 37, 45, 6);
        let hv: Vec<f64> = (0..n * d).map(|i| ((i * 31 % 29) as f64 - 14.0) / 5.0).collect();
        let wv: Vec<f64> = (0..c * d).map(|i| ((i * 17 % 19) as f64 - 9.0) / 4.0).collect();
        let targets: Vec<u32> = (0..n).map(|i| (i * 7 % c) as u32).collect();
        let t = Tensor::from_vec(targets.clone(), n, &dev).unwrap();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            let h = Var::from_tensor(&Tensor::from_vec(hv.clone(), (n, d), &dev).unwrap().to_dtype(dtype).unwrap())
                .unwrap();
            let w = Var::from_tensor(&Tensor::from_vec(wv.clone(), (c, d), &dev).unwrap().to_dtype(dtype).unwrap())
                .unwrap();
            // a scaled loss, so the upstream gradient is not 1
            let ours = (linear_cross_entropy(h.as_tensor(), w.as_tensor(), &targets).unwrap() * 3.0).unwrap();
            let logits = h.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
            let theirs = (candle_nn::loss::cross_entropy(&logits, &t).unwrap() * 3.0).unwrap();
            let value = |x: &Tensor| flat(x)[0];
            assert!((value(&ours) - value(&theirs)).abs() < tol * value(&theirs), "loss");
            let (ga, gb) = (ours.backward().unwrap(), theirs.backward().unwrap());
            for v in [&h, &w] {
                for (p, q) in flat(ga.get(v).unwrap()).iter().zip(flat(gb.get(v).unwrap())) {
                    assert!((p - q).abs() < tol * (1.0 + q.abs()), "gradient {p} vs {q} ({dtype:?})");
                }
            }
        }
        assert!(linear_cross_entropy(
            &Tensor::zeros((2, 3), DType::F32, &dev).unwrap(),
            &Tensor::zeros((4, 3), DType::F32, &dev).unwrap(),
            &[0, 4]
        )
        .is_err());
    }

    #[test]
    fn large_logits_stay_finite_and_bad_targets_are_errors() {
        let x = Tensor::from_vec(vec![1000.0f32, -1000.0, 0.0, 999.0], (2, 2), &Device::Cpu).unwrap();
        let loss = linear_cross_entropy(&x, &identity(2, DType::F32), &[0, 1]).unwrap().to_scalar::<f32>().unwrap();
        assert!(loss.is_finite() && loss >= 0.0);
        assert!(linear_cross_entropy(&x, &identity(2, DType::F32), &[0, 2]).is_err());
    }

    fn tensors(n: usize, m: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
        let hv = (0..n * d).map(|i| ((i * 31 % 29) as f64 - 14.0) / 5.0).collect();
        let wv = (0..m * d).map(|i| ((i * 17 % 19) as f64 - 9.0) / 4.0).collect();
        (hv, wv)
    }

    fn var(values: &[f64], shape: (usize, usize), dtype: DType) -> Var {
        Var::from_tensor(&Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap())
            .unwrap()
    }

    #[test]
    fn the_sampled_loss_with_every_item_as_negative_is_the_full_softmax() {
        // more rows than one group of blocks, so partial sums are added up
        let (n, m, d) = (LOGIT_ROWS * BLOCKS_PER_GROUP + 45, 37, 5);
        let (hv, wv) = tensors(n, m, d);
        let targets: Vec<u32> = (0..n).map(|i| (i * 7 % m) as u32).collect();
        let all = Negatives { rows: (0..m as u32).collect(), log_q: None };
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            let (h, w) = (var(&hv, (n, d), dtype), var(&wv, (m, d), dtype));
            let sampled = (sampled_cross_entropy(h.as_tensor(), w.as_tensor(), &targets, &all).unwrap() * 3.0).unwrap();
            let full = (linear_cross_entropy(h.as_tensor(), w.as_tensor(), &targets).unwrap() * 3.0).unwrap();
            let (a, b) = (flat(&sampled)[0], flat(&full)[0]);
            assert!((a - b).abs() < tol * b, "loss {a} vs {b}");
            let (ga, gb) = (sampled.backward().unwrap(), full.backward().unwrap());
            for v in [&h, &w] {
                for (p, q) in flat(ga.get(v).unwrap()).iter().zip(flat(gb.get(v).unwrap())) {
                    assert!((p - q).abs() < tol * (1.0 + q.abs()), "gradient {p} vs {q} ({dtype:?})");
                }
            }
        }
    }

    /// The sampled loss from candle's composite ops: the negatives' logits
    /// minus their correction, −1e30 where a negative is the row's target.
    fn composite_sampled(h: &Tensor, w: &Tensor, targets: &[u32], negatives: &Negatives) -> Tensor {
        let dev = Device::Cpu;
        let (n, m, k) = (targets.len(), w.dim(0).unwrap(), negatives.rows.len());
        let q = negatives.log_q.clone().unwrap_or_else(|| vec![0.0; m]);
        let neg = w.index_select(&Tensor::from_vec(negatives.rows.clone(), k, &dev).unwrap(), 0).unwrap();
        let tw = w.index_select(&Tensor::from_vec(targets.to_vec(), n, &dev).unwrap(), 0).unwrap();
        let mut shift = Vec::with_capacity(n * (k + 1));
        for &t in targets {
            shift.push(q[t as usize]);
            shift.extend(negatives.rows.iter().map(|&r| if r == t { 1e30 } else { q[r as usize] }));
        }
        let shift = Tensor::from_vec(shift, (n, k + 1), &dev).unwrap();
        let positive = (h * &tw).unwrap().sum_keepdim(1).unwrap();
        let logits = Tensor::cat(&[&positive, &h.matmul(&neg.t().unwrap()).unwrap()], 1).unwrap();
        let logits = (logits - shift).unwrap();
        let zeros = Tensor::zeros(n, DType::U32, &dev).unwrap();
        candle_nn::loss::cross_entropy(&logits, &zeros).unwrap()
    }

    #[test]
    fn the_sampled_loss_matches_its_composite_version_with_correction_and_accidental_hits() {
        let (n, m, d) = (2 * LOGIT_ROWS + 9, 23, 4);
        let (hv, wv) = tensors(n, m, d);
        let targets: Vec<u32> = (0..n).map(|i| (i * 5 % m) as u32).collect();
        // duplicates, and negatives that are some rows' targets
        let rows = vec![3, 0, 5, 3, 22, 10, 7];
        let log_q: Vec<f64> = (0..m).map(|j| -((j % 5) as f64) - 1.5).collect();
        for log_q in [None, Some(log_q)] {
            let negatives = Negatives { rows: rows.clone(), log_q };
            let (h, w) = (var(&hv, (n, d), DType::F64), var(&wv, (m, d), DType::F64));
            let ours =
                (sampled_cross_entropy(h.as_tensor(), w.as_tensor(), &targets, &negatives).unwrap() * 2.0).unwrap();
            let theirs = (composite_sampled(h.as_tensor(), w.as_tensor(), &targets, &negatives) * 2.0).unwrap();
            let (a, b) = (flat(&ours)[0], flat(&theirs)[0]);
            assert!((a - b).abs() < 1e-12 * b, "loss {a} vs {b}");
            let (ga, gb) = (ours.backward().unwrap(), theirs.backward().unwrap());
            for v in [&h, &w] {
                for (p, q) in flat(ga.get(v).unwrap()).iter().zip(flat(gb.get(v).unwrap())) {
                    assert!((p - q).abs() < 1e-12 * (1.0 + q.abs()), "gradient {p} vs {q}");
                }
            }
            // rows neither drawn nor a target get no gradient
            let used: std::collections::HashSet<u32> = rows.iter().chain(&targets).copied().collect();
            let gw = flat(ga.get(&w).unwrap());
            for j in (0..m).filter(|j| !used.contains(&(*j as u32))) {
                assert!(gw[j * d..(j + 1) * d].iter().all(|&g| g == 0.0), "row {j}");
            }
        }
    }

    #[test]
    fn a_uniform_correction_changes_nothing_and_bad_input_is_an_error() {
        let (n, m, d) = (10, 8, 3);
        let (hv, wv) = tensors(n, m, d);
        let (h, w) = (var(&hv, (n, d), DType::F64), var(&wv, (m, d), DType::F64));
        let targets: Vec<u32> = (0..n as u32).map(|i| i % m as u32).collect();
        let plain = Negatives { rows: vec![1, 4, 6], log_q: None };
        let uniform = Negatives { log_q: Some(vec![-(m as f64).ln(); m]), ..plain.clone() };
        let a = flat(&sampled_cross_entropy(h.as_tensor(), w.as_tensor(), &targets, &plain).unwrap())[0];
        let b = flat(&sampled_cross_entropy(h.as_tensor(), w.as_tensor(), &targets, &uniform).unwrap())[0];
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        let bad = |t: &[u32], neg: Negatives| sampled_cross_entropy(h.as_tensor(), w.as_tensor(), t, &neg).is_err();
        assert!(bad(&targets[..3], plain.clone()), "too few targets");
        assert!(bad(&[8; 10], plain.clone()), "a target beyond the rows");
        assert!(bad(&targets, Negatives { rows: vec![], log_q: None }), "no negatives");
        assert!(bad(&targets, Negatives { rows: vec![8], log_q: None }), "a negative beyond the rows");
        assert!(bad(&targets, Negatives { log_q: Some(vec![0.0; 3]), ..plain.clone() }), "short correction");
        assert!(bad(&targets, Negatives { log_q: Some(vec![f64::NEG_INFINITY; m]), ..plain }), "infinite correction");
    }
}
