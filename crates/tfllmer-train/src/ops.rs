//! Fused CPU ops with their own backward pass, for the parts of the model
//! where candle's composite ops allocate many tensors of the activations'
//! size on each pass (and candle's backward adds two more per edge, a zero
//! tensor and a sum): dropout, linear layers, layer norm, GELU, causal
//! self-attention and the item table's normalisation. Each op is one pass per row
//! forward and one backward; gradients still flow through candle's autograd
//! (the tests compare every op, value and gradient, with candle's composite
//! version in f64). Reductions over rows (layer-norm weights) add fixed
//! blocks of rows in order, so results do not depend on the thread count.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::kernels::{dot_lanes, exp_in_place_lanes, gemm, max_lanes, slice, with_simd, Mat, Real, ROW_BLOCK};
use crate::rng::SplitMix64;

/// Runs `$body` with `$t` the element type of `$s` (f32 or f64).
macro_rules! by_dtype {
    ($s:expr, $name:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => candle_core::bail!("{} supports f32 and f64", $name),
        }
    };
}

/// Elements per parallel task of the elementwise ops.
const ELEMENT_BLOCK: usize = 1 << 14;

fn last_dim(l: &Layout) -> usize {
    l.shape().dims().last().copied().unwrap_or(1).max(1)
}

// ---------------------------------------------------------------- dropout

/// Inverted dropout with a mask from our seeded generator: the same draws as
/// `x * rng.dropout_mask(n, p)`, kept as one byte per element for the
/// backward pass (which scales the gradient by the same mask).
pub fn dropout(x: &Tensor, p: f64, rng: &mut SplitMix64) -> Result<Tensor> {
    let keep = rng.dropout_keep(x.elem_count(), p);
    x.contiguous()?.apply_op1(Dropout { keep: Arc::new(keep), scale: (1.0 / (1.0 - p)) as f32 })
}

struct Dropout {
    keep: Arc<Vec<u8>>,
    /// the kept elements' factor, as the f32 mask held it
    scale: f32,
}

fn apply_mask<T: Real>(x: &[T], keep: &[u8], scale: f32) -> Vec<T> {
    let factor = [T::zero(), T::from(scale).unwrap_or_else(T::one)];
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(ELEMENT_BLOCK).zip(x.par_chunks(ELEMENT_BLOCK)).zip(keep.par_chunks(ELEMENT_BLOCK)).for_each(
        |((out, x), keep)| {
            for ((o, &v), &k) in out.iter_mut().zip(x).zip(keep) {
                *o = v * factor[usize::from(k & 1)];
            }
        },
    );
    y
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s, "dropout", |T| {
            let x = slice::<T>(s, l, "dropout")?;
            if x.len() != self.keep.len() {
                candle_core::bail!("dropout mask of {} for {} elements", self.keep.len(), x.len());
            }
            Ok((T::storage(apply_mask(x, &self.keep, self.scale)), l.shape().clone()))
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mask = Dropout { keep: self.keep.clone(), scale: self.scale };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&mask)?))
    }
}

// ------------------------------------------------------------- layer norm

/// Layer norm over the last dimension, (x − mean) / sqrt(var + eps) · w + b
/// (biased variance), as `candle_nn::ops::layer_norm_slow` computes it.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })
}

struct LayerNorm {
    eps: f32,
}

/// The backward pass: (rows + 2) × d holding dx, then dw, then db.
struct LayerNormGrad {
    eps: f32,
}

/// A row's mean and standard deviation sqrt(var + eps).
#[inline(always)]
fn moments<T: Real>(row: &[T], eps: T) -> (T, T) {
    let d = T::from(row.len()).unwrap_or_else(T::one);
    let mean = row.iter().copied().sum::<T>() / d;
    let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() / d;
    (mean, (var + eps).sqrt())
}

fn layer_norm_forward<T: Real>(x: &[T], w: &[T], b: &[T], eps: f32) -> Vec<T> {
    let d = w.len();
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(ROW_BLOCK * d).zip(x.par_chunks(ROW_BLOCK * d)).for_each(|(out, x)| {
        with_simd(
            #[inline(always)]
            || {
                for (out, row) in out.chunks_mut(d).zip(x.chunks(d)) {
                    let (mean, std) = moments(row, eps);
                    for (((o, &v), &w), &b) in out.iter_mut().zip(row).zip(w).zip(b) {
                        *o = (v - mean) / std * w + b;
                    }
                }
            },
        )
    });
    y
}

