//! The item table as the model uses it, as one op: row 0 (padding) zero,
//! the other rows L2-normalised (kernels::normalize_row) when asked;
//! backward projects each row's gradient off the row's direction.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::last_dim;
use crate::kernels::{dispatch, dot_lanes, normalize_row, row_norm, slice, slices, Real, ROW_BLOCK};

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

/// The first row of a block of rows to process: row 0 (padding) of the
/// table is skipped.
fn first_row(block: usize, d: usize, len: usize) -> usize {
    if block == 0 {
        d.min(len)
    } else {
        0
    }
}

fn item_table_forward<T: Real>(w: &[T], d: usize, normalize: bool) -> Vec<T> {
    let mut y = w.to_vec();
    y[..d.min(w.len())].iter_mut().for_each(|v| *v = T::zero());
    if normalize {
        y.par_chunks_mut(ROW_BLOCK * d).enumerate().for_each(|(i, rows)| {
            let from = first_row(i, d, rows.len());
            let rows = &mut rows[from..];
            dispatch(
                #[inline(always)]
                || rows.chunks_mut(d).for_each(normalize_row),
            )
        });
    }
    y
}

fn item_table_backward<T: Real>(w: &[T], g: &[T], d: usize, normalize: bool) -> Vec<T> {
    let mut dx = g.to_vec();
    dx[..d.min(g.len())].iter_mut().for_each(|v| *v = T::zero());
    if normalize {
        dx.par_chunks_mut(ROW_BLOCK * d).zip(w.par_chunks(ROW_BLOCK * d)).enumerate().for_each(|(i, (dx, w))| {
            let from = first_row(i, d, dx.len());
            let (dx, w) = (&mut dx[from..], &w[from..]);
            dispatch(
                #[inline(always)]
                || {
                    for (dx, e) in dx.chunks_mut(d).zip(w.chunks(d)) {
                        let n = row_norm(e);
                        let dot = dot_lanes(e, dx) / n;
                        for (o, &e) in dx.iter_mut().zip(e) {
                            *o = (*o - e / n * dot) / n;
                        }
                    }
                },
            )
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
            let [w, g] = slices::<T, 2>([(s1, l1), (s2, l2)], "item table")?;
            Ok((T::storage(item_table_backward(w, g, d, self.normalize)), l1.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, IndexOp};

    use super::super::testing::{compare, flat, var};
    use super::*;

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
    fn the_padding_row_stays_zero_over_several_blocks() {
        let rows = 2 * ROW_BLOCK + 3;
        let x = var(&[rows, 4], 1, DType::F64);
        let t = item_table(x.as_tensor(), true).unwrap();
        assert!(flat(&t.i(0).unwrap()).iter().all(|&v| v == 0.0));
        let norms = t.sqr().unwrap().sum_keepdim(1).unwrap();
        assert!(flat(&norms).iter().skip(1).all(|&n| (n - 1.0).abs() < 1e-12));
        let g = t.sum_all().unwrap().backward().unwrap();
        assert!(flat(&g.get(&x).unwrap().i(0).unwrap()).iter().all(|&v| v == 0.0));
    }
}
