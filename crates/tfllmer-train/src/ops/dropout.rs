//! Inverted dropout as one op: y = x · keep / (1 − p) with keep drawn from
//! our seeded generator, one byte per element; backward scales the
//! gradient by the same mask.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ELEMENT_BLOCK;
use crate::kernels::{slice, Real};
use crate::rng::SplitMix64;

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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::testing::compare;
    use super::*;

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
}
