//! The output layer and its loss as fused candle ops, the logits h·wᵀ
//! made a block of rows at a time and never stored:
//! - [`linear_cross_entropy`]: the mean softmax cross-entropy over all
//!   items (the full softmax);
//! - [`sampled_cross_entropy`]: the sampled softmax, the target against K
//!   negatives drawn for its group of rows (one sequence's positions, or
//!   the whole batch), with the logQ correction (Jean et al., ACL 2015;
//!   Yi et al., RecSys 2019).
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

/// The sampled softmax's negatives and correction: groups of consecutive
/// rows of `h` (for training: the positions of one sequence) each with K
/// negatives of their own; one group = K negatives shared by every row.
#[derive(Clone, Debug)]
pub struct Negatives {
    /// groups × K row indices of `w`, group g's at g·K..(g + 1)·K, drawn
    /// with replacement (a row drawn twice counts twice, as the estimator
    /// expects)
    pub rows: Vec<u32>,
    /// the first row of `h` in each group, ascending from 0; group g is
    /// rows starts[g]..starts[g + 1] (the last runs to N)
    pub starts: Vec<usize>,
    /// For every row of `w`, ln of the number of times a draw of K is
    /// expected to hold it, ln(K·Q(row)) (the logQ correction), subtracted
    /// from that row's logit where it is a negative; the target's logit is
    /// not corrected (it is given, not drawn). Then Σ over the negatives of
    /// exp(logit − ln(K·Q)) is an unbiased estimate of the sum over every
    /// non-target item, and the loss estimates the full softmax's (Bengio &
    /// Senécal, IEEE TNN 2008; Jean et al., ACL 2015). None: no correction
    /// (each drawn row counts once, as if K·Q = 1).
    pub correction: Option<Vec<f64>>,
}

impl Negatives {
    /// K negatives shared by every row.
    pub fn shared(rows: Vec<u32>, correction: Option<Vec<f64>>) -> Self {
        Self { rows, starts: vec![0], correction }
    }

    /// Negatives per group.
    pub fn k(&self) -> usize {
        self.rows.len() / self.starts.len().max(1)
    }
}

/// Mean sampled-softmax cross-entropy of the logits `h`·`w`ᵀ (h: N × D,
/// w: M × D): row i's candidates are its target `targets[i]` and the K
/// negatives of its group, each negative's logit minus its row's
/// `negatives.correction` when given; a negative equal to row i's target is
/// left out of row i (the positive is never its own negative). Never
/// stores the N × K logits; gradients flow to `h` and to the rows of `w`
/// that were used (the others get zero). With every row of `w` as the
/// negatives of one group and no correction it is [`linear_cross_entropy`].
/// Errors: widths that differ, targets or negatives beyond M, no
/// negatives, group starts that are not ascending from 0 within N, rows
/// not a multiple of the groups, a correction not M finite values.
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
    let starts = &negatives.starts;
    if starts.first() != Some(&0)
        || starts.windows(2).any(|p| p[0] > p[1])
        || starts.last().is_some_and(|&s| s > n)
        || !negatives.rows.len().is_multiple_of(starts.len())
    {
        candle_core::bail!("negative groups must start at 0, ascend within {n} rows and share the rows evenly");
    }
    if let Some(q) = &negatives.correction {
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

/// A run of at most LOGIT_ROWS × BLOCKS_PER_GROUP rows of `h` inside one
/// group: the unit of parallel work of the sampled loss.
#[derive(Clone, Copy)]
struct Span {
    group: usize,
    first: usize,
    end: usize,
}

/// The spans of `negatives`' groups over n rows, in row order.
fn spans(negatives: &Negatives, n: usize) -> Vec<Span> {
    let starts = &negatives.starts;
    let mut out = Vec::new();
    for (group, &first) in starts.iter().enumerate() {
        let end = starts.get(group + 1).copied().unwrap_or(n);
        let mut at = first;
        while at < end {
            let stop = end.min(at + LOGIT_ROWS * BLOCKS_PER_GROUP);
            out.push(Span { group, first: at, end: stop });
            at = stop;
        }
    }
    out
}

/// What a group's rows share: its negatives' rows of w gathered (K × D)
/// and their corrections.
struct SampledRows<'a, T> {
    neg: Vec<T>,
    neg_rows: &'a [u32],
    neg_shift: Vec<T>,
}

