//! A linear layer x·wᵀ + b as one op: block products (kernels::gemm) over
//! row blocks of x in parallel; backward gives ∂x, ∂w and ∂b at once.

use candle_core::{Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{last_dim, Fused3, Op3};
use crate::kernels::{add_in_order, gemm, Mat, Real};

/// x·wᵀ + b over the last dimension of x (any rank; w: out × in, b: out),
/// as one op: row blocks of x are multiplied in parallel, and backward
/// gives ∂x, ∂w and ∂b at once (∂w and ∂b summed over fixed row blocks in
/// order).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Op3(Linear))
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

impl Fused3 for Linear {
    const NAME: &'static str = "linear";

    fn shape(&self, [x, w, b]: [&Layout; 3]) -> Result<Shape> {
        let inp = last_dim(x);
        let (out, w_in) = w.shape().dims2()?;
        if w_in != inp || b.shape().elem_count() != out {
            candle_core::bail!("linear of {:?} by {:?} + {:?}", x.shape(), w.shape(), b.shape());
        }
        let mut dims = x.shape().dims().to_vec();
        *dims.last_mut().unwrap_or(&mut 0) = out;
        Ok(Shape::from(dims))
    }

    fn compute<T: Real>(&self, [x, w, b]: [&[T]; 3], [lx, ..]: [&Layout; 3]) -> Result<Vec<T>> {
        Ok(linear_forward(x, w, b, last_dim(lx), b.len()))
    }

    fn backward(&self, [x, w, b]: [&Tensor; 3], grad: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let (n_x, n_w) = (x.elem_count(), w.elem_count());
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &Op3(LinearGrad))?;
        let dx = all.narrow(0, 0, n_x)?.reshape(x.shape())?;
        let dw = all.narrow(0, n_x, n_w)?.reshape(w.shape())?;
        let db = all.narrow(0, n_x + n_w, b.elem_count())?.reshape(b.shape())?;
        Ok([Some(dx), Some(dw), Some(db)])
    }
}

impl Fused3 for LinearGrad {
    const NAME: &'static str = "linear-grad";

    fn shape(&self, [x, w, _]: [&Layout; 3]) -> Result<Shape> {
        let (out, inp) = w.shape().dims2()?;
        Ok(Shape::from(x.shape().elem_count() + out * inp + out))
    }

    fn compute<T: Real>(&self, [x, w, dy]: [&[T]; 3], [lx, lw, _]: [&Layout; 3]) -> Result<Vec<T>> {
        Ok(linear_backward(x, w, dy, last_dim(lx), lw.shape().dims2()?.0))
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
