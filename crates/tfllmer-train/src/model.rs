//! Sequential recommenders (SASRec, GRU4Rec) with TF-LLMER's item
//! normalisation: the item table is L2-normalised in every forward pass,
//! both where items are looked up and where they are scored
//! (logits = <h, ê_i>), padding row 0 stays zero and is never scored.
//!
//! SASRec: pre-norm transformer blocks as in shared/reference/sasrec_ref.py,
//! x += drop(attn(LN(x))); x += drop(FFN(LN(x))), FFN = W2·drop(gelu(W1·x)),
//! causal self-attention, learned positions, a final LayerNorm.
//! GRU4Rec: one GRU layer over the (dropped-out) item vectors; with
//! normalised items its states are scaled by a learnable s (init 1/0.07),
//! since a tanh-bounded state cannot sharpen the logits on its own.
//!
//! candle's fused softmax / layer-norm kernels have no backward pass
//! (shared/CANDLE.md): layer norm is composite, softmax and the loss are our
//! own fused ops with a backward; the tests assert that every parameter
//! receives a gradient and check it against finite differences.

use candle_core::{DType, Device, IndexOp, Result, Tensor, Var};
use candle_nn::ops::layer_norm_slow;

use crate::softmax::softmax_last_dim;

use crate::rng::SplitMix64;

/// Additive mask value: large enough to zero a softmax weight, finite so
/// that fully masked rows cannot produce NaN.
const MASKED: f64 = -1e9;
const LN_EPS: f32 = 1e-5;

/// The sequence encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backbone {
    /// causal self-attention blocks (Kang & McAuley 2018)
    SasRec,
    /// one GRU layer (Hidasi et al. 2016); its output is bounded (tanh), so
    /// with normalised items the logits get a learnable scale (METHOD.md)
    Gru4Rec,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub backbone: Backbone,
    pub n_items: usize,
    pub dim: usize,
    pub max_len: usize,
    pub layers: usize,
    pub heads: usize,
    pub dropout: f64,
    /// TF-LLMER's item normalisation (false: the plain-SASRec ablation)
    pub normalize: bool,
    pub dtype: DType,
}

/// Initial logit scale of a bounded backbone with normalised items: 1/0.07.
const INITIAL_LOGIT_SCALE: f32 = 1.0 / 0.07;

struct Block {
    ln1: (Var, Var),
    q: (Var, Var),
    k: (Var, Var),
    v: (Var, Var),
    o: (Var, Var),
    ln2: (Var, Var),
    ff1: (Var, Var),
    ff2: (Var, Var),
}

/// A GRU layer with PyTorch's gate layout (r, z, n).
struct Gru {
    input: (Var, Var),
    hidden: (Var, Var),
}

enum Encoder {
    SasRec { pos: Var, blocks: Vec<Block>, ln_final: (Var, Var) },
    Gru4Rec { gru: Gru, logit_scale: Option<Var> },
}

/// A sequential recommender: an item table (normalised in every forward
/// pass when configured) and a sequence encoder.
pub struct Recommender {
    pub config: ModelConfig,
    /// (n_items + 1) × dim; row 0 is padding
    pub item: Var,
    encoder: Encoder,
}

/// Dropout with a mask drawn from our seeded generator (identity when `rng`
/// is None, i.e. in evaluation).
fn dropout(x: &Tensor, p: f64, rng: &mut Option<&mut SplitMix64>) -> Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => {
            let mask =
                Tensor::from_vec(rng.dropout_mask(x.elem_count(), p), x.shape(), x.device())?.to_dtype(x.dtype())?;
            x.mul(&mask)
        }
        _ => Ok(x.clone()),
    }
}

fn linear(x: &Tensor, (w, b): &(Var, Var)) -> Result<Tensor> {
    x.broadcast_matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())
}

fn layer_norm(x: &Tensor, (w, b): &(Var, Var)) -> Result<Tensor> {
    layer_norm_slow(x, w.as_tensor(), b.as_tensor(), LN_EPS)
}