fn layer_norm_backward<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f32) -> Vec<T> {
    let d = w.len();
    let rows = x.len() / d;
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let inv_d = T::one() / T::from(d).unwrap_or_else(T::one);
    let mut out = vec![T::zero(); (rows + 2) * d];
    let (dx, rest) = out.split_at_mut(rows * d);
    // per block of rows: dx, and the block's Σ dy·x̂ (dw) and Σ dy (db)
    let partial: Vec<Vec<T>> = dx
        .par_chunks_mut(ROW_BLOCK * d)
        .zip(x.par_chunks(ROW_BLOCK * d))
        .zip(dy.par_chunks(ROW_BLOCK * d))
        .map(|((dx, x), dy)| {
            let mut sums = vec![T::zero(); 2 * d];
            let mut xhat = vec![T::zero(); d];
            with_simd(
                #[inline(always)]
                || {
                    for ((dx, row), dy) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)) {
                        let (mean, std) = moments(row, eps);
                        let (mut mean_g, mut mean_gx) = (T::zero(), T::zero());
                        for (((h, &v), &g), &w) in xhat.iter_mut().zip(row).zip(dy).zip(w) {
                            *h = (v - mean) / std;
                            mean_g += g * w;
                            mean_gx += g * w * *h;
                        }
                        let (mean_g, mean_gx) = (mean_g * inv_d, mean_gx * inv_d);
                        for (j, ((o, &h), &g)) in dx.iter_mut().zip(&xhat).zip(dy).enumerate() {
                            *o = (g * w[j] - mean_g - h * mean_gx) / std;
                            sums[j] += g * h;
                            sums[d + j] += g;
                        }
                    }
                },
            );
            sums
        })
        .collect();
    for sums in partial {
        rest.iter_mut().zip(sums).for_each(|(t, v)| *t += v);
    }
    out
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l1);
        if l2.shape().elem_count() != d || l3.shape().elem_count() != d {
            candle_core::bail!("layer norm weights must have {d} values");
        }
        by_dtype!(s1, "layer norm", |T| {
            let (x, w, b) = (slice::<T>(s1, l1, "layer norm")?, slice::<T>(s2, l2, "layer norm")?, slice(s3, l3, "")?);
            Ok((T::storage(layer_norm_forward(x, w, b, self.eps)), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let rows = x.elem_count() / d;
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.get(rows)?.reshape(w.shape())?;
        let db = all.get(rows + 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l1);
        let rows = l1.shape().elem_count() / d;
        by_dtype!(s1, "layer norm", |T| {
            let (x, w, dy) = (slice::<T>(s1, l1, "layer norm")?, slice::<T>(s2, l2, "layer norm")?, slice(s3, l3, "")?);
            Ok((T::storage(layer_norm_backward(x, w, dy, self.eps)), Shape::from((rows + 2, d))))
        })
    }
}

// ------------------------------------------------------------------- gelu

/// GELU with the exact erf, 0.5 · x · (1 + erf(x/√2)), as candle's
/// `gelu_erf`, with a one-pass backward.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

struct Gelu;
struct GeluGrad;

fn gelu_forward<T: Real>(x: &[T]) -> Vec<T> {
    let half = T::from(0.5).unwrap_or_else(T::zero);
    let frac = T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap_or_else(T::zero);
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(ELEMENT_BLOCK).zip(x.par_chunks(ELEMENT_BLOCK)).for_each(|(out, x)| {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = ((v * frac).erf() + T::one()) * half * v;
        }
    });
    y
}

fn gelu_backward<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
    let half = T::from(0.5).unwrap_or_else(T::zero);
    let frac = T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap_or_else(T::zero);
    // 1/√(2π)
    let density =
        T::from(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2).unwrap_or_else(T::zero);
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(ELEMENT_BLOCK).zip(x.par_chunks(ELEMENT_BLOCK)).zip(dy.par_chunks(ELEMENT_BLOCK)).for_each(
        |((out, x), dy)| {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
                let cdf = half * ((v * frac).erf() + T::one());
                *o = g * (cdf + v * density * (-half * v * v).exp());
            }
        },
    );
    dx
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s, "gelu", |T| Ok((T::storage(gelu_forward(slice::<T>(s, l, "gelu")?)), l.shape().clone())))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, "gelu", |T| {
            let (x, dy) = (slice::<T>(s1, l1, "gelu")?, slice::<T>(s2, l2, "gelu")?);
            Ok((T::storage(gelu_backward(x, dy)), l1.shape().clone()))
        })
    }
}

