//! Test helpers of the fused ops: deterministic inputs, and [`compare`],
//! which checks an op's values and gradients against candle's composite
//! version in f64 and f32.

use candle_core::{DType, Device, Tensor, Var};

/// A tensor's values as f64, flattened.
pub(crate) fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// n values in [−2.75, 2.75], a different sequence per seed.
pub(crate) fn values(n: usize, seed: usize) -> Vec<f64> {
    (0..n).map(|i| (((i * 37 + seed * 11) % 23) as f64 - 11.0) / 4.0).collect()
}

/// A variable of the given shape and dtype holding `values(n, seed)`.
pub(crate) fn var(shape: &[usize], seed: usize, dtype: DType) -> Var {
    let n = shape.iter().product();
    Var::from_tensor(&Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap()
}

/// Checks `ours` against `theirs` (values, and the gradients of Σ y ⊙ r
/// with respect to every input) in f64 and f32.
pub(crate) fn compare(shapes: &[&[usize]], f: impl Fn(&[Tensor], bool) -> Tensor) {
    compare_within(1e-12, shapes, f)
}

/// [`compare`] with a tolerance of its own in f64 (f32: 2e-5).
pub(crate) fn compare_within(f64_tol: f64, shapes: &[&[usize]], f: impl Fn(&[Tensor], bool) -> Tensor) {
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

/// The additive mask of causal attention as a composite computes it, B × 1
/// × L × L: position i sees itself and the real (non-padding) keys before
/// it; everything else gets −1e9.
pub(crate) fn causal_mask(tokens: &[u32], b: usize, l: usize) -> Tensor {
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
    Tensor::from_vec(mask, (b, 1, l, l), &Device::Cpu).unwrap()
}