impl Recommender {
    /// A new model. `init`, when given, holds the starting vectors of items
    /// 1..=n_items (row-major, n_items × dim, e.g. Rec-PCA output); otherwise
    /// item rows start N(0, 0.02²) like the other embeddings.
    pub fn new(config: ModelConfig, init: Option<&[f32]>, rng: &mut SplitMix64) -> Result<Self> {
        let (n, d, dt) = (config.n_items, config.dim, config.dtype);
        if config.backbone == Backbone::SasRec && (config.heads == 0 || d % config.heads != 0) {
            candle_core::bail!("dim {d} is not divisible by heads {}", config.heads);
        }
        let dev = Device::Cpu;
        let var = |values: Vec<f32>, shape: &[usize]| -> Result<Var> {
            Var::from_tensor(&Tensor::from_vec(values, shape, &dev)?.to_dtype(dt)?)
        };
        let mut item_values = vec![0.0f32; d];
        match init {
            Some(rows) if rows.len() == n * d => item_values.extend_from_slice(rows),
            Some(rows) => candle_core::bail!("init has {} values, expected {} × {}", rows.len(), n, d),
            None => item_values.extend(rng.normals(n * d, 0.02)),
        }
        let item = var(item_values, &[n + 1, d])?;
        // PyTorch's defaults: uniform(±1/sqrt(fan_in)) for weights and biases
        let dense = |out: usize, inp: usize, rng: &mut SplitMix64| -> Result<(Var, Var)> {
            let bound = 1.0 / (inp as f64).sqrt();
            Ok((
                var(rng.uniforms(out * inp, -bound, bound), &[out, inp])?,
                var(rng.uniforms(out, -bound, bound), &[out])?,
            ))
        };
        let encoder = match config.backbone {
            Backbone::SasRec => {
                let pos = var(rng.normals(config.max_len * d, 0.02), &[config.max_len, d])?;
                let mut blocks = Vec::with_capacity(config.layers);
                for _ in 0..config.layers {
                    let (q, k, v, o) = (dense(d, d, rng)?, dense(d, d, rng)?, dense(d, d, rng)?, dense(d, d, rng)?);
                    let (ff1, ff2) = (dense(d, d, rng)?, dense(d, d, rng)?);
                    let ln = || -> Result<(Var, Var)> { Ok((var(vec![1.0; d], &[d])?, var(vec![0.0; d], &[d])?)) };
                    blocks.push(Block { ln1: ln()?, q, k, v, o, ln2: ln()?, ff1, ff2 });
                }
                let ln_final = (var(vec![1.0; d], &[d])?, var(vec![0.0; d], &[d])?);
                Encoder::SasRec { pos, blocks, ln_final }
            }
            Backbone::Gru4Rec => {
                // PyTorch's GRU init: uniform(±1/sqrt(hidden)) everywhere
                let gru = Gru { input: dense(3 * d, d, rng)?, hidden: dense(3 * d, d, rng)? };
                let logit_scale = if config.normalize { Some(var(vec![INITIAL_LOGIT_SCALE], &[1])?) } else { None };
                Encoder::Gru4Rec { gru, logit_scale }
            }
        };
        Ok(Self { config, item, encoder })
    }