impl<'a, T: Real> SampledRows<'a, T> {
    fn new(w: &[T], d: usize, negatives: &'a Negatives, group: usize) -> Self {
        let k = negatives.k();
        let rows = &negatives.rows[group * k..(group + 1) * k];
        let mut neg = Vec::with_capacity(k * d);
        for &r in rows {
            neg.extend_from_slice(&w[r as usize * d..(r as usize + 1) * d]);
        }
        let correction = negatives.correction.as_deref();
        let neg_shift =
            rows.iter().map(|&r| T::from(correction.map_or(0.0, |q| q[r as usize])).unwrap_or_else(T::zero)).collect();
        Self { neg, neg_rows: rows, neg_shift }
    }

    /// Row i's logits against the negatives (corrected, its target masked
    /// to −∞) in `row`, and its target's logit.
    #[inline(always)]
    fn finish_row(&self, row: &mut [T], h_i: &[T], w: &[T], d: usize, target: u32) -> T {
        for ((v, &r), &c) in row.iter_mut().zip(self.neg_rows).zip(&self.neg_shift) {
            *v = if r == target { T::neg_infinity() } else { *v - c };
        }
        let t = target as usize;
        dot_lanes(h_i, &w[t * d..(t + 1) * d])
    }
}

/// Splits `data` (rows of `width` values) into the spans' disjoint pieces.
fn span_slices<'s, V>(mut data: &'s mut [V], spans: &[Span], width: usize) -> Vec<&'s mut [V]> {
    let mut out = Vec::with_capacity(spans.len());
    let mut at = 0;
    for s in spans {
        let (_, rest) = std::mem::take(&mut data).split_at_mut((s.first - at) * width);
        let (piece, rest) = rest.split_at_mut((s.end - s.first) * width);
        out.push(piece);
        data = rest;
        at = s.end;
    }
    out
}

/// (mean loss, each row's logsumexp)
fn sampled_ce_forward<T: Real>(h: &[T], w: &[T], t: &[u32], negatives: &Negatives, d: usize) -> (f64, Vec<f64>) {
    let n = t.len();
    let k = negatives.k();
    let spans = spans(negatives, n);
    let mut lse = vec![0.0f64; n];
    let mut loss = vec![0.0f64; n];
    let work: Vec<_> =
        spans.iter().zip(span_slices(&mut lse, &spans, 1)).zip(span_slices(&mut loss, &spans, 1)).collect();
    work.into_par_iter().for_each_init(
        || vec![T::zero(); LOGIT_ROWS * k],
        |logits, ((span, lse), loss)| {
            let s = SampledRows::new(w, d, negatives, span.group);
            for (b, (lse, loss)) in lse.chunks_mut(LOGIT_ROWS).zip(loss.chunks_mut(LOGIT_ROWS)).enumerate() {
                let first = span.first + b * LOGIT_ROWS;
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
            }
        },
    );
    (loss.iter().sum::<f64>() / n.max(1) as f64, lse)
}

/// Partial ∂w sums (K × D each) alive at once in backward: spans are done
/// this many at a time (a bound on memory, fixed so that ∂w does not
/// depend on the thread count).
fn spans_per_window(k: usize, d: usize) -> usize {
    (WINDOW_VALUES / (k * d).max(1)).max(1)
}

