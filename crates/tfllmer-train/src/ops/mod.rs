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

use candle_core::Layout;

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