    /// Every trainable parameter with a stable name (the model file's keys).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut named = vec![("item".to_string(), self.item.clone())];
        let mut pair = |prefix: String, (w, b): &(Var, Var)| {
            named.push((format!("{prefix}.weight"), w.clone()));
            named.push((format!("{prefix}.bias"), b.clone()));
        };
        let mut extra = Vec::new();
        match &self.encoder {
            Encoder::SasRec { pos, blocks, ln_final } => {
                extra.push(("pos".to_string(), pos.clone()));
                for (i, b) in blocks.iter().enumerate() {
                    for (part, p) in [
                        ("ln1", &b.ln1),
                        ("q", &b.q),
                        ("k", &b.k),
                        ("v", &b.v),
                        ("o", &b.o),
                        ("ln2", &b.ln2),
                        ("ff1", &b.ff1),
                        ("ff2", &b.ff2),
                    ] {
                        pair(format!("blocks.{i}.{part}"), p);
                    }
                }
                pair("ln_final".to_string(), ln_final);
            }
            Encoder::Gru4Rec { gru, logit_scale } => {
                pair("gru.input".to_string(), &gru.input);
                pair("gru.hidden".to_string(), &gru.hidden);
                extra.extend(logit_scale.iter().map(|s| ("logit_scale".to_string(), s.clone())));
            }
        }
        named.extend(extra);
        named
    }

    /// Every trainable parameter.
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// The parameters as a safetensors file (the configuration is kept
    /// beside it, by the caller).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let named: Vec<(String, Tensor)> =
            self.named_vars().into_iter().map(|(name, v)| (name, v.as_tensor().clone())).collect();
        safetensors::serialize(named, None).map_err(|e| candle_core::Error::Msg(format!("saving the model: {e}")))
    }

    /// A model of `config` with the parameters of a safetensors file; every
    /// parameter must be present with its shape.
    pub fn from_safetensors(config: ModelConfig, bytes: &[u8]) -> Result<Self> {
        let model = Self::new(config, None, &mut SplitMix64::new(0))?;
        let mut stored = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        for (name, var) in model.named_vars() {
            let Some(t) = stored.remove(&name) else { candle_core::bail!("model file lacks {name}") };
            if t.shape() != var.shape() {
                candle_core::bail!("model file has {name} of shape {:?}, expected {:?}", t.shape(), var.shape());
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(model)
    }

    /// The item table as the model uses it: rows L2-normalised when
    /// `normalize`, row 0 (padding) zero either way.
    pub fn item_table(&self) -> Result<Tensor> {
        let w = self.item.as_tensor();
        let n1 = self.config.n_items + 1;
        let mut keep = vec![1.0f32; n1];
        keep[0] = 0.0;
        let keep = Tensor::from_vec(keep, (n1, 1), w.device())?.to_dtype(w.dtype())?;
        let w = if self.config.normalize {
            // sqrt(‖e‖² + 1e-24) = max(‖e‖, 1e-12) but for rows within 1e-12 of zero
            let norm = (w.sqr()?.sum_keepdim(1)? + 1e-24)?.sqrt()?;
            w.broadcast_div(&norm)?
        } else {
            w.clone()
        };
        w.broadcast_mul(&keep)
    }

    /// Hidden states (B × L × dim) for left-padded token sequences
    /// (B × L, u32, 0 = padding), and the item table used. `rng` turns on
    /// dropout (training).
    pub fn forward(&self, seq: &Tensor, mut rng: Option<&mut SplitMix64>) -> Result<(Tensor, Tensor)> {
        let (b, l) = seq.dims2()?;
        let d = self.config.dim;
        let table = self.item_table()?;
        let x = table.index_select(&seq.flatten_all()?, 0)?.reshape((b, l, d))?;
        let hidden = match &self.encoder {
            Encoder::SasRec { pos, blocks, ln_final } => {
                let x = x.broadcast_add(&pos.as_tensor().i(0..l)?)?;
                self.attend(seq, dropout(&x, self.config.dropout, &mut rng)?, blocks, ln_final, &mut rng)?
            }
            Encoder::Gru4Rec { gru, logit_scale } => {
                let h = gru_forward(gru, &dropout(&x, self.config.dropout, &mut rng)?)?;
                match logit_scale {
                    // scaling h scales every logit <h, ê_i>
                    Some(s) => h.broadcast_mul(s.as_tensor())?,
                    None => h,
                }
            }
        };
        Ok((hidden, table))
    }

    fn attend(
        &self,
        seq: &Tensor,
        mut x: Tensor,
        blocks: &[Block],
        ln_final: &(Var, Var),
        rng: &mut Option<&mut SplitMix64>,
    ) -> Result<Tensor> {
        let (b, l) = seq.dims2()?;
        let (d, h) = (self.config.dim, self.config.heads);
        let dh = d / h;
        let p = self.config.dropout;
        let mask = attention_mask(seq)?.to_dtype(x.dtype())?;
        let scale = 1.0 / (dh as f64).sqrt();
        for block in blocks {
            let y = layer_norm(&x, &block.ln1)?;
            let heads = |t: Tensor| -> Result<Tensor> { t.reshape((b, l, h, dh))?.transpose(1, 2)?.contiguous() };
            let q = heads(linear(&y, &block.q)?)?;
            let k = heads(linear(&y, &block.k)?)?;
            let v = heads(linear(&y, &block.v)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let att = dropout(&softmax_last_dim(&scores)?, p, rng)?;
            let ctx = att.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, l, d))?;
            x = (x + dropout(&linear(&ctx, &block.o)?, p, rng)?)?;
            let y = layer_norm(&x, &block.ln2)?;
            let f = dropout(&linear(&y, &block.ff1)?.gelu_erf()?, p, rng)?;
            x = (x + dropout(&linear(&f, &block.ff2)?, p, rng)?)?;
        }
        layer_norm(&x, ln_final)
    }

    /// Mean cross-entropy of next-item prediction at every non-padding
    /// position: `targets` (B × L, 0 = no target) against all items.
    pub fn loss(&self, seq: &Tensor, targets: &[u32], rng: Option<&mut SplitMix64>) -> Result<Tensor> {
        let (hidden, table) = self.forward(seq, rng)?;
        let d = self.config.dim;
        let positions: Vec<u32> = (0..targets.len() as u32).filter(|&p| targets[p as usize] > 0).collect();
        let labels: Vec<u32> = positions.iter().map(|&p| targets[p as usize] - 1).collect();
        let dev = hidden.device();
        let count = positions.len();
        let h = hidden.reshape(((), d))?.index_select(&Tensor::from_vec(positions, count, dev)?, 0)?;
        let logits = h.matmul(&table.i(1..)?.t()?)?;
        crate::loss::cross_entropy(&logits, &Tensor::from_vec(labels, count, dev)?)
    }

    /// Scores of every token (index 0 = padding, set very low) after each
    /// sequence's last position: B × (n_items + 1).
    pub fn score_last(&self, seq: &Tensor) -> Result<Tensor> {
        let (hidden, table) = self.forward(seq, None)?;
        let l = hidden.dim(1)?;
        hidden.i((.., l - 1, ..))?.contiguous()?.matmul(&table.t()?)
    }
}

