//! Lazy (sparse) Adam for the item table: each step updates only the rows
//! the step used, with per-row moments and a per-row step count for the
//! bias correction (as TensorFlow Addons' LazyAdam and PyTorch's
//! SparseAdam update only touched rows; the bias correction here counts the
//! row's own updates, so a row's first update is the same size as dense
//! Adam's first). A step then costs O(rows used × dim) instead of
//! O(items × dim): at 10⁶ items × 64 dims, dense Adam reads and writes
//! 1 GB of table and moments per step (shared/SCALE.md).
//!
//! On rows a step touches it computes what candle's `AdamW` computes, in
//! the same order and precision (test); rows a step does not touch keep
//! their values and moments (dense Adam would decay the moments and still
//! move the row).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::ParamsAdamW;

use crate::kernels::Real;

/// An item table (row-major, `dim` wide) with lazy Adam state.
pub(crate) struct LazyAdam<T> {
    table: Vec<T>,
    m: Vec<T>,
    v: Vec<T>,
    steps: Vec<u32>,
    dim: usize,
    params: ParamsAdamW,
}

impl<T: Real> LazyAdam<T> {
    pub(crate) fn new(table: Vec<T>, dim: usize, params: ParamsAdamW) -> Self {
        let rows = table.len() / dim.max(1);
        Self {
            m: vec![T::zero(); table.len()],
            v: vec![T::zero(); table.len()],
            steps: vec![0; rows],
            table,
            dim,
            params,
        }
    }

    /// The rows `ids`, in that order: ids.len() × dim.
    pub(crate) fn gather(&self, ids: &[u32]) -> Vec<T> {
        let d = self.dim;
        let mut out = Vec::with_capacity(ids.len() * d);
        for &r in ids {
            out.extend_from_slice(&self.table[r as usize * d..(r as usize + 1) * d]);
        }
        out
    }

    /// One Adam step on rows `ids` (distinct) with their gradients
    /// (ids.len() × dim, in the order of `ids`).
    pub(crate) fn step(&mut self, ids: &[u32], grads: &[T]) {
        let d = self.dim;
        let p = &self.params;
        let c = |x: f64| T::from(x).unwrap_or_else(T::zero);
        let (beta1, beta2) = (c(p.beta1), c(p.beta2));
        let (one_minus_beta1, one_minus_beta2) = (c(1.0 - p.beta1), c(1.0 - p.beta2));
        let (lr, eps, decay) = (c(p.lr), c(p.eps), c(1.0 - p.lr * p.weight_decay));
        for (&r, g) in ids.iter().zip(grads.chunks(d)) {
            let r = r as usize;
            self.steps[r] += 1;
            let t = self.steps[r].min(i32::MAX as u32) as i32;
            let scale_m = c(1.0 / (1.0 - p.beta1.powi(t)));
            let scale_v = c(1.0 / (1.0 - p.beta2.powi(t)));
            let span = r * d..(r + 1) * d;
            let (theta, m, v) = (&mut self.table[span.clone()], &mut self.m[span.clone()], &mut self.v[span]);
            for j in 0..d {
                m[j] = m[j] * beta1 + g[j] * one_minus_beta1;
                v[j] = v[j] * beta2 + g[j] * g[j] * one_minus_beta2;
                let adjusted = (m[j] * scale_m) / ((v[j] * scale_v).sqrt() + eps);
                theta[j] = theta[j] * decay - adjusted * lr;
            }
        }
    }

    pub(crate) fn table(&self) -> &[T] {
        &self.table
    }
}

/// The model's item table under lazy Adam during training, in the table's
/// element type.
pub(crate) enum ItemRows {
    F32(LazyAdam<f32>),
    F64(LazyAdam<f64>),
}

impl ItemRows {
    /// Takes the current values of `item` (rows × dim).
    pub(crate) fn new(item: &Var, params: ParamsAdamW) -> Result<Self> {
        let (_, d) = item.dims2()?;
        let flat = item.as_tensor().flatten_all()?;
        Ok(match item.dtype() {
            DType::F32 => Self::F32(LazyAdam::new(flat.to_vec1()?, d, params)),
            DType::F64 => Self::F64(LazyAdam::new(flat.to_vec1()?, d, params)),
            other => candle_core::bail!("the item table must be f32 or f64, not {other:?}"),
        })
    }

