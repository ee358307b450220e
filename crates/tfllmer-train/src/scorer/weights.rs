//! The scorer's copy of a model's weights, as f32 in the layouts its
//! passes read fastest: [`Dense`] layers with w stored transposed, the
//! [`Affine`] pairs of layer norms, SASRec's [`Layer`]s (q and v side by
//! side), and GRU4Rec's weights with the states after k padding steps.

use candle_core::{DType, Result, Var};

use super::gru4rec::padded_states;
use crate::kernels::{gemm, Mat};
use crate::model::{Encoder, Recommender};

/// A linear layer x·wᵀ + b with w (out × in) stored transposed, in × out:
/// gemm's kernels then read it as it is, without packing a copy per call.
pub(super) struct Dense {
    pub(super) wt: Vec<f32>,
    pub(super) b: Vec<f32>,
}

impl Dense {
    pub(super) fn out(&self) -> usize {
        self.b.len()
    }

    /// wᵀ from column `from` on
    pub(super) fn cols(&self, from: usize) -> Mat<'_, f32> {
        Mat { data: &self.wt[from..], rs: self.out(), cs: 1 }
    }
}

/// A weight and a bias as the model stores them (layer norms, and k's
/// projection).
pub(super) struct Affine {
    pub(super) w: Vec<f32>,
    pub(super) b: Vec<f32>,
}

/// One SASRec block.
pub(super) struct Layer {
    pub(super) ln1: Affine,
    /// the q and v projections side by side (wᵀ is d × 2d): one product
    /// gives both
    pub(super) qv: Dense,
    /// k's projection as stored (w out × in): kᵀ = w·yᵀ is computed
    /// directly, the layout the attention scores' product reads fastest
    pub(super) k: Affine,
    pub(super) o: Dense,
    pub(super) ln2: Affine,
    pub(super) ff1: Dense,
    pub(super) ff2: Dense,
}

/// The encoder's weights.
pub(super) enum Weights {
    SasRec {
        /// max_len × d learned positions
        pos: Vec<f32>,
        layers: Vec<Layer>,
        ln_final: Affine,
    },
    Gru4Rec {
        /// x·W_ihᵀ + b, 3d gates (r, z, n)
        input: Dense,
        /// the hidden weights transposed (d × 3d): the step's product is then
        /// a sum of rows, which vectorises without horizontal sums
        hidden_t: Vec<f32>,
        hidden_b: Vec<f32>,
        /// max_len × d: row k is the state after k padding steps
        padded: Vec<f32>,
    },
}

impl Weights {
    /// Copies the encoder of a trained model (any dtype) as f32, with
    /// GRU4Rec's learned logit scale when it has one.
    pub(super) fn from_model(model: &Recommender) -> Result<(Self, Option<f32>)> {
        let config = &model.config;
        let (d, max_len) = (config.dim, config.max_len);
        let mut logit_scale = None;
        let weights = match &model.encoder {
            Encoder::SasRec { pos, blocks, ln_final } => {
                let heads = config.heads;
                if heads == 0 || d % heads != 0 {
                    candle_core::bail!("dim {d} is not divisible by heads {heads}");
                }
                let pos = values(pos, max_len * d, "pos")?;
                let mut layers = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.iter().enumerate() {
                    let name = |part: &str| format!("blocks.{i}.{part}");
                    let (q, k, v) = (
                        dense(&b.q, d, d, &name("q"))?,
                        dense(&b.k, d, d, &name("k"))?,
                        dense(&b.v, d, d, &name("v"))?,
                    );
                    // row i of wᵀ: q's and v's weights of input i, side by side
                    let mut wt = Vec::with_capacity(2 * d * d);
                    for i in 0..d {
                        wt.extend_from_slice(&q.wt[i * d..(i + 1) * d]);
                        wt.extend_from_slice(&v.wt[i * d..(i + 1) * d]);
                    }
                    let qv = Dense { wt, b: [q.b, v.b].concat() };
                    layers.push(Layer {
                        ln1: affine(&b.ln1, d, &name("ln1"))?,
                        qv,
                        k: Affine { w: transpose(&k.wt, d), b: k.b },
                        o: dense(&b.o, d, d, &name("o"))?,
                        ln2: affine(&b.ln2, d, &name("ln2"))?,
                        ff1: dense(&b.ff1, d, d, &name("ff1"))?,
                        ff2: dense(&b.ff2, d, d, &name("ff2"))?,
                    });
                }
                Weights::SasRec { pos, layers, ln_final: affine(ln_final, d, "ln_final")? }
            }
            Encoder::Gru4Rec { gru, logit_scale: scale } => {
                if let Some(s) = scale {
                    logit_scale = Some(values(s, 1, "logit_scale")?[0]);
                }
                let input = dense(&gru.input, 3 * d, d, "gru.input")?;
                let hidden = dense(&gru.hidden, 3 * d, d, "gru.hidden")?;
                let padded = padded_states(&input, &hidden, max_len);
                Weights::Gru4Rec { input, hidden_t: hidden.wt, hidden_b: hidden.b, padded }
            }
        };
        Ok((weights, logit_scale))
    }