/// σ(x) from composite ops (which all have a backward pass).
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Runs the GRU over B × L × d inputs from a zero state; returns every
/// step's state, B × L × d (PyTorch's equations and gate order r, z, n).
fn gru_forward(gru: &Gru, x: &Tensor) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let gi = linear(x, &gru.input)?; // B × L × 3d, all steps at once
    let mut h = Tensor::zeros((b, d), x.dtype(), x.device())?;
    let mut states = Vec::with_capacity(l);
    for t in 0..l {
        let gi_t = gi.i((.., t, ..))?;
        let gh = linear(&h, &gru.hidden)?;
        let r = sigmoid(&(gi_t.narrow(1, 0, d)? + gh.narrow(1, 0, d)?)?)?;
        let z = sigmoid(&(gi_t.narrow(1, d, d)? + gh.narrow(1, d, d)?)?)?;
        let n = (gi_t.narrow(1, 2 * d, d)? + r.mul(&gh.narrow(1, 2 * d, d)?)?)?.tanh()?;
        h = ((z.affine(-1.0, 1.0)?.mul(&n))? + z.mul(&h)?)?;
        states.push(h.unsqueeze(1)?);
    }
    Tensor::cat(&states, 1)
}

/// Additive attention mask, B × 1 × L × L: a position sees itself and the
/// non-padding positions before it. (Padding positions see only
/// themselves, which keeps every row finite.)
fn attention_mask(seq: &Tensor) -> Result<Tensor> {
    let (b, l) = seq.dims2()?;
    let tokens = seq.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
    let mut mask = vec![0.0f32; b * l * l];
    for r in 0..b {
        for i in 0..l {
            for j in 0..l {
                let visible = j == i || (j < i && tokens[r * l + j] != 0);
                if !visible {
                    mask[(r * l + i) * l + j] = MASKED as f32;
                }
            }
        }
    }
    Tensor::from_vec(mask, (b, 1, l, l), seq.device())
}

