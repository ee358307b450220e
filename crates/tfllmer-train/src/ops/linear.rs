//! A linear layer x·wᵀ + b as one op: block products (kernels::gemm) over
//! row blocks of x in parallel; backward gives ∂x, ∂w and ∂b at once.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::last_dim;
use crate::kernels::{add_in_order, gemm, slices, Mat, Real};

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
    add_in_order(rest, partial);
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
            let [x, w, b] = slices::<T, 3>([(s1, l1), (s2, l2), (s3, l3)], "linear")?;
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
            let [x, w, dy] = slices::<T, 3>([(s1, l1), (s2, l2), (s3, l3)], "linear")?;
            Ok((T::storage(linear_backward(x, w, dy, inp, out)), Shape::from(len)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::compare;
    use super::*;

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
}
