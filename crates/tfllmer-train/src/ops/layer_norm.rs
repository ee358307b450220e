//! Layer norm over the last dimension as one op: forward one pass per row
//! (kernels::layer_norm_row); backward gives ∂x per row and ∂w, ∂b summed
//! over fixed blocks of rows in order.

use candle_core::{Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{last_dim, Fused3, Op3};
use crate::kernels::{add_in_order, dispatch, layer_norm_row, moments, Real, ROW_BLOCK};

/// Layer norm over the last dimension, (x − mean) / sqrt(var + eps) · w + b
/// (biased variance), as `candle_nn::ops::layer_norm_slow` computes it.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Op3(LayerNorm { eps }))
}

struct LayerNorm {
    eps: f32,
}

/// The backward pass: (rows + 2) × d holding dx, then dw, then db.
struct LayerNormGrad {
    eps: f32,
}

fn layer_norm_forward<T: Real>(x: &[T], w: &[T], b: &[T], eps: f32) -> Vec<T> {
    let d = w.len();
    let eps = T::from(eps).unwrap_or_else(T::zero);
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(ROW_BLOCK * d).zip(x.par_chunks(ROW_BLOCK * d)).for_each(|(out, x)| {
        dispatch(
            #[inline(always)]
            || out.chunks_mut(d).zip(x.chunks(d)).for_each(|(out, row)| layer_norm_row(row, w, b, eps, out)),
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
            dispatch(
                #[inline(always)]
                || {
                    for ((dx, row), dy) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)) {
                        let (mean, inv) = moments(row, eps);
                        let (mut mean_g, mut mean_gx) = (T::zero(), T::zero());
                        for (((h, &v), &g), &w) in xhat.iter_mut().zip(row).zip(dy).zip(w) {
                            *h = (v - mean) * inv;
                            mean_g += g * w;
                            mean_gx += g * w * *h;
                        }
                        let (mean_g, mean_gx) = (mean_g * inv_d, mean_gx * inv_d);
                        for (j, ((o, &h), &g)) in dx.iter_mut().zip(&xhat).zip(dy).enumerate() {
                            *o = (g * w[j] - mean_g - h * mean_gx) * inv;
                            sums[j] += g * h;
                            sums[d + j] += g;
                        }
                    }
                },
            );
            sums
        })
        .collect();
    add_in_order(rest, partial);
    out
}

impl Fused3 for LayerNorm {
    const NAME: &'static str = "layer-norm";

    fn shape(&self, [x, w, b]: [&Layout; 3]) -> Result<Shape> {
        let d = last_dim(x);
        if w.shape().elem_count() != d || b.shape().elem_count() != d {
            candle_core::bail!("layer norm weights must have {d} values");
        }
        Ok(x.shape().clone())
    }

    fn compute<T: Real>(&self, [x, w, b]: [&[T]; 3], _: [&Layout; 3]) -> Result<Vec<T>> {
        Ok(layer_norm_forward(x, w, b, self.eps))
    }

    fn backward(&self, [x, w, _b]: [&Tensor; 3], grad: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let d = w.elem_count();
        let rows = x.elem_count() / d;
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &Op3(LayerNormGrad { eps: self.eps }))?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.get(rows)?.reshape(w.shape())?;
        let db = all.get(rows + 1)?.reshape(w.shape())?;
        Ok([Some(dx), Some(dw), Some(db)])
    }
}

impl Fused3 for LayerNormGrad {
    const NAME: &'static str = "layer-norm-grad";

    fn shape(&self, [x, ..]: [&Layout; 3]) -> Result<Shape> {
        let d = last_dim(x);
        Ok(Shape::from((x.shape().elem_count() / d + 2, d)))
    }

    fn compute<T: Real>(&self, [x, w, dy]: [&[T]; 3], _: [&Layout; 3]) -> Result<Vec<T>> {
        Ok(layer_norm_backward(x, w, dy, self.eps))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::super::testing::{compare, flat, values, var};
    use super::*;

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
    }
}