/// Left-pads (and left-truncates) sequences to `len` tokens: B × len u32.
pub fn left_pad(seqs: &[&[u32]], len: usize) -> Vec<u32> {
    let mut out = vec![0u32; seqs.len() * len];
    for (r, s) in seqs.iter().enumerate() {
        let tail = &s[s.len().saturating_sub(len)..];
        out[r * len + len - tail.len()..(r + 1) * len].copy_from_slice(tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n_items: usize, normalize: bool, dtype: DType) -> ModelConfig {
        ModelConfig {
            backbone: Backbone::SasRec,
            n_items,
            dim: 8,
            max_len: 6,
            layers: 2,
            heads: 2,
            dropout: 0.0,
            normalize,
            dtype,
        }
    }

    fn gru_config(n_items: usize, normalize: bool, dtype: DType) -> ModelConfig {
        ModelConfig { backbone: Backbone::Gru4Rec, ..config(n_items, normalize, dtype) }
    }

    fn batch(rows: &[&[u32]], len: usize) -> Tensor {
        Tensor::from_vec(left_pad(rows, len), (rows.len(), len), &Device::Cpu).unwrap()
    }

    #[test]
    fn left_pad_keeps_the_latest_items() {
        assert_eq!(left_pad(&[&[1, 2, 3, 4], &[5]], 3), vec![2, 3, 4, 0, 0, 5]);
    }

    #[test]
    fn shapes_and_padding_row() {
        let m = Recommender::new(config(10, true, DType::F32), None, &mut SplitMix64::new(1)).unwrap();
        let seq = batch(&[&[1, 2, 3], &[4]], 6);
        let (h, table) = m.forward(&seq, None).unwrap();
        assert_eq!(h.dims(), &[2, 6, 8]);
        assert_eq!(table.dims(), &[11, 8]);
        assert!(table.i(0).unwrap().to_vec1::<f32>().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(m.score_last(&seq).unwrap().dims(), &[2, 11]);
        assert!(h.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn normalised_table_rows_have_unit_length_and_raw_ones_do_not() {
        let init: Vec<f32> = (0..10 * 8).map(|i| (i % 7) as f32 - 2.5).collect();
        for normalize in [true, false] {
            let m = Recommender::new(config(10, normalize, DType::F32), Some(&init), &mut SplitMix64::new(2)).unwrap();
            let norms =
                m.item_table().unwrap().sqr().unwrap().sum(1).unwrap().sqrt().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(norms[0], 0.0);
            let unit = norms[1..].iter().all(|&n| (n - 1.0).abs() < 1e-5);
            assert_eq!(unit, normalize);
        }
    }

    #[test]
    fn positions_do_not_see_the_future() {
        let m = Recommender::new(config(10, true, DType::F32), None, &mut SplitMix64::new(3)).unwrap();
        let (a, _) = m.forward(&batch(&[&[1, 2, 3, 4, 5, 6]], 6), None).unwrap();
        let (b, _) = m.forward(&batch(&[&[1, 2, 3, 9, 8, 7]], 6), None).unwrap();
        let prefix = |t: &Tensor| t.i((0, 0..3, ..)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(prefix(&a), prefix(&b));
        let last = |t: &Tensor| t.i((0, 5, ..)).unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(last(&a), last(&b));
    }

    #[test]
    fn padding_does_not_change_real_positions() {
        let m = Recommender::new(config(10, true, DType::F32), None, &mut SplitMix64::new(4)).unwrap();
        // the same history with more or less left padding: only positions
        // (learned, absolute) differ, so compare a model whose positions are zero
        let Encoder::SasRec { pos, .. } = &m.encoder else { unreachable!("a SASRec model") };
        pos.set(&pos.as_tensor().zeros_like().unwrap()).unwrap();
        let (a, _) = m.forward(&batch(&[&[3, 4]], 6), None).unwrap();
        let (b, _) = m.forward(&batch(&[&[3, 4]], 4), None).unwrap();
        let last = |t: &Tensor, l: usize| t.i((0, l - 1, ..)).unwrap().to_vec1::<f32>().unwrap();
        for (x, y) in last(&a, 6).iter().zip(last(&b, 4)) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient_and_it_matches_finite_differences() {
        gradient_check(config(7, true, DType::F64));
        gradient_check(gru_config(7, true, DType::F64));
        gradient_check(gru_config(7, false, DType::F64));
    }

    fn gradient_check(cfg: ModelConfig) {
        let mut rng = SplitMix64::new(5);
        let m = Recommender::new(cfg, None, &mut rng).unwrap();
        let seq = batch(&[&[1, 2, 3, 4], &[5, 6]], 6);
        let targets = left_pad(&[&[2, 3, 4, 7], &[6, 1]], 6);
        let loss = m.loss(&seq, &targets, None).unwrap();
        let grads = loss.backward().unwrap();
        for (i, v) in m.vars().iter().enumerate() {
            assert!(grads.get(v).is_some(), "parameter {i} has no gradient");
        }
        // central differences on a few entries of a few parameters
        let eps = 1e-6;
        let vars = m.vars();
        for v in [&vars[0], &vars[vars.len() / 2], &vars[vars.len() - 2], vars.last().unwrap()] {
            let g = grads.get(v).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for idx in [0usize, base.len() / 2, base.len() - 1] {
                let at = |delta: f64| {
                    let mut p = base.clone();
                    p[idx] += delta;
                    v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap()).unwrap();
                    m.loss(&seq, &targets, None).unwrap().to_scalar::<f64>().unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap()).unwrap();
                assert!((numeric - g[idx]).abs() <= 1e-6 * (1.0 + numeric.abs()), "∂loss: {} vs {numeric}", g[idx]);
            }
        }
    }

    #[test]
    fn training_lowers_the_loss_and_is_reproducible() {
        training_run_check(config(12, true, DType::F32));
        training_run_check(gru_config(12, true, DType::F32));
    }

    #[test]
    fn a_saved_model_loads_back_exactly() {
        for cfg in [config(9, true, DType::F32), gru_config(9, true, DType::F32), gru_config(9, false, DType::F32)] {
            let m = Recommender::new(cfg.clone(), None, &mut SplitMix64::new(11)).unwrap();
            let bytes = m.to_safetensors().unwrap();
            let back = Recommender::from_safetensors(cfg.clone(), &bytes).unwrap();
            let seq = batch(&[&[1, 2, 3], &[9]], 6);
            let a = m.score_last(&seq).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = back.score_last(&seq).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b);
            // a file of another shape is refused
            let other = ModelConfig { dim: 4, heads: 1, ..cfg };
            assert!(Recommender::from_safetensors(other, &bytes).is_err());
            assert!(Recommender::from_safetensors(config(9, true, DType::F32), b"not a model").is_err());
        }
    }

    #[test]
    fn gru4rec_shapes_and_logit_scale() {
        for normalize in [true, false] {
            let m = Recommender::new(gru_config(10, normalize, DType::F32), None, &mut SplitMix64::new(6)).unwrap();
            let (h, _) = m.forward(&batch(&[&[1, 2, 3], &[4]], 6), None).unwrap();
            assert_eq!(h.dims(), &[2, 6, 8]);
            // 1 item table + 2 weight/bias pairs, + the scale when normalised
            assert_eq!(m.vars().len(), 5 + usize::from(normalize));
        }
    }

    fn training_run_check(base: ModelConfig) {
        let run = || {
            let mut rng = SplitMix64::new(9);
            let cfg = ModelConfig { dropout: 0.1, ..base.clone() };
            let m = Recommender::new(cfg, None, &mut rng).unwrap();
            let mut opt = <candle_nn::AdamW as candle_nn::Optimizer>::new(
                m.vars(),
                candle_nn::ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
            )
            .unwrap();
            // a deterministic successor pattern: item t is followed by t+1
            let rows: Vec<Vec<u32>> = (0..16).map(|s| (0..7).map(|k| 1 + (s + k) % 12).collect()).collect();
            let inputs: Vec<&[u32]> = rows.iter().map(|r| &r[..6]).collect();
            let outputs: Vec<&[u32]> = rows.iter().map(|r| &r[1..]).collect();
            let seq = Tensor::from_vec(left_pad(&inputs, 6), (16, 6), &Device::Cpu).unwrap();
            let targets = left_pad(&outputs, 6);
            let mut losses = Vec::new();
            for _ in 0..60 {
                let loss = m.loss(&seq, &targets, Some(&mut rng)).unwrap();
                losses.push(loss.to_scalar::<f32>().unwrap());
                candle_nn::Optimizer::backward_step(&mut opt, &loss).unwrap();
            }
            losses
        };
        let losses = run();
        assert!(losses[59] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[59]);
        assert_eq!(losses, run(), "the same seed must give the same run");
    }
}