    /// Bytes held by the weights.
    pub(super) fn memory_bytes(&self) -> usize {
        let dense = |x: &Dense| floats(&x.wt) + floats(&x.b);
        let norm = |x: &Affine| floats(&x.w) + floats(&x.b);
        match self {
            Weights::SasRec { pos, layers, ln_final } => {
                floats(pos)
                    + norm(ln_final)
                    + layers
                        .iter()
                        .map(|l| {
                            norm(&l.ln1)
                                + dense(&l.qv)
                                + norm(&l.k)
                                + dense(&l.o)
                                + norm(&l.ln2)
                                + dense(&l.ff1)
                                + dense(&l.ff2)
                                + std::mem::size_of::<Layer>()
                        })
                        .sum::<usize>()
            }
            Weights::Gru4Rec { input, hidden_t, hidden_b, padded } => {
                dense(input) + floats(hidden_t) + floats(hidden_b) + floats(padded)
            }
        }
    }
}

/// Bytes held by a vector of floats.
pub(super) fn floats(v: &Vec<f32>) -> usize {
    v.capacity() * std::mem::size_of::<f32>()
}

/// A parameter's values as f32, checked to hold `len` of them.
pub(super) fn values(v: &Var, len: usize, name: &str) -> Result<Vec<f32>> {
    let values = v.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if values.len() != len {
        candle_core::bail!("{name} has {} values, expected {len}", values.len());
    }
    Ok(values)
}

/// A linear layer's (w, b), w stored transposed.
fn dense((w, b): &(Var, Var), out: usize, inp: usize, name: &str) -> Result<Dense> {
    Ok(Dense { wt: transpose(&values(w, out * inp, name)?, inp), b: values(b, out, name)? })
}

/// A (w, b) pair of d values each.
fn affine((w, b): &(Var, Var), d: usize, name: &str) -> Result<Affine> {
    Ok(Affine { w: values(w, d, name)?, b: values(b, d, name)? })
}

/// The transpose of a matrix of d-wide rows.
pub(super) fn transpose(rows: &[f32], d: usize) -> Vec<f32> {
    let m = rows.len() / d;
    let mut t = vec![0.0; rows.len()];
    for (i, row) in rows.chunks_exact(d).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            t[k * m + i] = v;
        }
    }
    t
}

/// dst (m × out, row stride `rs`) = x (m × in) · wt (in × out), without the bias.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn product(dst: &mut [f32], rs: usize, m: usize, x: &[f32], inp: usize, wt: Mat<f32>, out: usize) {
    gemm(dst, rs, m, out, inp, Mat::rows(x, inp), wt, false);
}