/// Partial ∂w values alive at once in backward (64 MB of f32); tests use a
/// small window so that several windows run.
#[cfg(not(test))]
const WINDOW_VALUES: usize = 1 << 24;
#[cfg(test)]
const WINDOW_VALUES: usize = 64;

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
    let k = negatives.k();
    let weight = T::from(scale / n.max(1) as f64).unwrap_or_else(T::zero);
    let mut out = vec![T::zero(); (n + m) * d];
    let (dh, dw) = out.split_at_mut(n * d);
    // each row's gradient on its target's logit, (softmax − 1) · weight
    let mut target_coef = vec![T::zero(); n];
    let spans = spans(negatives, n);
    let mut work: Vec<_> =
        spans.iter().zip(span_slices(dh, &spans, d)).zip(span_slices(&mut target_coef, &spans, 1)).collect();
    let window = spans_per_window(k, d);
    while !work.is_empty() {
        let rest = work.split_off(window.min(work.len()));
        let partial: Vec<(usize, Vec<T>)> = work
            .into_par_iter()
            .map(|((span, dh), coef)| {
                let s = SampledRows::new(w, d, negatives, span.group);
                let mut dneg = vec![T::zero(); k * d];
                let mut g = vec![T::zero(); LOGIT_ROWS * k];
                for (b, (dh, coef)) in dh.chunks_mut(LOGIT_ROWS * d).zip(coef.chunks_mut(LOGIT_ROWS)).enumerate() {
                    let first = span.first + b * LOGIT_ROWS;
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
                (span.group, dneg)
            })
            .collect();
        // scatter onto the rows of w, in order (a row drawn twice gets both)
        for (group, dneg) in partial {
            for (&r, g) in negatives.rows[group * k..(group + 1) * k].iter().zip(dneg.chunks(d)) {
                dw[r as usize * d..(r as usize + 1) * d].iter_mut().zip(g).for_each(|(a, &b)| *a += b);
            }
        }
        work = rest;
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
        let all = Negatives::shared((0..m as u32).collect(), None);
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

    /// The sampled loss from candle's composite ops: the target's logit as
    /// is, the negatives' logits minus their correction, −1e30 where a
    /// negative is the row's target.
    fn composite_sampled(h: &Tensor, w: &Tensor, targets: &[u32], negatives: &Negatives) -> Tensor {
        let dev = Device::Cpu;
        let (n, m, k) = (targets.len(), w.dim(0).unwrap(), negatives.rows.len());
        let q = negatives.correction.clone().unwrap_or_else(|| vec![0.0; m]);
        let neg = w.index_select(&Tensor::from_vec(negatives.rows.clone(), k, &dev).unwrap(), 0).unwrap();
        let tw = w.index_select(&Tensor::from_vec(targets.to_vec(), n, &dev).unwrap(), 0).unwrap();
        let mut shift = Vec::with_capacity(n * (k + 1));
        for &t in targets {
            shift.push(0.0);
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
        let correction: Vec<f64> = (0..m).map(|j| -((j % 5) as f64) - 1.5).collect();
        for correction in [None, Some(correction)] {
            let negatives = Negatives::shared(rows.clone(), correction);
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
    fn grouped_negatives_are_each_groups_loss_weighted_by_its_rows() {
        // groups of unequal size (one empty, one over a span), each with its own draws
        let (m, d, k) = (29, 4, 5);
        let sizes = [70usize, 0, LOGIT_ROWS * BLOCKS_PER_GROUP + 3, 9];
        let n: usize = sizes.iter().sum();
        let (hv, wv) = tensors(n, m, d);
        let targets: Vec<u32> = (0..n).map(|i| (i * 11 % m) as u32).collect();
        let rows: Vec<u32> = (0..sizes.len() * k).map(|i| (i * 7 % m) as u32).collect();
        let correction: Vec<f64> = (0..m).map(|j| (j % 3) as f64 * 0.4 - 0.7).collect();
        let starts: Vec<usize> = sizes.iter().scan(0, |at, &s| Some(std::mem::replace(at, *at + s))).collect();
        let grouped = Negatives { rows: rows.clone(), starts: starts.clone(), correction: Some(correction.clone()) };
        let (h, w) = (var(&hv, (n, d), DType::F64), var(&wv, (m, d), DType::F64));
        let ours = sampled_cross_entropy(h.as_tensor(), w.as_tensor(), &targets, &grouped).unwrap();
        let mut parts = Vec::new();
        for (g, (&first, &size)) in starts.iter().zip(&sizes).enumerate().filter(|(_, (_, &s))| s > 0) {
            let shared = Negatives::shared(rows[g * k..(g + 1) * k].to_vec(), Some(correction.clone()));
            let hg = h.as_tensor().narrow(0, first, size).unwrap();
            let part = sampled_cross_entropy(&hg, w.as_tensor(), &targets[first..first + size], &shared).unwrap();
            parts.push((part * (size as f64 / n as f64)).unwrap());
        }
        let theirs = parts.into_iter().reduce(|a, b| (a + b).unwrap()).unwrap();
        let (a, b) = (flat(&ours)[0], flat(&theirs)[0]);
        assert!((a - b).abs() < 1e-12 * b, "loss {a} vs {b}");
        let (ga, gb) = (ours.backward().unwrap(), theirs.backward().unwrap());
        for v in [&h, &w] {
            for (p, q) in flat(ga.get(v).unwrap()).iter().zip(flat(gb.get(v).unwrap())) {
                assert!((p - q).abs() < 1e-12 * (1.0 + q.abs()), "gradient {p} vs {q}");
            }
        }
    }

    #[test]
    fn the_correction_makes_repeated_draws_count_as_their_share_and_bad_input_is_an_error() {
        // every row drawn r times (K = r·M, uniform: K·Q = r): with the
        // correction ln r the estimate of the partition function is exact,
        // so the loss and its gradients are the full softmax's; without it
        // each negative counts r times and the loss is larger
        let (n, m, d, r) = (10, 8, 3, 3);
        let (hv, wv) = tensors(n, m, d);
        let (h, w) = (var(&hv, (n, d), DType::F64), var(&wv, (m, d), DType::F64));
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 3) % m as u32).collect();
        let rows: Vec<u32> = (0..r * m as u32).map(|i| i % m as u32).collect();
        let corrected = Negatives::shared(rows.clone(), Some(vec![f64::from(r).ln(); m]));
        let ours = sampled_cross_entropy(h.as_tensor(), w.as_tensor(), &targets, &corrected).unwrap();
        let full = linear_cross_entropy(h.as_tensor(), w.as_tensor(), &targets).unwrap();
        let (a, b) = (flat(&ours)[0], flat(&full)[0]);
        assert!((a - b).abs() < 1e-12 * b, "loss {a} vs {b}");
        let (ga, gb) = (ours.backward().unwrap(), full.backward().unwrap());
        for v in [&h, &w] {
            for (p, q) in flat(ga.get(v).unwrap()).iter().zip(flat(gb.get(v).unwrap())) {
                assert!((p - q).abs() < 1e-12 * (1.0 + q.abs()), "gradient {p} vs {q}");
            }
        }
        let plain = Negatives::shared(rows, None);
        let uncorrected = flat(&sampled_cross_entropy(h.as_tensor(), w.as_tensor(), &targets, &plain).unwrap())[0];
        assert!(uncorrected > b + 0.1, "{uncorrected} vs {b}");

        let plain = Negatives::shared(vec![1, 4, 6], None);
        let bad = |t: &[u32], neg: Negatives| sampled_cross_entropy(h.as_tensor(), w.as_tensor(), t, &neg).is_err();
        assert!(bad(&targets[..3], plain.clone()), "too few targets");
        assert!(bad(&[8; 10], plain.clone()), "a target beyond the rows");
        assert!(bad(&targets, Negatives::shared(vec![], None)), "no negatives");
        assert!(bad(&targets, Negatives::shared(vec![8], None)), "a negative beyond the rows");
        assert!(bad(&targets, Negatives { starts: vec![0, 4, 2], ..plain.clone() }), "groups out of order");
        assert!(bad(&targets, Negatives { starts: vec![0, 11, 11], ..plain.clone() }), "a group beyond the rows");
        assert!(bad(&targets, Negatives { starts: vec![0, 5], ..plain.clone() }), "3 rows for 2 groups");
        assert!(bad(&targets, Negatives { correction: Some(vec![0.0; 3]), ..plain.clone() }), "short correction");
        assert!(
            bad(&targets, Negatives { correction: Some(vec![f64::NEG_INFINITY; m]), ..plain }),
            "infinite correction"
        );
    }
}