// ----------------------------------------------------------------- linear

/// x·wᵀ + b over the last dimension of x (any rank; w: out × in, b: out),
/// as one op: row blocks of x are multiplied in parallel, and backward
/// gives ∂x, ∂w and ∂b at once (∂w and ∂b summed over fixed row blocks in
/// order).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
}

struct Linear;

/// ∂x, ∂w and ∂b, flattened one after the other
struct LinearGrad;

/// Rows of x per parallel task.
const LINEAR_ROWS: usize = 512;

fn linear_forward<T: Real>(x: &[T], w: &[T], b: &[T], inp: usize, out: usize) -> Vec<T> {
    let rows = x.len() / inp;
    let mut y = vec![T::zero(); rows * out];
    y.par_chunks_mut(LINEAR_ROWS * out).zip(x.par_chunks(LINEAR_ROWS * inp)).for_each(|(y, x)| {
        let m = x.len() / inp;
        gemm(y, out, m, out, inp, Mat::rows(x, inp), Mat::transposed(w, inp), false);
        for row in y.chunks_mut(out) {
            row.iter_mut().zip(b).for_each(|(v, &c)| *v += c);
        }
    });
    y
}

fn linear_backward<T: Real>(x: &[T], w: &[T], dy: &[T], inp: usize, out: usize) -> Vec<T> {
    let rows = x.len() / inp;
    let mut all = vec![T::zero(); rows * inp + out * inp + out];
    let (dx, rest) = all.split_at_mut(rows * inp);
    let partial: Vec<Vec<T>> = dx
        .par_chunks_mut(LINEAR_ROWS * inp)
        .zip(x.par_chunks(LINEAR_ROWS * inp))
        .zip(dy.par_chunks(LINEAR_ROWS * out))
        .map(|((dx, x), dy)| {
            let m = x.len() / inp;
            gemm(dx, inp, m, inp, out, Mat::rows(dy, out), Mat::rows(w, inp), false);
            let mut sums = vec![T::zero(); out * inp + out];
            let (dw, db) = sums.split_at_mut(out * inp);
            gemm(dw, inp, out, inp, m, Mat::transposed(dy, out), Mat::rows(x, inp), false);
            for row in dy.chunks(out) {
                db.iter_mut().zip(row).for_each(|(s, &g)| *s += g);
            }
            sums
        })
        .collect();
    for sums in partial {
        rest.iter_mut().zip(sums).for_each(|(t, v)| *t += v);
    }
    all
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let inp = last_dim(l1);
        let (out, w_in) = l2.shape().dims2()?;
        if w_in != inp || l3.shape().elem_count() != out {
            candle_core::bail!("linear of {:?} by {:?} + {:?}", l1.shape(), l2.shape(), l3.shape());
        }
        let mut dims = l1.shape().dims().to_vec();
        *dims.last_mut().unwrap_or(&mut 0) = out;
        by_dtype!(s1, "linear", |T| {
            let (x, w, b) = (slice::<T>(s1, l1, "linear")?, slice::<T>(s2, l2, "linear")?, slice(s3, l3, "linear")?);
            Ok((T::storage(linear_forward(x, w, b, inp, out)), Shape::from(dims)))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n_x, n_w) = (x.elem_count(), w.elem_count());
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LinearGrad)?;
        let dx = all.narrow(0, 0, n_x)?.reshape(x.shape())?;
        let dw = all.narrow(0, n_x, n_w)?.reshape(w.shape())?;
        let db = all.narrow(0, n_x + n_w, b.elem_count())?.reshape(b.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for LinearGrad {
    fn name(&self) -> &'static str {
        "linear-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let inp = last_dim(l1);
        let (out, _) = l2.shape().dims2()?;
        let len = l1.shape().elem_count() + out * inp + out;
        by_dtype!(s1, "linear", |T| {
            let (x, w, dy) = (slice::<T>(s1, l1, "linear")?, slice::<T>(s2, l2, "linear")?, slice(s3, l3, "linear")?);
            Ok((T::storage(linear_backward(x, w, dy, inp, out)), Shape::from(len)))
        })
    }
}

// -------------------------------------------------------------- attention

/// Causal self-attention as one op: per sequence and head,
/// softmax(scale · q kᵀ) over the keys a query may see, the weights dropped
/// out with `dropout` (keep flags, one per weight, B·H·L·L in (b, h, i, j)
/// order, and p), times v. Query i of sequence b sees key j when j == i or
/// when j < i and token (b, j) is not padding (0); this is the softmax of
/// the scores plus a −∞ mask, without building the mask. q, k, v and the
/// result are B × L × D, the heads side by side in D; `tokens` is B × L.
/// The weights (B·H·L·L) are never stored: backward makes them again per
/// sequence, in the cache, as it turns the gradient into ∂q, ∂k and ∂v.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    tokens: &[u32],
    heads: usize,
    dropout: Option<(Vec<u8>, f64)>,
) -> Result<Tensor> {
    let (b, l, d) = q.dims3()?;
    if k.dims() != q.dims() || v.dims() != q.dims() || heads == 0 || d % heads != 0 || tokens.len() != b * l {
        candle_core::bail!("attention over {:?} with {heads} heads and {} tokens", q.dims(), tokens.len());
    }
    let (keep, factor) = match dropout {
        Some((keep, p)) if keep.len() == b * heads * l * l => (Some(Arc::new(keep)), (1.0 / (1.0 - p)) as f32),
        Some((keep, _)) => {
            candle_core::bail!("{} attention dropout flags for {} weights", keep.len(), b * heads * l * l)
        }
        None => (None, 1.0),
    };
    let shape = AttentionShape { l, d, heads, scale: 1.0 / ((d / heads) as f64).sqrt() };
    let op = Attention { tokens: Arc::new(tokens.to_vec()), keep, factor, shape };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[derive(Clone, Copy)]
struct AttentionShape {
    l: usize,
    d: usize,
    heads: usize,
    scale: f64,
}

#[derive(Clone)]
struct Attention {
    tokens: Arc<Vec<u32>>,
    keep: Option<Arc<Vec<u8>>>,
    /// the kept weights' factor 1/(1 − p), as an f32 mask would hold it
    factor: f32,
    shape: AttentionShape,
}

/// ∂q, ∂k, ∂v stacked (3 × B × L × D), from q, k, v and the gradient.
struct AttentionGrad {
    forward: Attention,
    grad: Tensor,
}

impl Attention {
    /// Where sequence b's leading padding ends: the first non-padding
    /// position (L when there is none). Queries before it see only
    /// themselves (weight 1), and no later query sees them, so the scores
    /// are made for the block of positions from there on only.
    fn start(&self, b: usize) -> usize {
        let l = self.shape.l;
        self.tokens[b * l..(b + 1) * l].iter().position(|&t| t != 0).unwrap_or(l)
    }

    /// The dropout factors of row i of sequence b, head h, from key `from`
    /// (None: no dropout).
    fn keep_row(&self, b: usize, h: usize, i: usize, from: usize) -> Option<&[u8]> {
        let (l, heads) = (self.shape.l, self.shape.heads);
        self.keep.as_ref().map(|k| &k[((b * heads + h) * l + i) * l + from..((b * heads + h) * l + i + 1) * l])
    }

    /// Multiplies the weights p (m × m, positions s.. of sequence b, head
    /// h) by their dropout factors.
    #[inline(always)]
    fn drop_weights<T: Real>(&self, p: &mut [T], b: usize, h: usize, s: usize, factor: &[T; 2]) {
        let m = self.shape.l - s;
        for (i, row) in p.chunks_mut(m.max(1)).take(m).enumerate() {
            if let Some(keep) = self.keep_row(b, h, s + i, s) {
                row[..=i].iter_mut().zip(keep).for_each(|(w, &f)| *w *= factor[usize::from(f & 1)]);
            }
        }
    }

    /// The attention weights P (m × m, zero where masked) of positions s..L
    /// of sequence b, head h, before dropout (m = L − s).
    #[inline(always)]
    fn weights<T: Real>(&self, p: &mut [T], q: &[T], k: &[T], b: usize, h: usize, s: usize) {
        let AttentionShape { l, d, heads, scale } = self.shape;
        let m = l - s;
        let at = b * l * d + s * d + h * (d / heads);
        gemm(p, m, m, m, d / heads, head(q, at, d, false), head(k, at, d, true), false);
        let tok = &self.tokens[b * l + s..(b + 1) * l];
        let scale = T::from(scale).unwrap_or_else(T::one);
        for (i, row) in p.chunks_mut(m).enumerate() {
            // keys before i that are padding are masked (−∞), i itself never
            let diagonal = row[i] * scale;
            for (v, &t) in row[..i].iter_mut().zip(tok) {
                *v = if t != 0 { *v * scale } else { T::neg_infinity() };
            }
            row[i] = diagonal;
            let seen = &mut row[..=i];
            let max = max_lanes(seen);
            let inv = T::one() / exp_in_place_lanes(seen, max);
            seen.iter_mut().for_each(|v| *v *= inv);
            row[i + 1..].iter_mut().for_each(|v| *v = T::zero());
        }
    }

    /// The dropout factor of a leading padding query's weight on itself.
    fn self_factor<T: Real>(&self, b: usize, h: usize, i: usize, factor: &[T; 2]) -> T {
        self.keep_row(b, h, i, i).map_or(T::one(), |k| factor[usize::from(k[0] & 1)])
    }

    fn forward<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
        let AttentionShape { l, d, heads, .. } = self.shape;
        let dh = d / heads;
        let factor = [T::zero(), T::from(self.factor).unwrap_or_else(T::one)];
        let mut out = vec![T::zero(); q.len()];
        out.par_chunks_mut(l * d).enumerate().for_each_init(
            || vec![T::zero(); l * l],
            |p, (b, out)| {
                with_simd(
                    #[inline(always)]
                    || {
                        let s = self.start(b);
                        let m = l - s;
                        for h in 0..heads {
                            for i in 0..s {
                                let f = self.self_factor(b, h, i, &factor);
                                let at = (b * l + i) * d + h * dh;
                                let row = &mut out[i * d + h * dh..i * d + (h + 1) * dh];
                                row.iter_mut().zip(&v[at..at + dh]).for_each(|(o, &x)| *o = x * f);
                            }
                            if m == 0 {
                                continue;
                            }
                            let p = &mut p[..m * m];
                            self.weights(p, q, k, b, h, s);
                            self.drop_weights(p, b, h, s, &factor);
                            let at = (b * l + s) * d + h * dh;
                            gemm(
                                &mut out[s * d + h * dh..],
                                d,
                                m,
                                dh,
                                m,
                                Mat::rows(p, m),
                                head(v, at, d, false),
                                false,
                            );
                        }
                    },
                )
            },
        );
        out
    }

    fn backward<T: Real>(&self, q: &[T], k: &[T], v: &[T], dout: &[T]) -> Vec<T> {
        let AttentionShape { l, d, heads, scale } = self.shape;
        let dh = d / heads;
        let n = q.len();
        let factor = [T::zero(), T::from(self.factor).unwrap_or_else(T::one)];
        let scale = T::from(scale).unwrap_or_else(T::one);
        let mut all = vec![T::zero(); 3 * n];
        let (dq, rest) = all.split_at_mut(n);
        let (dk, dv) = rest.split_at_mut(n);
        dq.par_chunks_mut(l * d).zip(dk.par_chunks_mut(l * d)).zip(dv.par_chunks_mut(l * d)).enumerate().for_each_init(
            || (vec![T::zero(); l * l], vec![T::zero(); l * l]),
            |(p, g), (b, ((dq, dk), dv))| {
                with_simd(
                    #[inline(always)]
                    || {
                        let s = self.start(b);
                        let m = l - s;
                        for h in 0..heads {
                            // a leading padding query: out = f · v, so ∂v = f · ∂out (∂q, ∂k: 0)
                            for i in 0..s {
                                let f = self.self_factor(b, h, i, &factor);
                                let at = (b * l + i) * d + h * dh;
                                let row = &mut dv[i * d + h * dh..i * d + (h + 1) * dh];
                                row.iter_mut().zip(&dout[at..at + dh]).for_each(|(o, &x)| *o = x * f);
                            }
                            if m == 0 {
                                continue;
                            }
                            let (p, g) = (&mut p[..m * m], &mut g[..m * m]);
                            let at = (b * l + s) * d + h * dh;
                            let rows = |t| head(t, at, d, false);
                            let cols = |t| head(t, at, d, true);
                            self.weights(p, q, k, b, h, s);
                            // ∂v = Aᵀ ∂out with A the dropped-out weights
                            g.copy_from_slice(p);
                            self.drop_weights(g, b, h, s, &factor);
                            let (dq, dk, dv) =
                                (&mut dq[s * d + h * dh..], &mut dk[s * d + h * dh..], &mut dv[s * d + h * dh..]);
                            gemm(dv, d, m, dh, m, Mat::transposed(g, m), rows(dout), false);
                            // ∂A = ∂out vᵀ, then ∂P through the dropout
                            gemm(g, m, m, m, dh, rows(dout), cols(v), false);
                            self.drop_weights(g, b, h, s, &factor);
                            // ∂scores = scale · P ⊙ (∂P − Σ P ⊙ ∂P), zero past the diagonal
                            for (i, (g, p)) in g.chunks_mut(m).zip(p.chunks(m)).enumerate() {
                                let dot = dot_lanes(&g[..=i], &p[..=i]);
                                g[..=i].iter_mut().zip(&p[..=i]).for_each(|(a, &w)| *a = scale * w * (*a - dot));
                                g[i + 1..].iter_mut().for_each(|a| *a = T::zero());
                            }
                            gemm(dq, d, m, dh, m, Mat::rows(g, m), rows(k), false);
                            gemm(dk, d, m, dh, m, Mat::transposed(g, m), rows(q), false);
                        }
                    },
                )
            },
        );
        all
    }
}