    /// Rows `ids` as a tensor (ids.len() × dim).
    pub(crate) fn gather(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Self::F32(a) => Tensor::from_vec(a.gather(ids), (ids.len(), a.dim), &Device::Cpu),
            Self::F64(a) => Tensor::from_vec(a.gather(ids), (ids.len(), a.dim), &Device::Cpu),
        }
    }

    /// One step on rows `ids` with `grad` (ids.len() × dim).
    pub(crate) fn step(&mut self, ids: &[u32], grad: &Tensor) -> Result<()> {
        let flat = grad.flatten_all()?;
        match self {
            Self::F32(a) => a.step(ids, &flat.to_vec1()?),
            Self::F64(a) => a.step(ids, &flat.to_vec1()?),
        }
        Ok(())
    }

    /// Writes the table into `item` (its shape and type).
    pub(crate) fn write_to(&self, item: &Var) -> Result<()> {
        let t = match self {
            Self::F32(a) => Tensor::from_slice(a.table(), item.shape(), &Device::Cpu)?,
            Self::F64(a) => Tensor::from_slice(a.table(), item.shape(), &Device::Cpu)?,
        };
        item.set(&t)
    }
}

#[cfg(test)]
mod tests {
    use candle_nn::{AdamW, Optimizer};

    use super::*;

    fn params() -> ParamsAdamW {
        ParamsAdamW { lr: 0.01, weight_decay: 0.0, ..Default::default() }
    }

    /// A gradient for step s (rows × d), different per step and entry.
    fn gradient(s: usize, rows: usize, d: usize) -> Vec<f32> {
        (0..rows * d).map(|i| (((i * 7 + s * 13) % 11) as f32 - 5.0) / 3.0).collect()
    }

    #[test]
    fn on_rows_touched_at_every_step_it_is_dense_adam() {
        let (rows, d) = (6, 5);
        let start: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.37).sin()).collect();
        for decay in [0.0, 0.1] {
            let params = ParamsAdamW { weight_decay: decay, ..params() };
            let var = Var::from_tensor(&Tensor::from_vec(start.clone(), (rows, d), &Device::Cpu).unwrap()).unwrap();
            let mut dense = AdamW::new(vec![var.clone()], params.clone()).unwrap();
            let mut lazy = LazyAdam::new(start.clone(), d, params);
            let all: Vec<u32> = (0..rows as u32).collect();
            for s in 0..25 {
                let g = gradient(s, rows, d);
                // loss = Σ g ⊙ θ has gradient g
                let target = Tensor::from_vec(g.clone(), (rows, d), &Device::Cpu).unwrap();
                let loss = (var.as_tensor() * &target).unwrap().sum_all().unwrap();
                dense.backward_step(&loss).unwrap();
                lazy.step(&all, &g);
            }
            let expected = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(lazy.table(), &expected[..], "weight decay {decay}");
        }
    }

    #[test]
    fn untouched_rows_stay_and_a_rows_first_update_is_dense_adams_first() {
        let (rows, d) = (4, 3);
        let start: Vec<f32> = (0..rows * d).map(|i| i as f32 * 0.1).collect();
        let mut lazy = LazyAdam::new(start.clone(), d, params());
        for s in 0..10 {
            lazy.step(&[0, 2], &gradient(s, 2, d));
        }
        assert_eq!(&lazy.table()[d..2 * d], &start[d..2 * d], "row 1 never touched");
        assert_eq!(&lazy.table()[3 * d..], &start[3 * d..], "row 3 never touched");
        // row 3's first update, at step 11, is what a fresh Adam's first step does
        let g = gradient(99, 1, d);
        lazy.step(&[3], &g);
        let mut fresh = LazyAdam::new(start[3 * d..].to_vec(), d, params());
        fresh.step(&[0], &g);
        assert_eq!(&lazy.table()[3 * d..], fresh.table());
        // and it moves each entry by about lr (Adam's first step is lr·sign(g))
        for (a, b) in fresh.table().iter().zip(&start[3 * d..]) {
            assert!(((a - b).abs() - 0.01).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn the_enum_round_trips_the_table_through_a_var() {
        let var =
            Var::from_tensor(&Tensor::arange(0f64, 12.0, &Device::Cpu).unwrap().reshape((4, 3)).unwrap()).unwrap();
        let mut rows = ItemRows::new(&var, params()).unwrap();
        assert_eq!(
            rows.gather(&[2, 0]).unwrap().to_vec2::<f64>().unwrap(),
            vec![vec![6.0, 7.0, 8.0], vec![0.0, 1.0, 2.0]]
        );
        rows.step(&[1], &Tensor::ones((1, 3), DType::F64, &Device::Cpu).unwrap()).unwrap();
        rows.write_to(&var).unwrap();
        let after = var.as_tensor().to_vec2::<f64>().unwrap();
        assert_eq!(after[0], vec![0.0, 1.0, 2.0]);
        assert!(after[1].iter().zip([3.0, 4.0, 5.0]).all(|(a, b)| (a - (b - 0.01)).abs() < 1e-9), "{:?}", after[1]);
    }
}
