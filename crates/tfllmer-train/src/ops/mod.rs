//! Fused CPU ops with their own backward pass, for the parts of the model
//! where candle's composite ops allocate many tensors of the activations'
//! size on each pass (and candle's backward adds two more per edge, a zero
//! tensor and a sum). One op a file:
//! - [`dropout`](mod@dropout): inverted dropout with our seeded mask;
//! - [`linear`](mod@linear): x·wᵀ + b;
//! - [`layer_norm`](mod@layer_norm): layer norm over the last dimension;
//! - [`gelu`]: GELU with the exact erf;
//! - [`attention`](mod@attention): causal self-attention with dropout on
//!   its weights;
//! - [`item_table`](mod@item_table): the item table as the model uses it
//!   (padding row zero, rows L2-normalised).
//!
//! Each op is one pass per row forward and one backward; gradients still
//! flow through candle's autograd (the tests compare every op, value and
//! gradient, with candle's composite version in f64 and f32). Reductions
//! over rows (weight gradients) add fixed blocks of rows in order, so
//! results do not depend on the thread count. The loops themselves are in
//! [`crate::kernels`]; the output layer with its loss is [`crate::loss`].

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use crate::kernels::{slices, Real};

/// Runs `$body` with `$t` the element type of `$s` (f32 or f64); other
/// types are an error naming `$name`.
macro_rules! by_dtype {
    ($s:expr, $name:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => candle_core::bail!("{} supports f32 and f64", $name),
        }
    };
}
pub(crate) use by_dtype;

mod attention;
mod dropout;
mod gelu;
mod item_table;
mod layer_norm;
mod linear;
#[cfg(test)]
pub(crate) mod testing;

pub use attention::attention;
pub use dropout::dropout;
pub use gelu::gelu_erf;
pub use item_table::item_table;
pub use layer_norm::layer_norm;
pub use linear::linear;

/// Elements per parallel task of the elementwise ops.
const ELEMENT_BLOCK: usize = 1 << 14;

/// The length of a layout's last dimension (at least 1).
fn last_dim(l: &Layout) -> usize {
    l.shape().dims().last().copied().unwrap_or(1).max(1)
}

/// A fused op of three tensors: the result's shape, its values, and for
/// the differentiable ops the gradients with respect to the operands.
/// [`Op3`] makes it a candle op (f32 or f64, contiguous operands), so each
/// op states only its own maths.
trait Fused3: Send + Sync {
    const NAME: &'static str;

    /// The result's shape from the operands' layouts (an error when they
    /// do not fit together).
    fn shape(&self, layouts: [&Layout; 3]) -> Result<Shape>;

    /// The result's values from the operands' values (row-major, as the
    /// layouts say).
    fn compute<T: Real>(&self, inputs: [&[T]; 3], layouts: [&Layout; 3]) -> Result<Vec<T>>;

    /// ∂ of the three operands from the result's gradient (the backward
    /// ops themselves have none).
    fn backward(&self, _inputs: [&Tensor; 3], _grad: &Tensor) -> Result<[Option<Tensor>; 3]> {
        candle_core::bail!("{} has no backward pass", Self::NAME)
    }
}

/// A [`Fused3`] as a candle op.
struct Op3<O>(O);

impl<O: Fused3> CustomOp3 for Op3<O> {
    fn name(&self) -> &'static str {
        O::NAME
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
        let shape = self.0.shape([l1, l2, l3])?;
        by_dtype!(s1, O::NAME, |T| {
            let inputs = slices::<T, 3>([(s1, l1), (s2, l2), (s3, l3)], O::NAME)?;
            Ok((T::storage(self.0.compute(inputs, [l1, l2, l3])?), shape))
        })
    }

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        a3: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [d1, d2, d3] = self.0.backward([a1, a2, a3], grad)?;
        Ok((d1, d2, d3))
    }
}
