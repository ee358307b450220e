//! Causal self-attention as one op (per sequence and head: masked softmax
//! of the scaled scores, dropout on the weights, times v), with a backward
//! that makes the weights again per sequence instead of storing them.

use std::sync::Arc;

use candle_core::{Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::{Fused3, Op3};
use crate::kernels::{dispatch, dot_lanes, exp_in_place_lanes, gemm, max_lanes, slice, Mat, Real};

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
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, Op3(op))
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
            let inv = T::one() / exp_in_place_lanes(seen, T::one(), max);
            seen.iter_mut().for_each(|v| *v *= inv);
            row[i + 1..].iter_mut().for_each(|v| *v = T::zero());
        }
    }

    /// For each head h of sequence b, with s = [`Attention::start`]:
    /// rows 0..s of the head's columns of `dst` (L × D) = f · the same rows
    /// of `src` (B × L × D), f the dropout factor of each of those leading
    /// padding queries' weight on itself (their output when src = v, their
    /// ∂v when src = ∂out; their ∂q and ∂k are 0); then, when positions
    /// s..L are not empty, `f(dst, h, s)`. Runs through [`dispatch`].
    #[inline(always)]
    fn each_head<T: Real>(
        &self,
        b: usize,
        dst: &mut [T],
        src: &[T],
        factor: &[T; 2],
        mut f: impl FnMut(&mut [T], usize, usize),
    ) {
        let AttentionShape { l, d, heads, .. } = self.shape;
        let dh = d / heads;
        dispatch(
            #[inline(always)]
            || {
                let s = self.start(b);
                for h in 0..heads {
                    for i in 0..s {
                        let f = self.keep_row(b, h, i, i).map_or(T::one(), |k| factor[usize::from(k[0] & 1)]);
                        let at = (b * l + i) * d + h * dh;
                        let row = &mut dst[i * d + h * dh..i * d + (h + 1) * dh];
                        row.iter_mut().zip(&src[at..at + dh]).for_each(|(o, &x)| *o = x * f);
                    }
                    if s < l {
                        f(dst, h, s);
                    }
                }
            },
        )
    }

    /// The result (B × L × D): per sequence and head, P·v with P the
    /// dropped-out weights.
    fn attend<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
        let AttentionShape { l, d, heads, .. } = self.shape;
        let dh = d / heads;
        let factor = [T::zero(), T::from(self.factor).unwrap_or_else(T::one)];
        let mut out = vec![T::zero(); q.len()];
        out.par_chunks_mut(l * d).enumerate().for_each_init(
            || vec![T::zero(); l * l],
            |p, (b, out)| {
                self.each_head(
                    b,
                    out,
                    v,
                    &factor,
                    #[inline(always)]
                    |out, h, s| {
                        let m = l - s;
                        let p = &mut p[..m * m];
                        self.weights(p, q, k, b, h, s);
                        self.drop_weights(p, b, h, s, &factor);
                        let at = (b * l + s) * d + h * dh;
                        gemm(&mut out[s * d + h * dh..], d, m, dh, m, Mat::rows(p, m), head(v, at, d, false), false);
                    },
                )
            },
        );
        out
    }

    /// ∂q, ∂k, ∂v stacked (3 × B × L × D) from the result's gradient `dout`.
    fn attend_backward<T: Real>(&self, q: &[T], k: &[T], v: &[T], dout: &[T]) -> Vec<T> {
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
                self.each_head(
                    b,
                    dv,
                    dout,
                    &factor,
                    #[inline(always)]
                    |dv, h, s| {
                        let m = l - s;
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

impl Fused3 for Attention {
    const NAME: &'static str = "attention";

    fn shape(&self, [q, ..]: [&Layout; 3]) -> Result<Shape> {
        Ok(q.shape().clone())
    }

    fn compute<T: Real>(&self, [q, k, v]: [&[T]; 3], _: [&Layout; 3]) -> Result<Vec<T>> {
        Ok(self.attend(q, k, v))
    }

    fn backward(&self, [q, k, v]: [&Tensor; 3], grad: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let op = AttentionGrad { forward: self.clone(), grad: grad.contiguous()? };
        let all = q.apply_op3_no_bwd(k, v, &Op3(op))?;
        Ok([Some(all.get(0)?), Some(all.get(1)?), Some(all.get(2)?)])
    }
}

impl Fused3 for AttentionGrad {
    const NAME: &'static str = "attention-grad";

    fn shape(&self, [q, ..]: [&Layout; 3]) -> Result<Shape> {
        let mut dims = vec![3];
        dims.extend_from_slice(q.shape().dims());
        Ok(Shape::from(dims))
    }

    fn compute<T: Real>(&self, [q, k, v]: [&[T]; 3], _: [&Layout; 3]) -> Result<Vec<T>> {
        let (grad, layout) = self.grad.storage_and_layout();
        let Storage::Cpu(grad) = &*grad else { candle_core::bail!("attention runs on the CPU") };
        let dout = slice::<T>(grad, layout, "attention")?;
        Ok(self.forward.attend_backward(q, k, v, dout))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, D};

    use super::super::testing::{causal_mask, compare};
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn attention_matches_the_composite_masked_attention() {
        let (b, l, d) = (4, 5, 6);
        // leading padding, none, padding inside, and nothing but padding
        let tokens: Vec<u32> = vec![0, 0, 3, 4, 5, 1, 2, 3, 4, 5, 0, 1, 0, 2, 3, 0, 0, 0, 0, 0];
        for heads in [1, 2] {
            let dh = d / heads;
            let mask = causal_mask(&tokens, b, l);
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
}