/// A head's L × dh block of a B × L × D tensor (from offset `at`), or its
/// transpose.
fn head<T>(t: &[T], at: usize, d: usize, transposed: bool) -> Mat<'_, T> {
    if transposed {
        Mat { data: &t[at..], rs: 1, cs: d }
    } else {
        Mat { data: &t[at..], rs: d, cs: 1 }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1, "attention", |T| {
            let (q, k, v) =
                (slice::<T>(s1, l1, "attention")?, slice(s2, l2, "attention")?, slice(s3, l3, "attention")?);
            Ok((T::storage(self.forward(q, k, v)), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = AttentionGrad { forward: self.clone(), grad: grad.contiguous()? };
        let all = q.apply_op3_no_bwd(k, v, &op)?;
        Ok((Some(all.get(0)?), Some(all.get(1)?), Some(all.get(2)?)))
    }
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (grad, grad_layout) = self.grad.storage_and_layout();
        let Storage::Cpu(grad) = &*grad else { candle_core::bail!("attention runs on the CPU") };
        let mut dims = vec![3];
        dims.extend_from_slice(l1.shape().dims());
        by_dtype!(s1, "attention", |T| {
            let (q, k, v) =
                (slice::<T>(s1, l1, "attention")?, slice(s2, l2, "attention")?, slice(s3, l3, "attention")?);
            let dout = slice::<T>(grad, grad_layout, "attention")?;
            Ok((T::storage(self.forward.backward(q, k, v, dout)), Shape::from(dims)))
        })
    }
}

// ------------------------------------------------------------ item table

/// The item table as the model uses it: row 0 (padding) zero, the other
/// rows L2-normalised, e / sqrt(‖e‖² + 1e-24), when `normalize`.
pub fn item_table(w: &Tensor, normalize: bool) -> Result<Tensor> {
    w.contiguous()?.apply_op1(ItemTable { normalize })
}

struct ItemTable {
    normalize: bool,
}

/// dx = (g − ê (ê·g)) / n per normalised row, g per raw row, 0 for row 0
struct ItemTableGrad {
    normalize: bool,
}

fn row_norm<T: Real>(row: &[T]) -> T {
    (row.iter().map(|&v| v * v).sum::<T>() + T::from(1e-24).unwrap_or_else(T::zero)).sqrt()
}

fn item_table_forward<T: Real>(w: &[T], d: usize, normalize: bool) -> Vec<T> {
    let mut y = w.to_vec();
    y[..d.min(w.len())].iter_mut().for_each(|v| *v = T::zero());
    if normalize {
        y.par_chunks_mut(d).skip(1).for_each(|row| {
            let n = row_norm(row);
            row.iter_mut().for_each(|v| *v /= n);
        });
    }
    y
}

fn item_table_backward<T: Real>(w: &[T], g: &[T], d: usize, normalize: bool) -> Vec<T> {
    let mut dx = g.to_vec();
    dx[..d.min(g.len())].iter_mut().for_each(|v| *v = T::zero());
    if normalize {
        dx.par_chunks_mut(d).zip(w.par_chunks(d)).skip(1).for_each(|(dx, e)| {
            let n = row_norm(e);
            let dot = e.iter().zip(dx.iter()).fold(T::zero(), |a, (&e, &g)| a + e * g) / n;
            for (o, &e) in dx.iter_mut().zip(e) {
                *o = (*o - e / n * dot) / n;
            }
        });
    }
    dx
}

impl CustomOp1 for ItemTable {
    fn name(&self) -> &'static str {
        "item-table"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l);
        by_dtype!(s, "item table", |T| {
            let w = slice::<T>(s, l, "item table")?;
            Ok((T::storage(item_table_forward(w, d, self.normalize)), l.shape().clone()))
        })
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(w.apply_op2_no_bwd(&grad.contiguous()?, &ItemTableGrad { normalize: self.normalize })?))
    }
}

