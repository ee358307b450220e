//! GELU with the exact erf, 0.5 · x · (1 + erf(x/√2)), as one op with a
//! one-pass backward. f32 uses our vectorisable erf (kernels::math, within
//! 2e-7 of libm's), f64 the exact one.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ELEMENT_BLOCK;
use crate::kernels::{dispatch, gelu, slice, slices, Real};

/// GELU with the exact erf, 0.5 · x · (1 + erf(x/√2)), as candle's
/// `gelu_erf`, with a one-pass backward.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

struct Gelu;
struct GeluGrad;

fn gelu_forward<T: Real>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(ELEMENT_BLOCK).zip(x.par_chunks(ELEMENT_BLOCK)).for_each(|(out, x)| {
        dispatch(
            #[inline(always)]
            || out.iter_mut().zip(x).for_each(|(o, &v)| *o = gelu(v)),
        )
    });
    y
}

/// dx = dy · (Φ(x) + x · φ(x)), Φ(x) = (1 + erf(x/√2)) / 2, φ the normal density.
fn gelu_backward<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
    let half = T::from(0.5).unwrap_or_else(T::zero);
    let frac = T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap_or_else(T::zero);
    // 1/√(2π)
    let density =
        T::from(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2).unwrap_or_else(T::zero);
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(ELEMENT_BLOCK).zip(x.par_chunks(ELEMENT_BLOCK)).zip(dy.par_chunks(ELEMENT_BLOCK)).for_each(
        |((out, x), dy)| {
            dispatch(
                #[inline(always)]
                || {
                    for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
                        let cdf = half * ((v * frac).erf() + T::one());
                        *o = g * (cdf + v * density * (-half * v * v).exp());
                    }
                },
            )
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
            let [x, dy] = slices::<T, 2>([(s1, l1), (s2, l2)], "gelu")?;
            Ok((T::storage(gelu_backward(x, dy)), l1.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::super::testing::{compare_within, flat};
    use super::*;

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
}
