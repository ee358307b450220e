//! Softmax over the last dimension as one fused op with a backward pass.
//!
//! candle's fused `softmax_last_dim` has no backward (shared/CANDLE.md) and
//! the composite softmax allocates several tensors of the attention
//! matrix's size on each pass. Forward: y = exp(x − max) / Σ; backward:
//! dx = y ⊙ (dy − Σ dy ⊙ y), one pass per row each way.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use num_traits::Float;
use rayon::prelude::*;

/// Softmax over the last dimension of `x`, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FusedSoftmax)
}

struct FusedSoftmax;
struct SoftmaxGrad;

fn contiguous<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("fused softmax needs contiguous input") };
    Ok(&T::cpu_storage_as_slice(s)?[start..end])
}

fn forward<T: Float + Send + Sync>(x: &[T], width: usize) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(width).zip(x.par_chunks(width)).for_each(|(out, row)| {
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let mut sum = T::zero();
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v - max).exp();
            sum = sum + *o;
        }
        let inv = T::one() / sum;
        out.iter_mut().for_each(|o| *o = *o * inv);
    });
    y
}

fn backward<T: Float + Send + Sync>(y: &[T], dy: &[T], width: usize) -> Vec<T> {
    let mut dx = vec![T::zero(); y.len()];
    dx.par_chunks_mut(width).zip(y.par_chunks(width)).zip(dy.par_chunks(width)).for_each(|((out, y), dy)| {
        let dot = y.iter().zip(dy).fold(T::zero(), |a, (&p, &q)| a + p * q);
        for ((o, &p), &q) in out.iter_mut().zip(y).zip(dy) {
            *o = p * (q - dot);
        }
    });
    dx
}

impl CustomOp1 for FusedSoftmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let width = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let storage = match s {
            CpuStorage::F32(_) => CpuStorage::F32(forward(contiguous::<f32>(s, l)?, width)),
            CpuStorage::F64(_) => CpuStorage::F64(forward(contiguous::<f64>(s, l)?, width)),
            _ => candle_core::bail!("fused softmax supports f32 and f64"),
        };
        Ok((storage, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad)?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let width = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let storage = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(backward(contiguous::<f32>(s1, l1)?, contiguous::<f32>(s2, l2)?, width))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(backward(contiguous::<f64>(s1, l1)?, contiguous::<f64>(s2, l2)?, width))
            }
            _ => candle_core::bail!("fused softmax supports f32 and f64"),
        };
        Ok((storage, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};

    #[test]
    fn matches_the_composite_softmax_and_its_gradient() {
        let dev = Device::Cpu;
        let values: Vec<f64> = (0..2 * 3 * 5).map(|i| ((i * 29 % 17) as f64 - 8.0) / 2.5).collect();
        // a weight per output, so the gradient is not trivially zero
        let w = Tensor::from_vec((0..30).map(|i| (i % 7) as f64 - 3.0).collect::<Vec<_>>(), (2, 3, 5), &dev).unwrap();
        for dtype in [DType::F64, DType::F32] {
            let x =
                Var::from_tensor(&Tensor::from_vec(values.clone(), (2, 3, 5), &dev).unwrap().to_dtype(dtype).unwrap())
                    .unwrap();
            let w = w.to_dtype(dtype).unwrap();
            let ours = softmax_last_dim(x.as_tensor()).unwrap();
            let theirs = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
            let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            let flat = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (p, q) in flat(&ours).iter().zip(flat(&theirs)) {
                assert!((p - q).abs() < tol);
            }
            let grad = |y: &Tensor| flat(y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap());
            for (p, q) in grad(&ours).iter().zip(grad(&theirs)) {
                assert!((p - q).abs() < tol, "gradient {p} vs {q}");
            }
        }
    }

    #[test]
    fn rows_sum_to_one_even_with_huge_or_masked_values() {
        let x = Tensor::from_vec(vec![1000.0f32, -1e9, 999.0, -1e9, -1e9, 0.0], (2, 3), &Device::Cpu).unwrap();
        let y = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        for row in y {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|v| v.is_finite()));
        }
    }
}