impl CustomOp2 for ItemTableGrad {
    fn name(&self) -> &'static str {
        "item-table-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l1);
        by_dtype!(s1, "item table", |T| {
            let (w, g) = (slice::<T>(s1, l1, "item table")?, slice::<T>(s2, l2, "item table")?);
            Ok((T::storage(item_table_backward(w, g, d, self.normalize)), l1.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, IndexOp, Var, D};

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n).map(|i| (((i * 37 + seed * 11) % 23) as f64 - 11.0) / 4.0).collect()
    }

    fn var(shape: &[usize], seed: usize, dtype: DType) -> Var {
        let n = shape.iter().product();
        Var::from_tensor(&Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap())
            .unwrap()
    }

    /// Checks `ours` against `theirs` (values, and the gradients of Σ y ⊙ r
    /// with respect to every input) in f64 and f32.
    fn compare(shapes: &[&[usize]], f: impl Fn(&[Tensor], bool) -> Tensor) {
        compare_within(1e-12, shapes, f)
    }

    fn compare_within(f64_tol: f64, shapes: &[&[usize]], f: impl Fn(&[Tensor], bool) -> Tensor) {
        for (dtype, tol) in [(DType::F64, f64_tol), (DType::F32, 2e-5)] {
            let inputs: Vec<Var> = shapes.iter().enumerate().map(|(i, s)| var(s, i + 1, dtype)).collect();
            let tensors: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
            let (ours, theirs) = (f(&tensors, true), f(&tensors, false));
            assert_eq!(ours.dims(), theirs.dims());
            let weights = Tensor::from_vec(values(ours.elem_count(), 7), ours.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for (p, q) in flat(&ours).iter().zip(flat(&theirs)) {
                assert!((p - q).abs() <= tol * (1.0 + q.abs()), "value {p} vs {q} ({dtype:?})");
            }
            let grads = |y: &Tensor| y.mul(&weights).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (grads(&ours), grads(&theirs));
            for v in &inputs {
                let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                for (p, q) in flat(a).iter().zip(flat(b)) {
                    assert!((p - q).abs() <= tol * (1.0 + q.abs()), "gradient {p} vs {q} ({dtype:?})");
                }
            }
        }
    }

    #[test]
    fn layer_norm_matches_the_composite_one() {
        compare(&[&[3, 4, 6], &[6], &[6]], |t, fused| {
            if fused {
                layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap()
            } else {
                candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-5).unwrap()
            }
        });
    }

    #[test]
    fn gelu_matches_candles_gelu_erf_and_finite_differences() {
        // candle's backward rounds 1/√(2π) to 0.398942 (a relative 3e-7)
        compare_within(
            1e-6,
            &[&[5, 7]],
            |t, fused| {
                if fused {
                    gelu_erf(&t[0]).unwrap()
                } else {
                    t[0].gelu_erf().unwrap()
                }
            },
        );
        let xs: Vec<f64> = (0..41).map(|i| (i as f64 - 20.0) / 4.0).collect();
        let x = Var::from_tensor(&Tensor::from_vec(xs.clone(), 41, &Device::Cpu).unwrap()).unwrap();
        let g = flat(gelu_erf(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap());
        let gelu = |v: f64| 0.5 * v * (1.0 + candle_core::cpu::erf::erf_f64(v / 2f64.sqrt()));
        for (v, d) in xs.iter().zip(g) {
            let numeric = (gelu(v + 1e-6) - gelu(v - 1e-6)) / 2e-6;
            assert!((numeric - d).abs() < 1e-8, "gelu'({v}) = {d}, numerically {numeric}");
        }
    }

    #[test]
    fn linear_matches_matmul_plus_bias() {
        // more rows than one task, so the weight gradients are summed over tasks
        compare(&[&[3, LINEAR_ROWS / 2 + 1, 5], &[4, 5], &[4]], |t, fused| {
            if fused {
                linear(&t[0], &t[1], &t[2]).unwrap()
            } else {
                t[0].broadcast_matmul(&t[1].t().unwrap()).unwrap().broadcast_add(&t[2]).unwrap()
            }
        });
    }

    #[test]
    fn attention_matches_the_composite_masked_attention() {
        let (b, l, d) = (4, 5, 6);
        // leading padding, none, padding inside, and nothing but padding
        let tokens: Vec<u32> = vec![0, 0, 3, 4, 5, 1, 2, 3, 4, 5, 0, 1, 0, 2, 3, 0, 0, 0, 0, 0];
        for heads in [1, 2] {
            let dh = d / heads;
            let mut mask = vec![0.0f64; b * l * l];
            for r in 0..b {
                for i in 0..l {
                    for j in 0..l {
                        if !(j == i || (j < i && tokens[r * l + j] != 0)) {
                            mask[(r * l + i) * l + j] = -1e9;
                        }
                    }
                }
            }
            let mask = Tensor::from_vec(mask, (b, 1, l, l), &Device::Cpu).unwrap();
            for p in [0.0, 0.4] {
                let n = b * heads * l * l;
                let keep = SplitMix64::new(3).dropout_keep(n, p);
                compare(&[&[b, l, d], &[b, l, d], &[b, l, d]], |t, fused| {
                    if fused {
                        let dropout = (p > 0.0).then(|| (keep.clone(), p));
                        return attention(&t[0], &t[1], &t[2], &tokens, heads, dropout).unwrap();
                    }
                    let split =
                        |x: &Tensor| x.reshape((b, l, heads, dh)).unwrap().transpose(1, 2).unwrap().contiguous();
                    let (q, k, v) = (split(&t[0]).unwrap(), split(&t[1]).unwrap(), split(&t[2]).unwrap());
                    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
                    let m = mask.to_dtype(t[0].dtype()).unwrap();
                    let mut w = candle_nn::ops::softmax(&scores.broadcast_add(&m).unwrap(), D::Minus1).unwrap();
                    if p > 0.0 {
                        let f: Vec<f64> =
                            keep.iter().map(|&k| f64::from(k) * f64::from((1.0 / (1.0 - p)) as f32)).collect();
                        let f =
                            Tensor::from_vec(f, (b, heads, l, l), &Device::Cpu).unwrap().to_dtype(w.dtype()).unwrap();
                        w = w.mul(&f).unwrap();
                    }
                    let ctx = w.matmul(&v).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
                    ctx.reshape((b, l, d)).unwrap()
                });
            }
        }
    }

    #[test]
    fn item_table_matches_the_composite_normalisation() {
        for normalize in [true, false] {
            compare(&[&[5, 3]], |t, fused| {
                if fused {
                    item_table(&t[0], normalize).unwrap()
                } else {
                    let w = &t[0];
                    let keep = Tensor::from_vec(vec![0.0, 1.0, 1.0, 1.0, 1.0], (5, 1), &Device::Cpu)
                        .unwrap()
                        .to_dtype(w.dtype())
                        .unwrap();
                    let w = if normalize {
                        let norm = (w.sqr().unwrap().sum_keepdim(1).unwrap() + 1e-24).unwrap().sqrt().unwrap();
                        w.broadcast_div(&norm).unwrap()
                    } else {
                        w.clone()
                    };
                    w.broadcast_mul(&keep).unwrap()
                }
            });
        }
    }

    #[test]
    fn dropout_matches_multiplying_by_the_generators_mask() {
        let shape = [4, 3, 7];
        let mask = SplitMix64::new(9).dropout_mask(shape.iter().product(), 0.3);
        compare(&[&shape], |t, fused| {
            if fused {
                dropout(&t[0], 0.3, &mut SplitMix64::new(9)).unwrap()
            } else {
                let m = Tensor::from_vec(mask.clone(), &shape, &Device::Cpu).unwrap().to_dtype(t[0].dtype()).unwrap();
                t[0].mul(&m).unwrap()
            }
        });
    }

    #[test]
    fn layer_norm_weight_gradients_do_not_depend_on_the_block_split() {
        // more rows than one block, so the per-block sums are added up
        let rows = 3 * ROW_BLOCK + 5;
        let x = var(&[rows, 4], 1, DType::F64);
        let (w, b) = (var(&[4], 2, DType::F64), var(&[4], 3, DType::F64));
        let y = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let r = Tensor::from_vec(values(rows * 4, 5), (rows, 4), &Device::Cpu).unwrap();
        let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let theirs = candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let h = theirs.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&w, &b] {
            for (p, q) in flat(g.get(v).unwrap()).iter().zip(flat(h.get(v).unwrap())) {
                assert!((p - q).abs() < 1e-9 * (1.0 + q.abs()));
            }
        }
        // the padding row of a table stays zero
        let t = item_table(x.as_tensor(), true).unwrap();
        assert!(flat(&t.i(0).unwrap()).iter().all(|&v| v == 0.0));
    }
}
